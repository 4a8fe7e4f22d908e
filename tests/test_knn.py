import math

import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from lightning_featviz.analysis.cache import ResultCache
from lightning_featviz.analysis.knn import (
    ambiguous_share,
    knn_purity,
    knn_search,
    knn_vote,
    majority,
    neighbour_stats,
    per_class_mean,
)


def _assert_same_neighbours(ours, reference, atol=1e-4):
    """Distances agree; indices agree except where two neighbours are tied within ``atol``."""
    (dist, idx), (ref_dist, ref_idx) = ours, reference
    torch.testing.assert_close(dist, ref_dist, atol=atol, rtol=1e-4)
    differs = idx != ref_idx
    assert differs.float().mean() < 0.01
    assert torch.allclose(dist[differs], ref_dist[differs], atol=atol)


#: The two paths of the one search: FAISS (CPU tensors) and the chunked torch search (what a GPU runs).
PATHS = ["faiss", "torch"]


@pytest.fixture
def path(request, monkeypatch):
    """Search CPU tensors with FAISS, or (``"torch"``) with the GPU's chunked torch search, on the CPU."""
    if request.param == "torch":
        from lightning_featviz.analysis import knn

        def torch_search(queries, reference, k, exclude):
            return knn._exact_distances(queries, reference, knn._torch_search(queries, reference, k, exclude, 1024))

        monkeypatch.setattr(knn, "_cpu_search", torch_search)
    return request.param


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_knn_search_matches_scikit_learn_leave_one_out(metric, chunk_size, path):
    data = torch.randn(300, 24, generator=torch.Generator().manual_seed(0))
    ours = knn_search(data, data, k=10, metric=metric, exclude_self=True, chunk_size=chunk_size)
    nn = NearestNeighbors(n_neighbors=10, metric=metric).fit(data.double().numpy())
    ref_dist, ref_idx = nn.kneighbors()  # no argument: each point excluded from its own neighbours
    _assert_same_neighbours(ours, (torch.from_numpy(ref_dist).float(), torch.from_numpy(ref_idx)))


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_search_matches_scikit_learn_with_reference_set(metric, path):
    generator = torch.Generator().manual_seed(1)
    queries, reference = torch.randn(50, 16, generator=generator), torch.randn(400, 16, generator=generator)
    ours = knn_search(queries, reference, k=5, metric=metric, chunk_size=16)
    nn = NearestNeighbors(n_neighbors=5, metric=metric).fit(reference.double().numpy())
    ref_dist, ref_idx = nn.kneighbors(queries.double().numpy())
    _assert_same_neighbours(ours, (torch.from_numpy(ref_dist).float(), torch.from_numpy(ref_idx)))


def test_knn_search_on_a_hand_computed_line():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    dist, idx = knn_search(points, points, k=2, exclude_self=True)
    assert idx.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert dist.tolist() == [[1.0, 3.0], [1.0, 2.0], [2.0, 3.0], [4.0, 6.0]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "Expected `k` to be in"),
        ({"k": 4, "exclude_self": True}, r"Expected `k` to be in \[1, 3\]"),
        ({"k": 1, "metric": "manhattan"}, "Expected `metric`"),
    ],
)
def test_knn_search_rejects_bad_arguments(kwargs, match):
    points = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=match):
        knn_search(points, points, **kwargs)


def test_knn_purity_on_a_hand_computed_case():
    labels = torch.tensor([0, 0, 1, 1])
    neighbour_labels = torch.tensor([[0, 1], [0, 0], [1, 0], [0, 0]])
    assert knn_purity(neighbour_labels, labels).tolist() == [0.5, 1.0, 0.5, 0.0]


def test_knn_vote_takes_the_majority_and_breaks_ties_towards_the_nearest_neighbour():
    neighbour_labels = torch.tensor([[2, 1, 1], [0, 1, 2], [1, 0, 0], [3, 3, 0]])
    assert knn_vote(neighbour_labels, num_classes=4).tolist() == [1, 0, 0, 3]
    assert knn_vote(torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]), num_classes=2).tolist() == [1, 0]


