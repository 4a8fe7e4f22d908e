"""Training dynamics: the per-sample history (storage, bounds, resume, order) and the scores made from it."""

import csv
import io

import pytest
import torch

from lightning_featviz.analysis.dynamics import (
    SampleHistory,
    area_under_margin,
    dynamics_scores,
    dynamics_words,
    every_sample_words,
    fractional_ranks,
    given_label_margin,
    training_margins,
)
from lightning_featviz.analysis.epoch import label_issues_of
from lightning_featviz.analysis.history import DynamicsTracker, TrainingHistory
from lightning_featviz.analysis.knn import neighbour_stats
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.capture.bank import BankData

NAMES = ["cat", "dog", "bird"]


def one_hot_probabilities(predictions: list[int], sure: float = 0.8, classes: int = 3) -> torch.Tensor:
    """(B, classes) probabilities with ``sure`` on each row's predicted class, the rest shared."""
    rows = torch.full((len(predictions), classes), (1 - sure) / (classes - 1))
    rows[torch.arange(len(predictions)), torch.tensor(predictions)] = sure
    return rows


def filled_history(epochs: int, max_epochs: int = 20) -> SampleHistory:
    """Four samples (indices 10..13, labels 0, 1, 2, 0) over ``epochs`` epochs with changing values."""
    history = SampleHistory(3, max_epochs=max_epochs)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        probabilities = torch.rand(4, 3, generator=generator).softmax(dim=1)
        history.append(
            epoch,
            torch.tensor([10, 11, 12, 13]),
            torch.tensor([0, 1, 2, 0]),
            probabilities,
            neighbour_share=torch.rand(4, generator=generator),
            scores=torch.rand(4, generator=generator),
        )
    return history


def assert_same_history(a: SampleHistory, b: SampleHistory) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for key, value in left.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, right[key], rtol=0, atol=0, equal_nan=True, msg=key)
        else:
            assert value == right[key], key


def test_history_stores_float16_values_and_int16_predictions_by_sorted_index():
    history = SampleHistory(3)
    history.append(0, torch.tensor([7, 3]), torch.tensor([1, 0]), one_hot_probabilities([1, 2]))
    assert history.indices.tolist() == [3, 7]
    for name in ("label_probability", "margin", "neighbour_share", "score"):
        assert history.values[name].dtype == torch.float16
        assert history.values[name].shape == (1, 2)
    assert history.prediction.dtype == torch.int16
    assert history.prediction[0].tolist() == [2, 1]
    # index 3: label 0 at 0.1, the largest other 0.8 -> margin -0.7; index 7: label 1 at 0.8 -> +0.7
    assert history.field("label_probability")[0].tolist() == pytest.approx([0.1, 0.8], abs=1e-3)
    assert history.field("margin")[0].tolist() == pytest.approx([-0.7, 0.7], abs=1e-3)
    assert bool(history.field("neighbour_share").isnan().all())  # not given: NaN, not 0


def test_scores_keep_their_order_just_below_one_where_float16_would_tie_them():
    scores = torch.tensor([0.99900, 0.99925, 0.99950, 0.99975])
    assert len(set(scores.half().tolist())) < 4  # float16 itself cannot tell them apart
    history = SampleHistory(3)
    history.append(0, torch.arange(4), torch.zeros(4, dtype=torch.long), one_hot_probabilities([0] * 4), None, scores)
    stored = history.field("score")[0]
    assert stored.argsort().tolist() == [0, 1, 2, 3]
    assert stored.tolist() == pytest.approx(scores.tolist(), abs=2e-5)


def test_a_score_a_rounding_step_above_one_is_stored_as_the_top_not_as_unseen():
    # The single-epoch score is a float32 sum of the other classes' mass: it can exceed 1 by one step.
    scores = torch.tensor([1.0 + 1.2e-7, 0.5])
    history = SampleHistory(3)
    history.append(0, torch.arange(2), torch.zeros(2, dtype=torch.long), one_hot_probabilities([0, 0]), None, scores)
    stored = history.field("score")[0]
    assert bool(stored.isfinite().all())
    assert stored[0] > 0.999 and stored[0] > stored[1]


