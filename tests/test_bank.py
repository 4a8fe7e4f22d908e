import pytest
import torch

from lightning_featviz.bank import FeatureBank, bank_bytes, select_subset, stored_bytes, to_thumbnails


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


def _add(bank, indices):
    indices = torch.tensor(indices)
    rows = bank.rows_to_keep(indices)
    if rows is None:
        return
    indices = indices[rows]
    n = len(indices)
    bank.add(
        indices,
        indices % 3,
        indices % 2,
        indices.float() / 10,
        {"layer": indices[:, None].float().repeat(1, 2)},
        torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
    )


def test_feature_bank_keeps_its_subset_sorted_and_drops_repeated_indices():
    bank = FeatureBank(keep=torch.tensor([1, 4, 5, 8]))
    assert bank.rows_to_keep(torch.tensor([0, 2])) is None
    assert bank.rows_to_keep(torch.tensor([4, 5])) == slice(None)
    _add(bank, [8, 0, 1, 2])
    _add(bank, [4, 5, 8])  # 8 repeated, as a distributed sampler pads
    data = bank.finalize()
    assert data.indices.tolist() == [1, 4, 5, 8]
    assert data.labels.tolist() == [1, 1, 2, 2]
    assert data.confidences.tolist() == pytest.approx([0.1, 0.4, 0.5, 0.8])
    assert data.vectors["layer"][:, 0].tolist() == [1.0, 4.0, 5.0, 8.0]
    assert data.thumbnails.shape == (4, 3, 4, 4)
    assert data.rows_of([8, 1]).tolist() == [3, 0]
    assert FeatureBank(keep=torch.tensor([1])).finalize() is None


def test_to_thumbnails_undoes_normalisation_and_handles_channel_counts():
    image = torch.full((1, 3, 8, 8), 0.5)
    normalised = (image - 0.5) / 0.25
    out = to_thumbnails(normalised, size=4, mean=[0.5] * 3, std=[0.25] * 3)
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.uint8 and (out == 128).all()
    assert to_thumbnails(torch.rand(2, 1, 8, 8), size=4).shape == (2, 3, 4, 4)
    assert to_thumbnails(torch.rand(2, 4, 8, 8), size=4).shape == (2, 3, 4, 4)
    wide = to_thumbnails(torch.tensor([-5.0, 5.0]).repeat_interleave(32).view(1, 1, 8, 8), size=8)
    assert wide.min() == 0 and wide.max() == 255  # an unknown range is min-max scaled per image


def test_class_probabilities_follow_their_rows_and_batches_without_logits_get_nan_rows():
    bank = FeatureBank(keep=torch.tensor([1, 4, 5, 8]), dtype=torch.float16)
    vectors = {"layer": torch.zeros(2, 2)}
    thumbnails = torch.zeros(2, 0, dtype=torch.uint8)
    probabilities = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    bank.add(
        torch.tensor([8, 4]),
        torch.tensor([0, 1]),
        torch.tensor([0, 2]),
        torch.ones(2),
        vectors,
        thumbnails,
        probabilities,
    )
    bank.add(torch.tensor([5, 1]), torch.tensor([0, 1]), torch.tensor([-1, -1]), torch.ones(2), vectors, thumbnails)
    data = bank.finalize()
    assert data.indices.tolist() == [1, 4, 5, 8]
    assert data.probabilities.dtype == torch.float16  # stored like the vectors
    expected = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.1, 0.0]])
    torch.testing.assert_close(data.probabilities[[1, 3]].float(), expected, atol=1e-3, rtol=0)
    assert bool(data.probabilities[[0, 2]].isnan().all())
    assert stored_bytes(data) == 4 * (8 + 8 + 8 + 4 + 2 * 2 + 3 * 2)  # the probabilities counted
    assert (
        bank_bytes(4, {"layer": 2}, torch.float16, None, num_classes=3)
        - bank_bytes(4, {"layer": 2}, torch.float16, None)
        == 4 * 3 * 2
    )
    without = FeatureBank(keep=torch.tensor([1]))
    without.add(
        torch.tensor([1]),
        torch.tensor([0]),
        torch.tensor([0]),
        torch.ones(1),
        {"layer": torch.zeros(1, 2)},
        torch.zeros(1, 0, dtype=torch.uint8),
    )
    assert without.finalize().probabilities.shape == (1, 0)
