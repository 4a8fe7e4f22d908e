import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from lightning_featviz.analysis.embedding import (
    KEPT_TO_SETTLE,
    ChangeCheck,
    LastMaps,
    MapTracker,
    align_map,
    lift_map,
    map_displacement,
    nearest_neighbours,
    neighbourhood_changed,
    warm_start,
)
from lightning_featviz.analysis.knn import neighbour_stats
from lightning_featviz.analysis.maps import fit_layer_maps
from lightning_featviz.analysis.tsne import clamp_perplexity, pca_reduce, trustworthiness, tsne_map
from lightning_featviz.capture.bank import BankData


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data[:600].astype(np.float32), data.target[:600]


def _map_purity(points, labels):
    return neighbour_stats(torch.as_tensor(points).float(), torch.as_tensor(labels), k=10, num_classes=10).mean_purity


def test_a_fitted_map_keeps_class_neighbourhoods_that_a_random_layout_lacks(digits):
    vectors, labels = digits
    state = torch.get_rng_state()
    fitted = tsne_map(vectors, 2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert fitted.shape == (600, 2)
    random_layout = np.random.default_rng(0).normal(size=(600, 2))
    assert _map_purity(fitted, labels) >= 0.85
    assert _map_purity(random_layout, labels) < 0.3
    assert trustworthiness(vectors, fitted) > 0.9 > trustworthiness(vectors, random_layout)
    np.testing.assert_allclose(tsne_map(vectors, 2, seed=0), fitted)  # seeded: the same map again


def test_a_three_dimensional_map(digits):
    vectors, labels = digits
    fitted = tsne_map(vectors[:300], 3, seed=0)
    assert fitted.shape == (300, 3) and _map_purity(fitted, labels[:300]) >= 0.8


def test_a_first_3d_map_starts_from_the_layers_2d_map_and_is_as_trustworthy_as_a_cold_fit(digits, monkeypatch):
    vectors = digits[0][:400]
    cold = tsne_map(vectors, 3, seed=0)
    tracker = MapTracker(seed=0)
    flat = tracker.fit("layer", 2, np.arange(400), vectors)
    starts = []
    monkeypatch.setattr(
        "lightning_featviz.analysis.embedding.tsne_map", lambda *args: starts.append(args[4]) or tsne_map(*args)
    )
    lifted = tracker.fit("layer", 3, np.arange(400), vectors)
    np.testing.assert_array_equal(starts[0], lift_map(flat, vectors))  # from the 2-D map, not cold
    np.testing.assert_array_equal(starts[0][:, :2], flat)
    assert trustworthiness(vectors, lifted) > trustworthiness(vectors, cold) - 0.01
    spread = lifted.std(axis=0)
    assert spread[2] > 0.4 * spread[:2].max()  # it uses the third axis, not a flat sheet


def test_a_warm_start_that_only_settles_barely_moves_a_model_that_stopped_changing(digits):
    vectors, _ = digits
    previous = tsne_map(vectors, 2, seed=0)
    again = align_map(tsne_map(vectors, 2, seed=1, init=previous, reorganise=False), previous)
    assert map_displacement(again, previous) < 0.05  # a twentieth of the map's radius


def test_a_warm_start_after_a_large_change_is_as_trustworthy_as_a_cold_fit(digits):
    vectors, _ = digits
    untrained = vectors + np.random.default_rng(0).normal(0, 8, vectors.shape).astype(np.float32)
    previous = tsne_map(untrained, 2, seed=0)  # the layer before it learned: neighbourhoods mostly noise
    cold = trustworthiness(vectors, tsne_map(vectors, 2, seed=0))
    assert trustworthiness(vectors, tsne_map(vectors, 2, seed=0, init=previous)) > cold - 0.005
    # settling alone leaves points near neighbours they no longer have
    assert trustworthiness(vectors, tsne_map(vectors, 2, seed=0, init=previous, reorganise=False)) < cold - 0.01
    # The tracker sees the neighbourhoods change between epochs and lets the points travel.
    tracker, indices = MapTracker(seed=0), np.arange(len(vectors))
    tracker.fit("layer", 2, indices, untrained)
    tracker.next_round()
    assert trustworthiness(vectors, tracker.fit("layer", 2, indices, vectors)) > cold - 0.005


def test_align_map_undoes_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(0)
    previous = rng.normal(size=(50, 2))
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 2.5 * (previous * [1, -1]) @ rotation + [5.0, -3.0]
    np.testing.assert_allclose(align_map(moved, previous), previous, atol=1e-9)
    assert map_displacement(previous, previous) == 0.0


def test_perplexity_is_clamped_with_a_warning_on_small_sets():
    with pytest.warns(UserWarning, match="too large for 31 samples"):
        assert clamp_perplexity(30, 31) == pytest.approx(10.0, abs=1e-3)
    assert clamp_perplexity(30, 1000) == 30


def test_bad_inputs_raise_precise_errors():
    with pytest.raises(ValueError, match="at least 4 points"):
        tsne_map(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        tsne_map(np.full((10, 5), np.nan))
    with pytest.raises(ValueError, match="all points are the same"):
        tsne_map(np.ones((10, 5)))
    with pytest.raises(ValueError, match=r"`init` of shape \(10, 2\)"):
        tsne_map(np.random.default_rng(0).normal(size=(10, 5)), init=np.zeros((9, 2)))
    with pytest.raises(ValueError, match="`n_components` to be 2 or 3"):
        tsne_map(np.random.default_rng(0).normal(size=(20, 5)), n_components=4)


def test_pca_reduce_keeps_the_top_components_of_wide_vectors():
    rng = np.random.default_rng(0)
    low_rank = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 80))
    reduced = pca_reduce(low_rank, dims=50)
    assert reduced.shape == (200, 50)
    assert np.abs(reduced[:, 3:]).max() < 1e-3 * np.abs(reduced[:, :3]).max()
    assert pca_reduce(rng.normal(size=(10, 4))).shape == (10, 4)