def test_history_keeps_the_last_max_epochs_and_its_memory_stops_growing():
    history = filled_history(5, max_epochs=3)
    size_at_cap = history.nbytes
    for epoch in range(5, 40):
        history.append(
            epoch, torch.tensor([10, 11, 12, 13]), torch.tensor([0, 1, 2, 0]), one_hot_probabilities([0] * 4)
        )
    assert history.epochs == [37, 38, 39]
    assert history.values["score"].shape == (3, 4)
    assert history.nbytes == size_at_cap
    # 4 float16 values and one int16 prediction per sample per epoch, plus a fixed amount per sample (the totals:
    # three float64)
    assert history.nbytes == 3 * 4 * (4 * 2 + 2) + 4 * (8 + 8 + 2 + 4 + 2 + 4 + 24)


def test_unstable_names_the_two_most_frequent_predictions_and_of_two_as_frequent_the_later():
    history, names = SampleHistory(4), ["a", "b", "c", "d"]
    one, label = torch.tensor([7]), torch.tensor([0])
    for epoch, predicted in enumerate([1, 0, 2]):  # each once: the two predicted last
        history.append(epoch, one, label, one_hot_probabilities([predicted], classes=4))
    assert dynamics_words(history, 0, names) == "unstable: flips between c and a"
    for epoch, predicted in enumerate([1, 3, 1, 0, 2], start=3):  # b three times, then the later of a, c, d
        history.append(epoch, one, label, one_hot_probabilities([predicted], classes=4))
    assert dynamics_words(history, 0, names) == "unstable: flips between b and c"


def test_an_epoch_appended_again_takes_its_streak_step_again_from_before_that_epoch_also_after_a_resume():
    # A second `validate` at the same epoch replaces the epoch's row; its streak step must not count the first one.
    history, names = SampleHistory(3), ["a", "b", "c"]
    one, label = torch.tensor([7]), torch.tensor([0])
    for epoch in range(4):
        history.append(epoch, one, label, one_hot_probabilities([1]))
    history.append(4, one, label, one_hot_probabilities([2]))
    assert dynamics_words(history, 0, names) == "predicted as c since epoch 4"
    resumed = SampleHistory(3)
    resumed.load_state_dict(history.state_dict())
    for kept in (history, resumed):
        kept.append(4, one, label, one_hot_probabilities([1]))  # the same epoch again, predicted as before it
        assert kept.epochs == [0, 1, 2, 3, 4]
        assert dynamics_words(kept, 0, names) == "consistently predicted as b since epoch 0"
        assert int(kept.streak_start[0]) == 0 and kept.prediction[:, 0].tolist() == [1, 1, 1, 1, 1]
        # the totals count epoch 4 once, with its second probability of the label (0.1, as the first four's)
        confidence, variability, seen = kept.cartography()
        assert int(seen[0]) == 5 and confidence[0].item() == pytest.approx(0.1, abs=1e-3)
        assert variability[0].item() == pytest.approx(0.0, abs=1e-3)


def test_a_streak_start_survives_the_epoch_cap():
    history = SampleHistory(3, max_epochs=2)
    for epoch in range(6):
        history.append(epoch, torch.tensor([0]), torch.tensor([0]), one_hot_probabilities([1 if epoch >= 1 else 0]))
    assert history.epochs == [4, 5]
    assert dynamics_words(history, 0, NAMES, min_epochs=2) == "consistently predicted as dog since epoch 1"


