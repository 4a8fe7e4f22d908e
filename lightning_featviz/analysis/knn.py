"""Exact k-nearest-neighbour search and the class-purity statistics built on it.

Shapes: Q queries, N reference vectors, D dimensions, k neighbours, C classes. Vectors are rows:
``queries`` is (Q, D) and ``reference`` is (N, D).

Over 300 lines (one module, one job): the chunked exact search (torch and FAISS) and the purity statistics
read from its neighbours share the shape conventions above and are checked against each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Metric = Literal["euclidean", "cosine"]


def knn_search(
    queries: Tensor,
    reference: Tensor,
    k: int,
    metric: Metric = "euclidean",
    exclude_self: bool = False,
    chunk_size: int = 1024,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact k nearest neighbours of each query among the reference vectors.

    One path per device: on the CPU, FAISS's exact brute-force search (``faiss-cpu`` is a core dependency);
    on a GPU, chunked matrix products on the tensors' device, ``chunk_size`` queries at a time
    (memory O(chunk_size * N)). Both give the same neighbours up to ties (``tests/test_knn.py``).

    Args:
        queries: (Q, D) float tensor.
        reference: (N, D) float tensor on the same device.
        k: neighbours per query; ``k <= N`` (``k <= N - 1`` with ``exclude_self``).
        metric: ``"euclidean"`` (L2 distance) or ``"cosine"`` (1 - cosine similarity).
        exclude_self: leave-one-out search; query ``i`` is reference row ``i`` and never its own
            neighbour (``queries`` and ``reference`` are the same set, Q == N).
        exclude: (Q,) a reference row that is never query ``i``'s neighbour (the same sample in
            another set), -1 for none; instead of ``exclude_self``.
        chunk_size: queries per matrix product (the GPU search).

    Returns:
        ``(distances, indices)``, both (Q, k), nearest first; ``indices`` are rows of ``reference``.
    """
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"Expected `queries` (Q, D) and `reference` (N, D) with the same D, "
            f"but got {tuple(queries.shape)} and {tuple(reference.shape)}."
        )
    if exclude_self:
        exclude = torch.arange(queries.shape[0], device=queries.device)
    excluding = exclude is not None and bool((exclude >= 0).any())
    available = reference.shape[0] - int(excluding)
    if not 1 <= k <= available:
        raise ValueError(
            f"Expected `k` to be in [1, {available}] for {reference.shape[0]} reference rows, but got {k}."
        )
    if exclude_self and queries.shape[0] != reference.shape[0]:
        raise ValueError("Expected `queries` and `reference` to be the same set with `exclude_self=True`.")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"Expected `metric` to be 'euclidean' or 'cosine', but got {metric!r}.")

    queries, reference = queries.float(), reference.float()
    if metric == "cosine":
        queries = torch.nn.functional.normalize(queries, dim=1)
        reference = torch.nn.functional.normalize(reference, dim=1)
    rows = exclude.to(queries.device).long() if exclude is not None and excluding else None
    if queries.device.type == "cpu":
        sq, idx = _cpu_search(queries, reference, k, rows)
    else:
        sq, idx = _exact_distances(queries, reference, _torch_search(queries, reference, k, rows, chunk_size))
    return (0.5 * sq if metric == "cosine" else sq.sqrt()), idx  # unit vectors: ||q - r||^2 = 2 (1 - cos)