def test_trustworthiness_agrees_with_scikit_learn(digits):
    from sklearn.manifold import trustworthiness as reference

    rng = np.random.default_rng(0)
    # Jitter breaks the ties among integer-valued digit distances, which the two rank differently.
    vectors = digits[0] + rng.normal(0, 1e-2, digits[0].shape).astype(np.float32)
    for points in (tsne_map(vectors, 2, seed=0), rng.normal(size=(600, 2))):
        assert trustworthiness(vectors, points, k=10, chunk_size=97) == pytest.approx(
            reference(vectors, points, n_neighbors=10), abs=1e-6
        )


def test_map_tracker_warm_starts_aligns_reuses_identical_input_and_round_trips_its_state(digits):
    vectors, _ = digits
    indices = np.arange(600)
    tracker = MapTracker(seed=0)
    first = tracker.fit("layer", 2, indices, vectors)
    tracker.next_round()
    # One more epoch of a model that has nearly stopped changing: the map stays where it was.
    nudged = vectors + np.random.default_rng(1).normal(0, 0.2, vectors.shape).astype(np.float32)
    second = tracker.fit("layer", 2, indices, nudged)
    assert map_displacement(second, first) < 0.05
    # A cold refit of the same data moves points several times more (3.7x with one thread, 6.8x with two: openTSNE's
    # sums depend on the thread count).
    assert map_displacement(tsne_map(nudged, 2, seed=0), first) > 3 * map_displacement(second, first)
    # Bit-identical vectors (another layer repeating these, pixel space next epoch) get the same map.
    assert tracker.fit("twin", 2, indices, nudged) is second
    restored = MapTracker(seed=0)
    restored.load_state_dict(tracker.state_dict())
    np.testing.assert_array_equal(restored.previous("layer", 2, indices), second)
    assert restored.previous("layer", 2, indices[:-1]) is None  # other samples: no warm start


def test_a_reused_map_is_not_measured_again(digits, monkeypatch):
    vectors, labels = (torch.as_tensor(a) for a in digits)
    n = 300
    bank = BankData(
        torch.arange(n),
        labels[:n],
        torch.full((n,), -1),
        torch.full((n,), float("nan")),
        {"input": vectors[:n], "frozen": vectors[:n].clone(), "trained": vectors[:n] * 2 + 1},
        torch.empty(n, 0, dtype=torch.uint8),
    )
    measured = []
    from lightning_featviz.analysis.neighbourhoods import trustworthiness_estimate

    monkeypatch.setattr(
        "lightning_featviz.analysis.maps.trustworthiness_estimate",
        lambda *args, **kwargs: measured.append(1) or trustworthiness_estimate(*args, **kwargs),
    )
    tracker = MapTracker(seed=0)
    first = {layer: fit_layer_maps(tracker, layer, bank, [2], k=10) for layer in bank.vectors}
    assert len(measured) == 2  # "frozen" repeats "input": the same map, measured once
    assert first["frozen"].trust == first["input"].trust and first["input"].trust[2] > 0.9
    tracker.next_round()
    bank.vectors["trained"] = bank.vectors["trained"] + 0.5 * torch.randn(n, vectors.shape[1])  # it trained on
    again = {layer: fit_layer_maps(tracker, layer, bank, [2], k=10) for layer in bank.vectors}
    assert len(measured) == 3  # only the layer that changed
    assert again["input"].trust == first["input"].trust and again["input"].displacement[2] == 0


def test_neighbourhoods_changed_where_samples_kept_less_than_the_share_or_are_other_samples():
    indices = np.arange(4)
    earlier = (indices, np.array([[1, 2], [0, 2], [0, 1], [0, 1]]))
    assert not neighbourhood_changed(earlier, indices, earlier[1])  # kept every neighbour
    assert not neighbourhood_changed(earlier, indices, earlier[1][:, ::-1])  # order within the k does not count
    one_lost = np.array([[1, 2], [0, 2], [0, 1], [0, 3]])  # kept 7 of 8: 0.875
    assert 7 / 8 < KEPT_TO_SETTLE and neighbourhood_changed(earlier, indices, one_lost)
    assert neighbourhood_changed(None, indices, earlier[1])  # nothing to compare with
    assert neighbourhood_changed(earlier, indices + 1, earlier[1])  # other samples