def test_missing_samples_are_nan_and_skipped_by_the_scores():
    history = SampleHistory(3)
    everyone = torch.tensor([0, 1, 2])
    history.append(0, everyone, torch.tensor([0, 1, 2]), one_hot_probabilities([0, 1, 2]), scores=torch.ones(3) * 0.2)
    history.append(1, torch.tensor([0, 2]), torch.tensor([0, 2]), one_hot_probabilities([0, 2]), scores=torch.ones(2))
    history.append(2, torch.tensor([5]), torch.tensor([1]), one_hot_probabilities([1]), scores=torch.ones(1) * 0.5)
    assert history.indices.tolist() == [0, 1, 2, 5]  # index 5 joined late: NaN before
    score = history.field("score")
    assert bool(score[1, 1].isnan()) and bool(score[:2, 3].isnan().all())
    assert history.prediction[1].tolist() == [0, -1, 2, -1]
    # 3 epochs: the mean of the last 2; sample 1 was seen in neither -> NaN; sample 5 only in epoch 2; each
    # times 1 - its mean label probability over the epochs it was seen (0.8 each time)
    dynamics = history.dynamics_scores()
    assert dynamics[0].item() == pytest.approx(1.0 * 0.2, abs=1e-3)
    assert bool(dynamics[1].isnan())
    assert dynamics[3].item() == pytest.approx(0.5 * 0.2, abs=1e-3)


def test_a_fixed_set_ignores_other_indices_and_nan_rows_count_as_unseen():
    history = SampleHistory(3, keep=torch.tensor([4, 2]))
    probabilities = one_hot_probabilities([0, 1, 2])
    probabilities[1] = float("nan")
    history.append(0, torch.tensor([2, 4, 9]), torch.tensor([0, 1, 2]), probabilities)
    assert history.indices.tolist() == [2, 4]
    assert history.prediction[0].tolist() == [0, -1]


def test_state_dict_round_trips_through_torch_save_and_resuming_equals_not_stopping():
    straight = filled_history(6)
    interrupted = filled_history(3)
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    resumed = SampleHistory(3)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert_same_history(resumed, interrupted)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # replay the random stream of filled_history's first three epochs
        torch.rand(4, 3, generator=generator), torch.rand(4, generator=generator), torch.rand(4, generator=generator)
    for epoch in range(3, 6):
        probabilities = torch.rand(4, 3, generator=generator).softmax(dim=1)
        share, scores = torch.rand(4, generator=generator), torch.rand(4, generator=generator)
        resumed.append(epoch, torch.tensor([10, 11, 12, 13]), torch.tensor([0, 1, 2, 0]), probabilities, share, scores)
    assert_same_history(resumed, straight)


def test_load_state_dict_refuses_another_class_count_with_the_message_template():
    with pytest.raises(ValueError, match=r"Expected `the saved history's num_classes` to be 5, but got 3\."):
        SampleHistory(5).load_state_dict(filled_history(2).state_dict())


