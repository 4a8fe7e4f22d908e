import pytest
import torch

from lightning_featviz.capture.bank import (
    Choice,
    FeatureBank,
    bank_bytes,
    sample_priorities,
    select_subset,
    stratified_choice,
    to_thumbnails,
)


def test_select_subset_is_deterministic_sorted_bounded_and_keeps_required_indices():
    state = torch.get_rng_state()
    first = select_subset(1000, 50, seed=3, required=[999, 7])
    assert torch.equal(first, select_subset(1000, 50, seed=3, required=[7, 999]))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert len(first) == 50 and len(first.unique()) == 50
    assert torch.equal(first, first.sort().values)
    assert {7, 999} <= set(first.tolist())
    assert not torch.equal(first, select_subset(1000, 50, seed=4))
    assert select_subset(20, 50, seed=0).tolist() == list(range(20))


def _add(bank, indices, labels=None):
    indices = torch.tensor(indices)
    n = len(indices)
    bank.add(
        indices,
        indices % 3 if labels is None else torch.as_tensor(labels),
        indices % 2,
        indices.float() / 10,
        {"layer": indices[:, None].float().repeat(1, 2)},
        torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
    )


def test_feature_bank_keeps_every_sample_of_a_small_set_sorted_and_drops_repeated_indices():
    bank = FeatureBank(num_items=5, choice=Choice(max_samples=10))
    _add(bank, [8, 0, 1, 2])
    _add(bank, [4, 1, 8])  # 1 and 8 repeated, as a distributed sampler pads
    data = bank.finalize()
    assert data.indices.tolist() == [0, 1, 2, 4, 8]
    assert data.labels.tolist() == [0, 1, 2, 1, 2]
    assert data.confidences.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8])
    assert data.vectors["layer"][:, 0].tolist() == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert data.thumbnails.shape == (5, 3, 4, 4)
    assert data.rows_of([8, 1]).tolist() == [4, 1]
    assert FeatureBank(num_items=1, choice=Choice(1)).finalize() is None


def test_a_layer_whose_rows_change_shape_is_refused_naming_both_shapes():
    bank = FeatureBank(num_items=10, choice=Choice(max_samples=10))
    _add(bank, [0, 1])
    assert bank.width("layer") == (2,)
    with pytest.raises(ValueError, match=r"'vec/layer' rows to have shape \(2,\), but got \(3,\)"):
        bank.add(
            torch.tensor([2]),
            torch.tensor([0]),
            torch.tensor([0]),
            torch.tensor([0.0]),
            {"layer": torch.zeros(1, 3)},
            torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
        )


def _reference_choice(labels, seed, max_samples, floor):
    """The stratified choice written out per class by hand, from the priorities of every index."""
    priorities = sample_priorities(torch.arange(len(labels)), seed).tolist()
    classes = sorted(set(labels))
    per_class = min(floor, max_samples // len(classes))
    chosen = set()
    for c in classes:
        members = sorted((p, i) for i, (p, label) in enumerate(zip(priorities, labels, strict=True)) if label == c)
        chosen |= {i for _, i in members[:per_class]}
    rest = sorted((p, i) for i, p in enumerate(priorities) if i not in chosen)
    chosen |= {i for _, i in rest[: max_samples - len(chosen)]}
    return sorted(chosen)


@pytest.mark.parametrize("order", ["sequential", "shuffled"])
def test_the_bank_keeps_the_stratified_choice_of_the_whole_epoch_within_bounded_memory(order):
    # 3,000 samples, 60 classes of very unequal sizes (the last ten have 3 each), 400 kept, k + 1 = 6.
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.randint(0, 50, (2970,), generator=generator), torch.arange(50, 60).repeat(3)])
    arrival = torch.arange(3000) if order == "sequential" else torch.randperm(3000, generator=generator)
    choice = Choice(max_samples=400, floor=6, seed=5)
    bank = FeatureBank(num_items=3000, choice=choice)
    held = []
    for batch in arrival.split(32):
        _add(bank, batch.tolist(), labels[batch])
        held.append(bank.size)
    data = bank.finalize()
    expected = _reference_choice(labels.tolist(), seed=5, max_samples=400, floor=6)
    assert data.indices.tolist() == expected
    counts = torch.bincount(data.labels, minlength=60)
    assert (counts[50:] == 3).all()  # the small classes keep every sample they have
    assert int(counts[:50].min()) >= 6  # every other class keeps at least k + 1
    assert max(held) <= 2 * 400  # never more than twice the bank while the epoch runs


def test_required_indices_are_always_kept():
    bank = FeatureBank(num_items=1000, choice=Choice(max_samples=20, floor=2, seed=1, required=(999, 3)))
    for start in range(0, 1000, 50):
        _add(bank, list(range(start, start + 50)))
    data = bank.finalize()
    assert len(data) == 20 and {3, 999} <= set(data.indices.tolist())