def test_nearest_neighbours_come_from_the_shared_search_when_it_is_wide_enough():
    vectors = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    assert nearest_neighbours(vectors, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]  # by hand
    shared = (torch.zeros(4, 3), torch.tensor([[3, 2, 1], [3, 2, 0], [3, 0, 1], [0, 1, 2]]))
    assert nearest_neighbours(vectors, 2, shared).tolist() == [[3, 2], [3, 2], [3, 0], [0, 1]]  # taken as given
    assert nearest_neighbours(vectors, 3, shared[:1] + (shared[1][:, :2],)).tolist()[0] == [1, 2, 3]  # too narrow


def test_the_change_check_decides_once_a_round_and_compares_with_the_last_round(digits):
    vectors = digits[0][:200]
    indices = np.arange(200)
    moved = np.random.default_rng(0).permutation(vectors)  # every sample gets another's vector
    check = ChangeCheck()
    assert check.changed("layer", indices, vectors)  # a first map: nothing to compare with
    assert check.changed("layer", indices, moved)  # decided once a round: the 3-D map shares the 2-D's answer
    check.next_round()
    assert not check.changed("layer", indices, vectors + 1e-3)  # the same neighbourhoods
    assert check.changed("other", indices, vectors)  # per layer
    check.next_round()
    assert check.changed("layer", indices, moved)
    check.next_round()
    check.next_round()  # a round without the layer keeps what it had
    assert not check.changed("layer", indices, moved)


def test_last_maps_give_a_map_only_for_the_same_samples_and_round_trip_through_a_checkpoint(tmp_path):
    last = LastMaps()
    flat, deep = np.random.default_rng(0).normal(size=(5, 2)), np.random.default_rng(1).normal(size=(5, 3))
    last.remember("layer", 2, np.arange(5), flat)
    last.remember("layer", 3, np.arange(5), deep)
    assert last.previous("layer", 2, np.arange(5)) is flat and last.previous("layer", 3, torch.arange(5)) is deep
    assert last.previous("layer", 2, np.arange(1, 6)) is None and last.previous("other", 2, np.arange(5)) is None
    torch.save(last.state_dict(), tmp_path / "maps.pt")
    restored = LastMaps()
    restored.load_state_dict(torch.load(tmp_path / "maps.pt", weights_only=True))
    np.testing.assert_array_equal(restored.previous("layer", 2, np.arange(5)), flat)
    np.testing.assert_array_equal(restored.previous("layer", 3, np.arange(5)), deep)


def test_a_warm_start_starts_from_the_layers_map_of_the_same_samples_or_lifts_its_2d_map(digits):
    vectors, indices = digits[0][:50], np.arange(50)
    last = LastMaps()
    assert warm_start(last, "layer", 2, indices, vectors) == (None, None)  # cold
    flat = np.random.default_rng(0).normal(size=(50, 2))
    last.remember("layer", 2, indices, flat)
    assert warm_start(last, "layer", 2, indices, vectors) == (flat, flat)
    previous, start = warm_start(last, "layer", 3, indices, vectors, seed=0)
    assert previous is None  # nothing to align a first 3-D map onto
    np.testing.assert_array_equal(start, lift_map(flat, vectors, 0))
    assert warm_start(last, "layer", 3, indices[1:], vectors[1:]) == (None, None)  # other samples: cold
    deep = lift_map(flat, vectors)
    last.remember("layer", 3, indices, deep)
    assert warm_start(last, "layer", 3, indices, vectors) == (deep, deep)


def test_fit_maps_leaves_out_a_layer_that_cannot_be_mapped_with_one_warning_and_times_each_dimension(digits):
    from lightning_featviz.analysis.maps import fit_maps

    vectors, labels = (torch.as_tensor(a[:120]) for a in digits)
    layers = {"flat": torch.ones(120, 4), "digits": vectors}
    bank = BankData(
        torch.arange(120), labels, torch.full((120,), -1), torch.full((120,), float("nan")), layers, torch.empty(0)
    )
    stats = {layer: neighbour_stats(v, labels, k=5, num_classes=10) for layer, v in layers.items()}
    warned: list[tuple[str, str]] = []
    tracker = MapTracker(perplexity=10.0)
    maps, seconds = fit_maps(tracker, bank, stats, [2, 3], 5, 2000, 0, lambda *warning: warned.append(warning))
    assert list(maps) == ["digits"] and sorted(maps["digits"].maps) == [2, 3]
    assert [key for key, _ in warned] == ["tsne/flat"] and "all points are the same" in warned[0][1]
    assert sorted(seconds) == [2, 3] and all(spent > 0 for spent in seconds.values())
    assert (
        tracker.fit("digits", 2, np.arange(120), vectors) is maps["digits"].maps[2]
    )  # reused after the round fit_maps ended