def test_bad_input_fails_early_with_the_message_template():
    history = SampleHistory(3)
    with pytest.raises(ValueError, match=r"Expected `probabilities` to be \(2, 3\), but got \(2, 4\)\."):
        history.append(0, torch.arange(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 4))
    history.append(3, torch.arange(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match=r"Expected `epoch` to be > \[3\], but got 2\."):
        history.append(2, torch.arange(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match=r"Expected `max_epochs` to be at least 1, but got 0\. Hint:"):
        SampleHistory(3, max_epochs=0)


def test_a_gathered_bank_in_any_order_with_padding_repeats_gives_the_one_process_history():
    """DDP: rank 0 appends the gathered bank, rows interleaved by rank and padded with repeats."""
    indices = torch.arange(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    probabilities = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)).softmax(dim=1)
    scores = torch.linspace(0.1, 0.9, 6)
    one = SampleHistory(3)
    one.append(0, indices, labels, probabilities, scores=scores)
    gathered = torch.tensor([0, 2, 4, 1, 3, 5, 0])  # rank 0 holds even rows, rank 1 odd ones; row 0 repeated
    two = SampleHistory(3)
    two.append(0, gathered, labels[gathered], probabilities[gathered], scores=scores[gathered])
    assert_same_history(one, two)


def test_dynamics_score_is_the_single_epoch_score_with_one_epoch_and_the_last_half_mean_after():
    single = torch.tensor([[0.3, 0.9, 0.1]])
    assert torch.equal(dynamics_scores(single), single[0])
    scores = torch.tensor([[0.9, 0.0, 0.5], [0.9, 0.0, 0.5], [0.2, 0.4, 0.6], [0.4, 0.8, float("nan")]])
    # 4 epochs: the mean of the last 2, NaN epochs skipped
    torch.testing.assert_close(dynamics_scores(scores), torch.tensor([0.3, 0.6, 0.6]))
    five = torch.cat([scores, torch.tensor([[0.0, 0.0, 0.0]])])  # 5 epochs: the last 3
    torch.testing.assert_close(dynamics_scores(five), torch.tensor([0.2, 0.4, 0.3]))


def test_dynamics_score_is_the_last_half_mean_times_one_minus_the_mean_label_probability():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.5, 0.5, 0.5], [0.7, 0.3, 0.5]])  # (E=3, N=3)
    mean_probability = torch.tensor([0.2, 0.5, float("nan")])
    got = dynamics_scores(scores, mean_label_probability=mean_probability)
    # last half: epochs 1 and 2; never seen -> factor 1
    expected = torch.tensor([0.6 * (1 - 0.2), 0.4 * (1 - 0.5), 0.5 * 1.0])
    torch.testing.assert_close(got, expected)
    # one epoch: the single-epoch score unchanged
    assert torch.equal(dynamics_scores(scores[:1], mean_label_probability=mean_probability), scores[0])
    with pytest.raises(ValueError, match=r"Expected `mean_label_probability` to be \(3,\), but got \(2,\)\."):
        dynamics_scores(scores, mean_label_probability=mean_probability[:2])


def test_the_history_scores_with_the_mean_label_probability_of_every_epoch_also_those_dropped():
    # Two epochs kept of four: the scores' mean is the kept epochs' last half (epoch 3), the label probability's
    # mean is over all four (0.1, 0.3, 0.5, 0.7 -> 0.4), dropped epochs included.
    history = SampleHistory(3, max_epochs=2)
    for epoch, probability in enumerate([0.1, 0.3, 0.5, 0.7]):
        probabilities = torch.tensor([[probability, 1 - probability, 0.0]])
        history.append(epoch, torch.tensor([5]), torch.tensor([0]), probabilities, scores=torch.tensor([0.2 * epoch]))
    assert history.epochs == [2, 3] and history.first_epoch == 0
    assert history.dynamics_scores().item() == pytest.approx(0.6 * (1 - 0.4), abs=1e-3)