@pytest.mark.parametrize("classes", [4, 60])  # a table of counts (C <= k²), or the labels compared with each other
def test_majority_is_the_largest_count_and_on_ties_the_class_nearest_first(classes):
    neighbour_labels = torch.randint(0, classes, (500, 7), generator=torch.Generator().manual_seed(0))
    neighbour_labels[:, 0] = classes - 1  # C = classes
    votes, counts = majority(neighbour_labels)
    for row, vote, count in zip(neighbour_labels.tolist(), votes.tolist(), counts.tolist(), strict=True):
        best = max(row.count(c) for c in row)
        assert count == best and vote == next(c for c in row if row.count(c) == best)  # the nearest of the tied


def test_per_class_mean_marks_absent_classes_with_nan():
    result = per_class_mean(torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0, 0, 2]), num_classes=3)
    assert result[0].item() == 0.75 and math.isnan(result[1].item()) and result[2].item() == 0.0


def test_neighbour_stats_leave_one_out_on_two_clusters_with_an_intruder():
    # Class 0 sits at 0, 1, 3; a class-1 intruder at 4.5; class 1 proper at 20, 21, 23. With k = 2:
    # 2 -> (3: class 1, 1: class 0) purity 0.5, vote 1 (tie, nearest wins); 3 -> (2, 1) purity 0.
    points = torch.tensor([[0.0], [1.0], [3.0], [4.5], [20.0], [21.0], [23.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    stats = neighbour_stats(points, labels, k=2, num_classes=2)
    assert stats.indices.tolist() == [[1, 2], [0, 2], [3, 1], [2, 1], [5, 6], [4, 6], [5, 4]]
    assert stats.purity.tolist() == [1.0, 1.0, 0.5, 0.0, 1.0, 1.0, 1.0]
    assert stats.mean_purity == pytest.approx(5.5 / 7)
    assert stats.votes.tolist() == [0, 0, 1, 0, 1, 1, 1]
    assert stats.accuracy(labels) == pytest.approx(5 / 7)
    assert stats.class_purity.tolist() == pytest.approx([2.5 / 3, 3 / 4])


def test_neighbour_stats_searches_a_separate_reference_set():
    queries, labels = torch.tensor([[0.0], [5.0]]), torch.tensor([0, 1])
    reference, reference_labels = torch.tensor([[0.1], [0.2], [4.9], [5.2]]), torch.tensor([0, 1, 1, 1])
    stats = neighbour_stats(queries, labels, k=2, num_classes=2, reference=reference, reference_labels=reference_labels)
    assert stats.indices.tolist() == [[0, 1], [2, 3]]
    assert stats.purity.tolist() == [0.5, 1.0]


def test_neighbour_cache_reuses_a_search_for_identical_inputs_only():
    calls = []

    def search(tag):
        calls.append(tag)
        return tag

    cache = ResultCache()
    a, b = torch.arange(6.0).view(3, 2), torch.ones(3, 2)
    assert cache.get((a, None), lambda: search("a")) == "a"
    assert cache.get((a.clone(), None), lambda: search("a again")) == "a"  # same values, same epoch
    assert cache.get((b, None), lambda: search("b")) == "b"
    cache.next_round()
    assert cache.get((a.clone(), None), lambda: search("a next epoch")) == "a"
    cache.next_round()
    cache.next_round()  # a round without a: forgotten
    assert cache.get((a, None), lambda: search("a recomputed")) == "a recomputed"
    assert cache.get((a, torch.zeros(1)), lambda: search("other key")) == "other key"
    assert calls == ["a", "b", "a recomputed", "other key"]


def test_faiss_and_torch_find_the_same_neighbours_even_among_exact_duplicates():
    from lightning_featviz.analysis.knn import _exact_distances, _torch_search

    data = torch.randn(500, 32, generator=torch.Generator().manual_seed(2))
    data[100:104] = data[100]  # four identical points: the query itself may not come first
    rows = torch.arange(500)
    torch_dist, torch_idx = _exact_distances(data, data, _torch_search(data, data, 6, rows, 1024))
    torch_dist = torch_dist.sqrt()
    faiss_dist, faiss_idx = knn_search(data, data, 6, exclude_self=True)
    torch.testing.assert_close(faiss_dist, torch_dist, atol=1e-3, rtol=1e-4)
    assert not (faiss_idx == torch.arange(500)[:, None]).any()  # never its own neighbour
    ties = torch.arange(100, 104)
    assert torch.equal(faiss_idx[~torch.isin(torch.arange(500), ties)], torch_idx[~torch.isin(torch.arange(500), ties)])
    for row in ties.tolist():  # the other three copies first, in some order
        assert set(faiss_idx[row, :3].tolist()) == set(ties.tolist()) - {row}


@pytest.mark.parametrize("path", ["torch"], indirect=True)
def test_a_search_in_inference_mode_and_then_outside_it_both_work(path):
    # The search reuses its buffers between calls; Lightning validates in inference mode and fits outside it.
    data = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        inside = knn_search(data, data, 4, exclude_self=True)[1]
    outside = knn_search(data.clone(), data.clone(), 4, exclude_self=True)[1]
    assert torch.equal(inside, outside)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_the_narrow_search_gives_the_neighbours_and_ties_of_one_search_2k_plus_1_wide(k):
    """neighbour_stats searches k + 1 and only the queries whose k-th neighbour ties again, 2k + 1 wide."""
    generator = torch.Generator().manual_seed(k)
    labels = torch.randint(0, 3, (300,), generator=generator)
    grid, normal = torch.randint(0, 3, (300, 2), generator=generator).float(), torch.randn(300, 8, generator=generator)
    for vectors in (grid, normal):  # many exact ties; almost none
        stats = neighbour_stats(vectors, labels, k, 3)
        distances, indices = knn_search(vectors, vectors, 2 * k + 1, exclude_self=True)
        assert stats.tied == ambiguous_share(distances, labels[indices], labels, k, total=299)
        assert torch.equal(stats.distances, distances[:, :k])
        assert torch.equal(labels[stats.indices], labels[indices[:, :k]])
    assert neighbour_stats(torch.zeros(300, 2), labels, k, 3).tied == 1.0  # a constant layer: every query


def test_ties_count_as_ambiguous_only_where_they_could_change_the_purity():
    k = 2
    # distances nearest first; the k-th (index 1) and (k+1)-th (index 2) are equal in rows 0-2
    distances = torch.tensor(
        [[0.1, 0.5, 0.5, 0.9, 1.0], [0.1, 0.5, 0.5, 0.9, 1.0], [0.1, 0.5, 0.5, 0.5, 0.5], [0.1, 0.5, 0.6, 0.9, 1.0]]
    )
    neighbour_labels = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1]])
    labels = torch.zeros(4, dtype=torch.long)
    # row 0: the tie agrees (both share the label); row 1: it does not; row 2: the tie goes on past the
    # five searched of ten, so it cannot be told; row 3: no tie at the k-th neighbour.
    assert ambiguous_share(distances, neighbour_labels, labels, k, total=10) == pytest.approx(2 / 4)
    assert ambiguous_share(distances, neighbour_labels, labels, k, total=5) == pytest.approx(1 / 4)


def test_the_faiss_search_leaves_faiss_s_process_wide_threshold_as_it_found_it():
    """The search sets FAISS's matrix-product threshold for its own call only: a user's FAISS keeps its setting,
    also when the search fails."""
    import faiss

    from lightning_featviz.analysis.knn import _faiss_search

    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 12_345
    try:
        data = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
        knn_search(data, data, 5, exclude_self=True)
        assert faiss.cvar.distance_compute_blas_threshold == 12_345
        with pytest.raises(AssertionError):  # FAISS's own check of the widths
            _faiss_search(data, data[:, :4], 5, None)
        assert faiss.cvar.distance_compute_blas_threshold == 12_345
    finally:
        faiss.cvar.distance_compute_blas_threshold = before
