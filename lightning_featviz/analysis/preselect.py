"""The CPU search's shortcut: FAISS's k nearest neighbours, proven from a matrix product where they can be.

FAISS's exact search (:func:`lightning_featviz.analysis.knn.knn_search` on the CPU) spends most of its time on
narrow vectors in bookkeeping per (query, reference) pair, a call and a heap of the k best: 6 ns a pair at 16-32
dimensions and k = 11, 15 ns at k = 50 (the label-issue layer's search). A matrix product and NumPy's introselect
take about 3.5 ns a pair whatever k. They round differently (``||q||² + ||r||² - 2 q·r`` against FAISS's sum of
squared differences), so a row's k nearest here are FAISS's own only where the gap between its k-th and (k+1)-th
candidates is wider than both roundings can bridge: :func:`preselect` proves that per row from rigorous float32
error bounds, and the search gives every other row (a near-tie at the k-th neighbour) to FAISS. Which rows, not in
which order: the caller re-sorts by exact distance, and a row with two equal exact distances, whose order FAISS's
would decide, goes to FAISS too. The result is FAISS's, row for row (``tests/test_knn.py``; 120 random cases of
ties, duplicates, offsets and exclusions gave it too).

Shapes: Q queries, N reference rows, D dimensions, k neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: The widest vectors the shortcut takes: wider ones cost FAISS mostly arithmetic, which it does well.
MAX_DIMS = 64
#: The fewest queries it takes (a search again of a few rows goes to FAISS at once).
MIN_QUERIES = 64
#: The fewest neighbours: below, FAISS's heap is small and the shortcut saves nothing (1,000 queries of 32
#: dimensions, one thread: k = 11 FAISS 5.8 ms, this 5.8; k = 21 8.3 and 6.6; k = 49 15.5 and 9.6).
MIN_K = 16
#: Squared distances per matrix product (8 MB of float32).
CHUNK_VALUES = 2**21
#: float32's unit roundoff.
UNIT = 2.0**-24


def applies(queries: Tensor, reference: Tensor, k: int) -> bool:
    """Whether :func:`preselect` takes a search of ``queries`` (Q, D) among ``reference`` (N, D) for k neighbours:
    narrow vectors, enough queries and neighbours, a (k+1)-th candidate to compare with, and a query count FAISS
    searches pair by pair (from ``distance_compute_blas_threshold`` queries on, FAISS takes a matrix product too,
    rounded otherwise, and a row it searched again alone would not be rounded as in the whole search)."""
    import faiss

    count, dims = queries.shape
    if queries.device.type != "cpu" or dims > MAX_DIMS or count < MIN_QUERIES or not MIN_K <= k < len(reference) - 1:
        return False
    return bool(count < faiss.cvar.distance_compute_blas_threshold)


def rounding_bound(dims: int) -> float:
    """A factor c such that both ways of computing a squared distance in float32, as a sum of D squared differences
    (FAISS: in any order, with or without fused multiply-adds; within ``gamma(D + 3)`` of the distance, which is at
    most ``2 (||q||² + ||r||²)``) and as ``||q||² + ||r||² - 2 q·r`` (any matrix product: the three sums each within
    ``gamma(D) = D u / (1 - D u)`` of their terms' absolute sum, the two additions within ``2u`` of theirs), are
    within ``c * (||q||² + ||r||²)`` of the true value."""
    n = dims + 4
    return 4 * n * UNIT / (1 - n * UNIT)


def preselect(queries: Tensor, reference: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each query's k nearest reference rows, and whether they are provably the ones FAISS finds.

    Args:
        queries: (Q, D) float32 CPU tensor.
        reference: (N, D) float32 CPU tensor, N > k + 1.
        k: neighbours per query.
        exclude: (Q,) a reference row never query ``i``'s neighbour (-1: none), or None.

    Returns:
        ``(indices, proven)``: (Q, k) int64 reference rows, in no set order; (Q,) bool, True where every one of the
        k is nearer than every other row by more than both roundings (NaN and infinite rows are never proven).
    """
    count, rows_total = len(queries), len(reference)
    # Distances do not change with the origin; centred vectors have small norms, and so the product's rounding is
    # small. Centring rounds each difference by u of |q - mean| + |r - mean|: two more terms of the bound.
    centre = reference.mean(dim=0)
    queries, reference = queries - centre, reference - centre
    reference_sq = reference.square().sum(dim=1)
    query_sq = queries.square().sum(dim=1)
    # a gap between the k-th and (k+1)-th wider than 4 bounds: ours and FAISS's, each on either side
    margin = (4 * rounding_bound(queries.shape[1] + 2) * (query_sq + reference_sq.max())).numpy()
    found = torch.empty(count, k, dtype=torch.int64)
    proven = torch.empty(count, dtype=torch.bool)
    chunk = max(1, min(count, CHUNK_VALUES // rows_total))
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        scores = torch.addmm(reference_sq, queries[start:stop], reference.T, alpha=-2.0)
        scores.add_(query_sq[start:stop, None])  # (chunk, N) squared distances
        if exclude is not None:
            excluded = exclude[start:stop]
            have = (excluded >= 0).nonzero().flatten()
            scores[have, excluded[have]] = float("inf")
        values = scores.numpy()
        nearest = np.argpartition(values, k, axis=1)[:, : k + 1]  # the k + 1 smallest, the (k+1)-th last
        kept = np.take_along_axis(values, nearest, axis=1)
        order = np.argsort(kept, axis=1, kind="stable")
        nearest, kept = np.take_along_axis(nearest, order, axis=1), np.take_along_axis(kept, order, axis=1)
        found[start:stop] = torch.from_numpy(nearest[:, :k])
        with np.errstate(invalid="ignore", over="ignore"):
            gap = kept[:, k] - kept[:, k - 1]
            proven[start:stop] = torch.from_numpy(gap > margin[start:stop])
    return found, proven