def _epoch_results(reference: bool) -> EpochResults:
    """An epoch of 60 kept validation samples (three noisy clusters, three labels swapped, random softmax) in
    layer ``x``, searched among themselves with the epoch's one wide search, or among 90 training samples."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(60) % 3
    vectors = torch.nn.functional.one_hot(labels, 3).float() * 2 + torch.randn(60, 3, generator=generator)
    labels[:3] = (labels[:3] + 1) % 3
    probabilities = torch.rand(60, 3, generator=generator).softmax(dim=1)
    bank = BankData(torch.arange(100, 160), labels, probabilities.argmax(dim=1), probabilities.amax(dim=1),
                    {"x": vectors}, torch.zeros(60, 0), probabilities)  # fmt: skip
    if not reference:
        return EpochResults(bank, bank, {"x": neighbour_stats(vectors, labels, 5, 3, search_k=20)}, NAMES, 5, epoch=0)
    train_labels = torch.arange(90) % 3
    train_vectors = torch.nn.functional.one_hot(train_labels, 3).float() * 2 + torch.randn(90, 3, generator=generator)
    searched = BankData(torch.arange(90), train_labels, train_labels, torch.ones(90), {"x": train_vectors},
                        torch.zeros(90, 0))  # fmt: skip
    stats = {"x": neighbour_stats(vectors, labels, 5, 3, reference=train_vectors, reference_labels=train_labels)}
    return EpochResults(bank, searched, stats, NAMES, 5, epoch=0)


@pytest.mark.parametrize("reference", [False, True], ids=["among-themselves", "among-the-training-reference"])
def test_the_history_records_each_epochs_list_score_with_one_epoch_the_dynamics_score_is_the_lists(reference):
    # Since issue 25's third round the history's options are the list's: one score per epoch, not two. The
    # tracker's epoch against the list the report job makes of the same epoch (label_issues_of).
    results = _epoch_results(reference)
    listed = label_issues_of(results, "x", lambda *warning: None).validation
    dynamics = DynamicsTracker().update(results, "x", lambda *warning: None)
    assert dynamics is not None and dynamics.history.indices.tolist() == results.bank.indices.tolist()
    assert listed.scores.max() > 0.5  # the swapped labels: scores a different weight would move
    recorded = dynamics.history.field("score")[0]  # float16 log-odds
    torch.testing.assert_close(recorded, listed.scores, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(dynamics.history.field("neighbour_share")[0], listed.neighbour_share, atol=1e-3, rtol=0)
    torch.testing.assert_close(dynamics.scores, listed.scores, atol=2e-3, rtol=2e-3)


def test_aum_ranks_the_sample_whose_label_the_network_fits_only_by_memorising_first():
    """Three samples over six epochs of training batches: two clean ones learnt early, one flipped label
    that the network predicts as its true class until it memorises the wrong label in the last epochs."""
    labels = torch.tensor([0, 1, 1])  # sample 2 is truly class 0, labelled 1
    epochs = []
    for epoch in range(6):
        clean = 0.5 + epoch  # the given class's lead grows
        memorised = -3.0 + 1.2 * epoch  # behind until epoch 3, ahead after
        logits = torch.tensor([[clean, 0.0, 0.0], [0.0, clean, 0.0], [0.0, memorised, -5.0]])
        order = torch.tensor([2, 0, 1, 2])  # shuffled, sample 2 seen twice in the epoch
        epochs.append((order, labels[order], logits[order]))
    margins = training_margins(epochs, num_samples=3)
    assert margins.shape == (6, 3)
    assert margins[0].tolist() == pytest.approx([0.5, 0.5, -3.0])
    aum = area_under_margin(margins)
    assert aum.argmin().item() == 2
    assert aum[2].item() == pytest.approx(sum(-3.0 + 1.2 * e for e in range(6)) / 6)
    # and through the combined score: first of the three, with equal single-epoch scores
    combined = dynamics_scores(torch.full((6, 3), 0.5), margins)
    assert combined.argmax().item() == 2


def test_aum_ignores_epochs_where_a_sample_was_not_in_any_batch():
    margins = training_margins([(torch.tensor([0]), torch.tensor([0]), torch.tensor([[2.0, 0.0]]))] * 2, 2)
    assert bool(margins[:, 1].isnan().all())
    aum = area_under_margin(margins)
    assert aum[0].item() == 2.0 and bool(aum[1].isnan())
    # without margins a sample keeps its score's rank
    combined = dynamics_scores(torch.tensor([[0.1, 0.9], [0.1, 0.9]]), margins)
    assert combined[1].item() == 1.0


def test_given_label_margin_and_fractional_ranks_on_hand_computed_cases():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    assert given_label_margin(logits, torch.tensor([0, 2])).tolist() == [1.0, -2.0]
    ranks = fractional_ranks(torch.tensor([0.5, 0.1, 0.5, float("nan"), 0.9]))
    assert ranks[:3].tolist() == pytest.approx([0.5, 0.0, 0.5]) and ranks[4].item() == 1.0
    assert bool(ranks[3].isnan())


def test_words_say_what_the_predictions_did():
    history = SampleHistory(3)
    runs = {0: [0, 0, 0, 0, 0], 1: [1, 1, 0, 0, 0], 2: [2, 0, 2, 0, 2], 3: [2, 1, 1, 1, 1]}
    labels = torch.tensor([0, 1, 2, 2])
    for epoch in range(5):
        predictions = [runs[row][epoch] for row in range(4)]
        history.append(epoch, torch.arange(4), labels, one_hot_probabilities(predictions))
    assert dynamics_words(history, 0, NAMES) == "learnt: predicted as its label since epoch 0"
    assert dynamics_words(history, 1, NAMES) == "consistently predicted as cat since epoch 2"
    assert dynamics_words(history, 2, NAMES) == "unstable: flips between bird and cat"
    assert dynamics_words(history, 3, NAMES) == "consistently predicted as dog since epoch 1"
    single = SampleHistory(3)
    single.append(0, torch.arange(1), torch.tensor([0]), one_hot_probabilities([1]))
    assert dynamics_words(single, 0, NAMES) == "one epoch seen"
    dropped = SampleHistory(3, max_epochs=1)
    dropped.append(0, torch.tensor([0, 1]), torch.tensor([0, 1]), one_hot_probabilities([0, 1]))
    dropped.append(1, torch.tensor([1]), torch.tensor([1]), one_hot_probabilities([1]))
    assert dynamics_words(dropped, 0, NAMES) == "not seen in the kept epochs"


def test_a_streak_counts_only_the_epochs_a_sample_was_seen():
    # Sample 0 (a cat) is predicted as a dog at epoch 0 and not seen after (NaN logits): one epoch seen, not
    # "consistently" a dog over three; sample 1 is seen at epochs 0, 2 and 3, a dog each time: three epochs.
    history = SampleHistory(3)
    for epoch in range(4):
        probabilities = one_hot_probabilities([1, 1])
        probabilities[0] = float("nan") if epoch > 0 else probabilities[0]
        probabilities[1] = float("nan") if epoch == 1 else probabilities[1]
        history.append(epoch, torch.arange(2), torch.tensor([0, 0]), probabilities)
    assert history.prediction[:, 0].tolist() == [1, -1, -1, -1] and history.prediction[:, 1].tolist() == [1, -1, 1, 1]
    assert dynamics_words(history, 0, NAMES) == "one epoch seen"
    assert dynamics_words(history, 1, NAMES) == "consistently predicted as dog since epoch 0"


def test_cartography_is_the_mean_and_standard_deviation_over_every_epoch_a_sample_was_seen_kept_or_dropped():
    # Sample 0 seen at epochs 0 and 1 (0.2, 0.4), sample 1 at all three (0.9), sample 2 only at epoch 2 (0.5),
    # sample 3 never; one epoch kept, so epochs 0 and 1 are dropped from the rows but not from the totals.
    rows = [
        [0.2, 0.9, float("nan"), float("nan")],
        [0.4, 0.9, float("nan"), float("nan")],
        [float("nan"), 0.9, 0.5, float("nan")],
    ]
    history = SampleHistory(2, max_epochs=1, keep=torch.arange(4))
    for epoch, row in enumerate(rows):
        given = torch.tensor(row)
        history.append(epoch, torch.arange(4), torch.zeros(4, dtype=torch.long), torch.stack([given, 1 - given], 1))
    confidence, variability, seen = history.cartography()
    torch.testing.assert_close(confidence[:3], torch.tensor([0.3, 0.9, 0.5]), atol=1e-3, rtol=0)
    torch.testing.assert_close(variability[:3], torch.tensor([0.1, 0.0, 0.0]), atol=1e-3, rtol=0)
    assert seen.tolist() == [2, 3, 1, 0] and bool(confidence[3].isnan()) and bool(variability[3].isnan())


def test_a_sample_whose_label_probability_never_changes_has_no_spread_after_a_hundred_epochs():
    # Why: float32 sums of squares gave it a standard deviation of 7e-4 after 50 epochs and 1e-3 after 100.
    history = SampleHistory(2, max_epochs=20, keep=torch.arange(3))
    given = torch.tensor([0.3, 0.7123, 0.95])
    for epoch in range(100):
        history.append(epoch, torch.arange(3), torch.zeros(3, dtype=torch.long), torch.stack([given, 1 - given], 1))
    confidence, variability, seen = history.cartography()
    assert variability.tolist() == [0.0, 0.0, 0.0] and seen.tolist() == [100, 100, 100]
    torch.testing.assert_close(confidence, given.half().float())


def test_a_history_saved_before_the_totals_were_kept_loads_with_the_totals_of_its_kept_epochs():
    history = filled_history(4)
    state = history.state_dict()
    del state["totals"], state["first_epoch"]
    loaded = SampleHistory(3)
    loaded.load_state_dict(state)
    assert_same_history(loaded, history)
    # Two of four epochs kept: the totals and the first epoch are those of the two the state holds.
    capped = filled_history(4, max_epochs=2)
    state = capped.state_dict()
    del state["totals"], state["first_epoch"]
    loaded = SampleHistory(3, max_epochs=2)
    loaded.load_state_dict(state)
    assert capped.first_epoch == 0 and loaded.first_epoch == 2 and loaded.epochs == [2, 3]
    confidence, variability, seen = loaded.cartography()
    kept = capped.field("label_probability")  # (2, 4): epochs 2 and 3
    assert seen.tolist() == [2, 2, 2, 2]
    torch.testing.assert_close(confidence, kept.mean(dim=0))
    torch.testing.assert_close(variability, kept.std(dim=0, unbiased=False), atol=1e-3, rtol=0)
    assert not torch.allclose(confidence, capped.cartography()[0])  # the dropped epochs are not in them


def test_training_history_ranks_by_the_mean_margin_of_the_epochs_each_sample_was_seen():
    history = TrainingHistory()
    # epoch 0: sample 7 twice (its mean margin counts), sample 3 once; epoch 1: samples 3 and 5
    history.append(0, {"indices": torch.tensor([7, 3, 7]), "labels": torch.tensor([1, 0, 1]),
                       "margins": torch.tensor([-1.0, 2.0, -3.0])})  # fmt: skip
    history.append(
        1, {"indices": torch.tensor([3, 5]), "labels": torch.tensor([0, 2]), "margins": torch.tensor([4.0, 1.0])}
    )
    indices, aum, seen, last = history.ranking()
    assert indices.tolist() == [7, 5, 3] and aum.tolist() == [-2.0, 1.0, 3.0]  # lowest AUM first
    assert seen.tolist() == [1, 1, 2] and last.tolist() == [-2.0, 1.0, 4.0]
    rows = list(history.rows(["a", "b", "c"]))
    assert [(r["rank"], r["index"], r["given_label"]) for r in rows] == [(1, 7, "b"), (2, 5, "c"), (3, 3, "a")]
    resumed = TrainingHistory()
    resumed.load_state_dict(torch.load(_saved(history.state_dict()), weights_only=True))
    assert list(resumed.rows(["a", "b", "c"])) == rows


def _saved(state) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_a_fit_in_known_order_writes_the_training_samples_by_aum_and_a_shuffled_one_warns_once(tmp_path, small_data):
    from conftest import TinyNet, tiny_trainer
    from torch.utils.data import DataLoader

    from lightning_featviz import FeatureVisualizer, MapOptions, WrongClusterOptions
    from lightning_featviz.demo.model import ClassificationData

    class InOrder(ClassificationData):
        def train_dataloader(self):
            return DataLoader(self.train, batch_size=32)

    def fit(root, data):
        visualizer = FeatureVisualizer(
            ["pool"], overhead=None, k=5, max_samples=40, maps=MapOptions(every_n_epochs=None), projector=False,
            wrong_cluster=WrongClusterOptions(training_margins=True),
        )  # fmt: skip
        tiny_trainer(root, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
        return root / "featviz_label_issues" / "train_aum.csv"  # the run's folder: the log dir

    in_order = InOrder(small_data.train, small_data.val, small_data.classes, batch_size=32)
    path = fit(tmp_path / "in_order", in_order)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(row["index"]) for row in rows) == list(range(128))  # 4 batches of 32, in order
    assert all(row["epochs_seen"] == "2" for row in rows)
    aum = [float(row["aum"]) for row in rows]
    assert aum == sorted(aum) and len(set(aum)) > 100  # lowest first, real margins
    with pytest.warns(UserWarning, match="cannot tell which dataset samples a training batch holds"):
        shuffled = fit(tmp_path / "shuffled", small_data)
    assert not shuffled.exists()


def reference_words(history: SampleHistory, row: int, class_names: list[str], min_epochs: int = 3) -> str:
    """The trajectory words' rules, one sample at a time in plain Python: the reference for the tensor version."""
    every = history.prediction[:, row].tolist()
    predictions = [p for p in every if p >= 0]
    if not predictions:
        return "not seen in the kept epochs"
    label, current, since = int(history.labels[row]), int(history.streak_class[row]), int(history.streak_start[row])
    streak = sum(1 for e, p in zip(history.epochs, every, strict=True) if e >= since and p >= 0)
    flips = sum(1 for a, b in zip(predictions[:-1], predictions[1:], strict=True) if a != b)
    if current != label and streak >= min_epochs:
        return f"consistently predicted as {class_names[current]} since epoch {since}"
    if flips >= 2:
        last = {p: i for i, p in enumerate(predictions)}
        first, second = sorted(set(predictions), key=lambda p: (predictions.count(p), last[p]), reverse=True)[:2]
        return f"unstable: flips between {class_names[first]} and {class_names[second]}"
    if len(predictions) == 1:
        return "one epoch seen"
    if current == label:
        return f"learnt: predicted as its label since epoch {since}"
    return f"predicted as {class_names[current]} since epoch {since}"