def _cpu_search(queries: Tensor, reference: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """FAISS's neighbours (Q, k) of each query and their exact squared distances, nearest first
    (:func:`_exact_distances`)."""
    return _exact_distances(queries, reference, _faiss_search(queries, reference, k, exclude))


#: The fewest queries a chunk of the torch search takes (unless ``chunk_size`` is smaller).
MIN_CHUNK = 128


def _torch_search(queries: Tensor, reference: Tensor, k: int, exclude: Tensor | None, chunk_size: int) -> Tensor:
    """Indices (Q, k) of the nearest reference rows, by chunked matrix products and top-k.

    The scores of a chunk go to a buffer of 8 MB (a 2,048-sample bank fits 1,024 queries in it), reused by
    every search (:func:`_workspace`); a larger bank takes at least 128 queries at a time (10 MB at 20,000
    samples), since a matrix product of fewer rows runs well below the machine's peak.
    """
    ref_sq = torch.linalg.vector_norm(reference, dim=1).square()
    chunk_size = max(1, min(chunk_size, max(MIN_CHUNK, 2**21 // max(reference.shape[0], 1))))
    buffer = _workspace("scores", min(chunk_size, queries.shape[0]) * reference.shape[0], queries.device)
    buffer = buffer.view(-1, reference.shape[0])
    found = torch.empty(queries.shape[0], k, dtype=torch.int64, device=queries.device)
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size]
        # ||q - r||^2 = ||q||^2 - 2 q.r + ||r||^2; ||q||^2 is constant per row, so rank without it.
        scores = torch.addmm(ref_sq, chunk, reference.T, alpha=-2.0, out=buffer[: len(chunk)])
        if exclude is not None:
            excluded = exclude[start : start + chunk_size]
            rows = (excluded >= 0).nonzero().flatten()
            scores[rows, excluded[rows]] = float("inf")
        found[start : start + len(chunk)] = torch.topk(scores, k, dim=1, largest=False, sorted=True)[1]
    return found


def _exact_distances(queries: Tensor, reference: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distances (Q, k) of each query to its found neighbours ``idx`` (Q, k), from the differences
    themselves (exact duplicates are 0, not the rounding left by the search's norm expansion), and the
    neighbours re-sorted by them, nearest first (``idx`` itself, re-sorted in place).
    The differences go to a reused buffer of at most 4 MB."""
    q, k = idx.shape
    dims = max(queries.shape[1], 1)
    rows = max(1, min(q, 2**20 // max(k * dims, 1)))
    buffer = _workspace("differences", rows * k * queries.shape[1], queries.device).view(rows * k, -1)
    sq = torch.empty(q, k, device=queries.device)
    for start in range(0, q, rows):
        chunk, chosen = queries[start : start + rows], idx[start : start + rows]
        gathered = torch.index_select(reference, 0, chosen.reshape(-1), out=buffer[: chosen.numel()])
        differences = gathered.view(len(chunk), k, -1).sub_(chunk[:, None, :]).square_()
        part, order = torch.sum(differences, dim=-1).sort(dim=1, stable=True)
        sq[start : start + len(chunk)] = part
        idx[start : start + len(chunk)] = chosen.gather(1, order)  # re-sorted in place, chunk by chunk
    return sq, idx


_WORKSPACES = threading.local()


def _workspace(name: str, numel: int, device: torch.device) -> Tensor:
    """A float32 buffer of ``numel`` values, kept per thread and reused by every CPU search.

    Fresh large blocks for every chunk and layer leave the C allocator's heap fragmented: a process
    that searched five layers kept ~70 MB more than it used. One buffer per purpose (12 MB in all up
    to 20,000 samples) is allocated once and grown when a larger bank needs it. CUDA tensors come from PyTorch's own
    caching allocator instead.
    """
    if device.type != "cpu":
        return torch.empty(numel, device=device)
    buffers: dict[str, Tensor] = getattr(_WORKSPACES, "buffers", {})
    if name not in buffers or buffers[name].numel() < numel:
        buffers.pop(name, None)
        with torch.inference_mode(False):  # a normal tensor: written in place in and out of inference mode
            buffers[name] = torch.empty(numel)
        _WORKSPACES.buffers = buffers
    return buffers[name][:numel]


def _faiss_search(queries: Tensor, reference: Tensor, k: int, exclude: Tensor | None) -> Tensor:
    """Indices (Q, k) of the nearest reference rows by FAISS's exact brute-force search; an excluded row is
    left out by searching k + 1 and dropping it (or, where it is not among them, the farthest)."""
    import faiss

    # faiss.knn searches the arrays as they are (an IndexFlatL2 would copy the whole reference first), here always by
    # matrix products: below its threshold (1.15: 128,000, on queries x dims; a 1,000-sample bank of 16-32 dims)
    # FAISS computes one distance at a time, 1.4-1.8x as slow (``benchmarks/knn.py``, "small banks"). The distances
    # are recomputed exactly after (:func:`_exact_distances`), as for the torch search. The threshold is FAISS's
    # process-wide setting: set for this call only, then put back.
    threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 0
    try:
        found = faiss.knn(
            queries.detach().cpu().contiguous().numpy(),
            reference.detach().cpu().contiguous().numpy(),
            k + int(exclude is not None),
        )
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold
    idx = torch.from_numpy(found[1])
    if exclude is not None:
        is_self = idx == exclude.cpu()[:, None]
        # keep the k entries that are not the query; where the query is missing, drop the last one
        drop = torch.where(is_self.any(dim=1), is_self.float().argmax(dim=1), torch.full((len(idx),), k))
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[torch.arange(len(idx)), drop] = False
        idx = idx[keep].view(-1, k)
    return idx


def knn_purity(neighbour_labels: Tensor, labels: Tensor) -> Tensor:
    """Fraction of each sample's neighbours that share its label.

    Args:
        neighbour_labels: (Q, k) integer labels of the neighbours.
        labels: (Q,) integer labels of the queries.

    Returns:
        (Q,) float tensor in [0, 1].
    """
    return (neighbour_labels == labels[:, None]).float().mean(dim=1)


def knn_vote(neighbour_labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Majority-vote class of each sample's neighbours, (Q, k) -> (Q,).

    A tie goes to the tied class that holds the nearest neighbour. ``num_classes`` is not needed
    (kept for callers that pass it): :func:`majority` compares the k labels of a row with each other,
    in chunks, instead of filling a (Q, C) table (160 MB for 20,000 samples of 1,000 classes).
    """
    return majority(neighbour_labels)[0]


def majority(neighbour_labels: Tensor) -> tuple[Tensor, Tensor]:
    """The majority class of each row of ``neighbour_labels`` (Q, k), nearest-neighbour first on ties, and
    how many of the k it holds: two (Q,) int64 tensors.

    The nearest position holding a largest count is the first position of its class, and of the tied classes
    the one whose nearest neighbour is nearest: ``count * (k + 1) - position`` is largest there. How many hold the
    class at each position comes from a table of counts per class where C <= k² (40% of the time at k = 10,
    C = 10), else from comparing the k labels of a row with each other; both in chunks of at most 256 KB."""
    q, k = neighbour_labels.shape
    labels = neighbour_labels.long()
    votes = torch.empty(q, dtype=torch.int64, device=labels.device)
    counts = torch.empty(q, dtype=torch.int64, device=labels.device)
    position = torch.arange(k, device=labels.device)
    low, high = labels.aminmax() if labels.numel() else (torch.tensor(-1), torch.tensor(-1))
    tabled = int(low) >= 0 and int(high) < k * k
    # (rows, C) int64 tables, or (rows, k, k) bool intermediates, of at most 256 KB
    rows = max(1, 2**15 // (int(high) + 1)) if tabled else max(1, 2**18 // max(k * k, 1))
    for start in range(0, q, rows):
        chunk = labels[start : start + rows]
        if tabled:  # (rows, C) counts, read at each position's class
            table = torch.zeros(len(chunk), int(high) + 1, dtype=torch.int64, device=labels.device)
            count = table.scatter_add_(1, chunk, torch.ones_like(chunk)).gather(1, chunk)
        else:  # (rows, k, k): position i and j hold one class
            count = (chunk[:, :, None] == chunk[:, None, :]).sum(dim=2)  # (rows, k): how many hold position j's class
        best = (count * (k + 1) - position).argmax(dim=1)
        votes[start : start + rows] = chunk.gather(1, best[:, None])[:, 0]
        counts[start : start + rows] = count.gather(1, best[:, None])[:, 0]
    return votes, counts


def per_class_mean(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean of ``values`` (Q,) within each class of ``labels`` (Q,); (C,), NaN for absent classes."""
    sums = torch.zeros(num_classes, dtype=torch.float64).scatter_add_(0, labels.long().cpu(), values.double().cpu())
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).double()
    return (sums / counts).float()  # 0 / 0 -> NaN marks a class with no sample


#: A sample's neighbourhood is ambiguous when its k-th and (k+1)-th neighbours are this close, relatively.
TIE_TOLERANCE = 1e-5


@dataclass
class NeighbourStats:
    """kNN results for Q query samples against a reference set, k neighbours, C classes.

    Attributes:
        distances: (Q, k) distances, nearest first.
        indices: (Q, k) rows of the reference set.
        purity: (Q,) fraction of neighbours sharing the query's label.
        votes: (Q,) majority-vote class of the neighbours.
        class_purity: (C,) mean purity per true class (NaN where a class has no query).
        tied: share of queries whose purity depends on how ties are broken (:func:`ambiguous_share`).
        vote_counts: (Q,) how many of the k neighbours hold the vote's class (None: not kept).
        wide_distances: (Q, K) distances of the one search this was made from, K >= k, nearest first: the
            neighbours every other output of the epoch takes its own k from (maps, label issues).
        wide_indices: (Q, K) their rows of the reference set.
        leave_one_out: the search was within the queries themselves (so ``wide_*`` are neighbours
            among the bank, what its maps need), not among a separate reference.
        metric: the metric searched with.
    """

    distances: Tensor
    indices: Tensor
    purity: Tensor
    votes: Tensor
    class_purity: Tensor
    tied: float = 0.0
    vote_counts: Tensor | None = None
    wide_distances: Tensor | None = None
    wide_indices: Tensor | None = None
    leave_one_out: bool = True
    metric: Metric = "euclidean"

    def neighbours(self, k: int) -> tuple[Tensor, Tensor] | None:
        """``(distances, indices)``, (Q, k) each, nearest first, from the epoch's one search, or None where it
        searched fewer than ``k``."""
        if self.wide_indices is None or self.wide_distances is None or self.wide_indices.shape[1] < k:
            return None
        return self.wide_distances[:, :k], self.wide_indices[:, :k]

    @property
    def mean_purity(self) -> float:
        return float(self.purity.mean())

    def accuracy(self, labels: Tensor) -> float:
        """Fraction of queries whose majority vote equals their label (``labels``: (Q,))."""
        return float((self.votes == labels).float().mean())


def neighbour_stats(
    vectors: Tensor,
    labels: Tensor,
    k: int,
    num_classes: int,
    metric: Metric = "euclidean",
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    chunk_size: int = 1024,
    exclude: Tensor | None = None,
    search_k: int = 0,
) -> NeighbourStats:
    """kNN statistics of ``vectors`` (Q, D) with ``labels`` (Q,).

    Without ``reference`` the search is leave-one-out within ``vectors``; with it, each query is
    searched among ``reference`` (N, D) whose labels are ``reference_labels`` (N,), never among the
    rows ``exclude`` (Q,) names (the same sample in both sets; -1 for none). Up to 2k + 1 neighbours are
    searched to tell how many neighbourhoods are ambiguous ties (:attr:`NeighbourStats.tied`), or
    ``search_k`` where that is more: the search other outputs share (kept as ``wide_*``).
    """
    leave_one_out = reference is None
    if (reference is None) != (reference_labels is None):
        raise ValueError("Expected `reference` and `reference_labels` to be given together.")
    ref, ref_labels = (
        (vectors, labels) if reference is None or reference_labels is None else (reference, reference_labels)
    )
    available = ref.shape[0] - int(leave_one_out or (exclude is not None and bool((exclude >= 0).any())))
    ties = min(2 * k + 1, available)  # past the k-th neighbour, to see who ties with it
    searched = min(max(ties, search_k), available)
    if leave_one_out and searched == ties and k + 1 < ties:  # nothing wider needed: ties are looked at where seen
        wide_distances, wide_indices, tied = _search_with_ties(vectors, labels, k, ties, metric, chunk_size)
    else:
        wide_distances, wide_indices = knn_search(
            vectors, ref, searched, metric, exclude_self=leave_one_out, chunk_size=chunk_size, exclude=exclude
        )
        distances, indices = wide_distances[:, :ties], wide_indices[:, :ties]
        neighbour_labels = ref_labels.to(indices.device)[indices]
        tied = ambiguous_share(distances, neighbour_labels, labels.to(indices.device), k, available)
    # copies, not views: the (Q, 2k + 1) search results are freed, not kept alive by the stats
    distances, indices = wide_distances[:, :k].clone(), wide_indices[:, :k].clone()
    neighbour_labels = ref_labels.to(indices.device)[indices]
    labels = labels.to(indices.device)
    purity = knn_purity(neighbour_labels, labels)
    votes, vote_counts = majority(neighbour_labels)  # the wrong cluster reads the counts too
    return NeighbourStats(
        distances=distances.cpu(),
        indices=indices.cpu(),
        purity=purity.cpu(),
        votes=votes.cpu(),
        class_purity=per_class_mean(purity, labels, num_classes).cpu(),
        tied=tied,
        vote_counts=vote_counts.cpu(),
        wide_distances=wide_distances.cpu(),
        wide_indices=wide_indices.cpu(),
        leave_one_out=leave_one_out,
        metric=metric,
    )


def _search_with_ties(
    vectors: Tensor, labels: Tensor, k: int, ties: int, metric: Metric, chunk_size: int
) -> tuple[Tensor, Tensor, float]:
    """A leave-one-out search of ``vectors`` (Q, D): ``(distances, indices)`` (Q, k + 1) and the share of
    ambiguous ties, as a search ``ties`` wide gives them (:func:`ambiguous_share`).

    A search costs about its width: k + 1 neighbours are searched, and only the queries whose k-th and (k+1)-th
    neighbours tie (rare outside pixel space, constant layers and dead ReLUs) are searched again ``ties`` wide;
    their rows, and their tie groups, come from that search.
    """
    distances, indices = knn_search(vectors, vectors, k + 1, metric, exclude_self=True, chunk_size=chunk_size)
    labels = labels.to(indices.device)
    ambiguous = torch.zeros(len(labels), dtype=torch.bool, device=indices.device)
    boundary = distances[:, k - 1]
    straddles = ((distances[:, k] - boundary).abs() <= TIE_TOLERANCE * boundary + 1e-12).nonzero().flatten()
    if len(straddles):
        again = knn_search(
            vectors[straddles.to(vectors.device)], vectors, ties, metric, chunk_size=chunk_size, exclude=straddles
        )
        ambiguous[straddles] = ambiguous_rows(again[0], labels[again[1]], labels[straddles], k, len(labels) - 1)
        distances[straddles], indices[straddles] = again[0][:, : k + 1], again[1][:, : k + 1]
    return distances, indices, float(ambiguous.float().mean())


def ambiguous_share(distances: Tensor, neighbour_labels: Tensor, labels: Tensor, k: int, total: int) -> float:
    """The share of queries whose purity@k depends on how ties are broken.

    A query is ambiguous when its k-th and (k+1)-th neighbours are equally far (within
    :data:`TIE_TOLERANCE`) and the neighbours at that distance do not all agree on sharing its label
    (or the tie goes on past the neighbours searched, so that cannot be told): then which of them
    count, and so its purity, depends on the order of the samples.

    Args:
        distances: (Q, s) distances, nearest first, s > k (up to 2k + 1 to see the tie group).
        neighbour_labels: (Q, s) their labels.
        labels: (Q,) the queries' labels.
        k: neighbours counted.
        total: reference rows each query could have had as neighbours.
    """
    return float(ambiguous_rows(distances, neighbour_labels, labels, k, total).float().mean())


def ambiguous_rows(distances: Tensor, neighbour_labels: Tensor, labels: Tensor, k: int, total: int) -> Tensor:
    """(Q,) bool: the queries of :func:`ambiguous_share` whose purity@k depends on how ties are broken (same
    arguments)."""
    if distances.shape[1] <= k:
        return torch.zeros(len(distances), dtype=torch.bool, device=distances.device)
    boundary = distances[:, k - 1 : k]
    tolerance = TIE_TOLERANCE * boundary + 1e-12  # and below 1e-12 apart, rounding noise: equal
    in_group = (distances - boundary).abs() <= tolerance  # (Q, s): at the k-th neighbour's distance
    straddles = in_group[:, k]
    same = neighbour_labels == labels[:, None]
    mixed = (in_group & same).any(dim=1) & (in_group & ~same).any(dim=1)
    unseen = in_group[:, -1] if distances.shape[1] < total else torch.zeros_like(straddles)  # the group goes on
    return straddles & (mixed | unseen)