def test_sample_priorities_are_fixed_per_index_and_seed_and_spread_over_zero_one():
    state = torch.get_rng_state()
    first = sample_priorities(torch.arange(10000), seed=3)
    assert torch.equal(first, sample_priorities(torch.arange(10000), seed=3))
    assert torch.equal(first[[7, 5]], sample_priorities(torch.tensor([7, 5]), seed=3))
    assert not torch.equal(first, sample_priorities(torch.arange(10000), seed=4))
    assert torch.equal(torch.get_rng_state(), state)
    assert 0 <= float(first.min()) and float(first.max()) < 1 and abs(float(first.mean()) - 0.5) < 0.01


def test_stratified_choice_gives_each_class_the_floor_then_the_lowest_priorities():
    labels = torch.tensor([0] * 8 + [1] * 2)
    priorities = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95, 0.9])
    keep = stratified_choice(labels, priorities, max_samples=5, floor=2)
    assert keep.nonzero().flatten().tolist() == [0, 1, 2, 8, 9]  # class 1 keeps both, class 0 the lowest three
    assert stratified_choice(labels, priorities, max_samples=10, floor=2).all()


def test_thumbnails_are_each_pixel_rounded_to_255ths_within_0_and_255():
    generator = torch.Generator().manual_seed(0)
    steps = (torch.arange(256.0) / 255).view(1, 1, 16, 16).expand(2, 3, 16, 16)  # every level, exactly
    for images, size in [(steps, 16), (torch.rand(4, 3, 48, 40, generator=generator), 32), (torch.ones(2, 3, 9, 9), 4)]:
        resized = images if images.shape[-2:] == (size, size) else torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )  # fmt: skip
        expected = (resized.clamp(0, 1) * 255).round().to(torch.uint8)
        assert torch.equal(to_thumbnails(images, size), expected)
    assert to_thumbnails(steps, 16).flatten(1).unique().tolist() == list(range(256))


def test_to_thumbnails_undoes_normalisation_and_handles_channel_counts():
    image = torch.full((1, 3, 8, 8), 0.5)
    normalised = (image - 0.5) / 0.25
    out = to_thumbnails(normalised, size=4, mean=[0.5] * 3, std=[0.25] * 3)
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.uint8 and (out == 128).all()
    assert to_thumbnails(torch.rand(2, 1, 8, 8), size=4).shape == (2, 3, 4, 4)
    assert to_thumbnails(torch.rand(2, 4, 8, 8), size=4).shape == (2, 3, 4, 4)
    wide = to_thumbnails(torch.tensor([-5.0, 5.0]).repeat_interleave(32).view(1, 1, 8, 8), size=8)
    assert wide.min() == 0 and wide.max() == 255  # an unknown range is min-max scaled per image


@pytest.mark.parametrize("logits_first", [True, False], ids=["logits first", "logits later"])
def test_class_probabilities_follow_their_rows_and_batches_without_logits_get_nan_rows(logits_first):
    bank = FeatureBank(num_items=10, choice=Choice(max_samples=10), dtype=torch.float16)
    vectors = {"layer": torch.zeros(2, 2)}
    thumbnails = torch.zeros(2, 0, dtype=torch.uint8)
    probabilities = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    with_logits = (torch.tensor([8, 4]), torch.tensor([0, 1]), torch.tensor([0, 2]), torch.ones(2), vectors, thumbnails)
    without = (torch.tensor([5, 1]), torch.tensor([0, 1]), torch.tensor([-1, -1]), torch.ones(2), vectors, thumbnails)
    if logits_first:
        bank.add(*with_logits, probabilities)
        bank.add(*without)
    else:
        bank.add(*without)
        bank.add(*with_logits, probabilities)
    data = bank.finalize()
    assert data.indices.tolist() == [1, 4, 5, 8]
    assert data.probabilities.dtype == torch.float16  # stored like the vectors
    expected = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.1, 0.0]])
    torch.testing.assert_close(data.probabilities[[1, 3]].float(), expected, atol=1e-3, rtol=0)
    assert bool(data.probabilities[[0, 2]].isnan().all())
    stored = [data.indices, data.labels, data.preds, data.confidences, data.thumbnails, data.probabilities]
    stored += list(data.vectors.values())
    assert sum(t.numel() * t.element_size() for t in stored) == 4 * (8 + 8 + 8 + 4 + 2 * 2 + 3 * 2)  # probabilities in
    assert (
        bank_bytes(4, {"layer": 2}, torch.float16, None, num_classes=3)
        - bank_bytes(4, {"layer": 2}, torch.float16, None)
        == 4 * 3 * 2
    )
    plain = FeatureBank(num_items=1, choice=Choice(max_samples=1))
    plain.add(
        torch.tensor([1]),
        torch.tensor([0]),
        torch.tensor([0]),
        torch.ones(1),
        {"layer": torch.zeros(1, 2)},
        torch.zeros(1, 0, dtype=torch.uint8),
    )
    assert plain.finalize().probabilities.shape == (1, 0)