def test_every_samples_words_follow_the_rules_said_one_sample_at_a_time():
    """``every_sample_words`` (tensor work) says what the plain rules say of each sample: learnt, consistently
    another class, unstable (ties included), unseen some epochs, seen once, never seen."""
    torch.manual_seed(0)
    s, c = 300, 4
    history = SampleHistory(c, keep=torch.arange(s + 1))  # the last one never seen
    labels, learnt, other = torch.randint(0, c, (s,)), torch.randint(0, 5, (s,)), torch.randint(0, c, (s,))
    for epoch in range(6):
        target = torch.where(torch.arange(s) % 3 == 0, other, torch.where(learnt <= epoch, labels, other))
        target[torch.arange(s) % 7 == 0] = torch.randint(0, c, (len(range(0, s, 7)),))  # unstable
        late = torch.arange(s) % 17 == 5  # its label, then another class for the last two epochs
        target[late] = labels[late] if epoch < 4 else (labels[late] + 1) % c
        probabilities = torch.softmax(torch.randn(s, c) + 5 * torch.nn.functional.one_hot(target, c), dim=1)
        probabilities[torch.arange(s) % 11 == epoch] = float("nan")  # not seen that epoch
        if epoch:
            probabilities[torch.arange(s) % 13 == 0] = float("nan")  # seen once, at epoch 0
        history.append(epoch, torch.arange(s), labels, probabilities)
    names = ["a", "b", "c", "d"]
    said = every_sample_words(history, names)
    assert said == [reference_words(history, row, names) for row in range(s + 1)]
    assert [dynamics_words(history, row, names) for row in range(s + 1)] == said
    kinds = {w.split(" ")[0] for w in said}
    assert {"unstable:", "consistently", "learnt:", "one", "not", "predicted"} <= kinds
