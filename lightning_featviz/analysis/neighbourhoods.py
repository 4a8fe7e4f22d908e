"""One neighbour search per layer per epoch, and what large banks are mapped and measured on.

Every output of an epoch needs some of each sample's nearest neighbours in a layer: purity@k (and
2k + 1 of them to tell ties), the label-issue vote, the map's check of how far neighbourhoods changed
(15), t-SNE's perplexity affinities (3 · perplexity) and the map's trustworthiness. Searching once at
the largest of these and handing each its first columns costs one O(N²·D) search instead of four:
:func:`neighbours_needed` says how many.

Large banks are mapped on a stratified subsample of ``maps.samples`` rows, the same dataset samples every
epoch (:func:`map_rows`), while purity uses the whole bank; the map's own searches then run within the
subsample (M² instead of N²). Trustworthiness is exact up to :data:`EXACT_TRUST_LIMIT` points and a
sampled estimate with its standard error above (:func:`trustworthiness_estimate`).

Shapes: N samples, D dimensions, K neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lightning_featviz.analysis.embedding import NEIGHBOURS_COMPARED
from lightning_featviz.analysis.tsne import clamp_perplexity

#: Trustworthiness is computed on every point up to this many, estimated from this many rows above.
EXACT_TRUST_LIMIT = 4000


def map_k(samples: int, perplexity: float, k: int) -> int:
    """Neighbours a map of ``samples`` points needs: the change check's 15, t-SNE's 3 · perplexity
    (clamped for small sets, as the fit clamps it) and trustworthiness@k; at most ``samples - 1``."""
    affinities = int(3 * clamp_perplexity(perplexity, samples, warn=False))
    return max(1, min(samples - 1, max(NEIGHBOURS_COMPARED, affinities, k)))


def neighbours_needed(samples: int, k: int, perplexity: float, maps: bool, label_k: int = 0) -> int:
    """K for a layer's one search of ``samples`` bank rows: 2k + 1 (purity and its ties), ``label_k``
    (the label-issue vote), and, when ``maps`` are made of these rows this epoch, :func:`map_k`."""
    needed = max(2 * k + 1, label_k)
    if maps:
        needed = max(needed, map_k(samples, perplexity, k))
    return max(1, min(samples - 1, needed))


def map_rows(labels: Tensor, indices: Tensor, size: int, seed: int = 0) -> Tensor | None:
    """The bank rows a map shows when the bank holds more than ``size``: a stratified subsample (each
    class's share kept, at least one sample of each), chosen by a seeded hash of the dataset index, so the
    same samples are mapped every epoch (warm starts, comparable maps). None when the bank is small enough.

    Args:
        labels: (N,) class ids of the bank's rows.
        indices: (N,) their dataset indices.
        size: the most rows a map shows.
        seed: seed of the choice.

    Returns:
        (M,) sorted int64 row numbers, M <= ``size`` (plus at most one per class beyond it), or None.
    """
    n = len(labels)
    if n <= size:
        return None
    keys = _hash(indices.numpy().astype(np.uint64), seed)
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    quotas = np.maximum(1, np.floor(counts * size / n).astype(np.int64))
    spare = size - int(quotas.sum())
    if spare > 0:  # the largest remainders get the rows the floors left
        remainders = counts * size / n - np.floor(counts * size / n)
        for position in np.argsort(-remainders, kind="stable")[:spare]:
            quotas[position] += 1
    chosen = []
    for label, quota in zip(classes, quotas, strict=True):
        rows = np.flatnonzero(labels_np == label)
        chosen.append(rows[np.argsort(keys[rows], kind="stable")[: min(quota, len(rows))]])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def _hash(values: np.ndarray, seed: int) -> np.ndarray:
    """SplitMix64 of ``values`` (uint64) and ``seed``: a fixed pseudo-random key per dataset index."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def trust_penalties(
    vectors: Tensor,
    map_neighbours: Tensor,
    rows: Tensor,
    vector_neighbours: tuple[Tensor, Tensor] | None = None,
    chunk_size: int = 256,
) -> Tensor:
    """Each of ``rows``' trustworthiness penalty: for each of its k map neighbours j, ``max(0, r(i, j) - k)``
    where ``r`` is j's rank among i's neighbours in the vectors, summed: (len(rows),) float64.

    Args:
        vectors: (N, D) the layer's vectors.
        map_neighbours: (N, k) each point's nearest neighbours on the map.
        rows: (R,) the points to score.
        vector_neighbours: ``(distances, indices)`` (N, K) from the epoch's one search (Euclidean, within
            these N points, K >= k): where a row's map neighbours are all among its K, their ranks come from
            it; only the other rows compute their distances to every point.
        chunk_size: rows whose distances are computed at a time.
    """
    k = map_neighbours.shape[1]
    penalties = torch.zeros(len(rows), dtype=torch.float64)
    pending = torch.arange(len(rows))
    if vector_neighbours is not None:
        distances, indices = vector_neighbours[0][rows], vector_neighbours[1][rows]  # (R, K)
        on_map = map_neighbours[rows]  # (R, k)
        match = on_map[:, :, None] == indices[:, None, :]  # (R, k, K)
        found = match.any(dim=2)
        position = match.float().argmax(dim=2)  # (R, k): where each map neighbour is in the search
        to_neighbour = distances.gather(1, position)  # (R, k)
        ranks = (distances[:, None, :] < to_neighbour[:, :, None]).sum(dim=2) + 1
        complete = found.all(dim=1)
        penalties[complete] = (ranks[complete] - k).clamp_min(0).sum(dim=1).double()
        pending = (~complete).nonzero().flatten()
    x = vectors.float()
    for start in range(0, len(pending), chunk_size):
        chosen = pending[start : start + chunk_size]
        points = rows[chosen]
        squared = torch.cdist(x[points], x).pow_(2)
        squared[torch.arange(len(points)), points] = float("inf")  # a point is not its own neighbour
        to_neighbours = squared.gather(1, map_neighbours[points])  # (chunk, k)
        ranks = (squared[:, None, :] < to_neighbours[:, :, None]).sum(dim=2) + 1
        penalties[chosen] = (ranks - k).clamp_min(0).sum(dim=1).double()
    return penalties


def trustworthiness_estimate(
    vectors: Tensor,
    map_neighbours: Tensor,
    vector_neighbours: tuple[Tensor, Tensor] | None = None,
    exact_limit: int = EXACT_TRUST_LIMIT,
    seed: int = 0,
) -> tuple[float, float]:
    """Trustworthiness@k of a map (Venna and Kaski, as scikit-learn computes it) and its standard error:
    exact (error 0) up to ``exact_limit`` points; above, estimated from ``exact_limit`` rows drawn without
    replacement (the error of a sample mean, with the finite-population correction).

    Args:
        vectors: (N, D) the layer's vectors.
        map_neighbours: (N, k) each point's nearest neighbours on the map, k < N / 2.
        vector_neighbours: see :func:`trust_penalties`.
        exact_limit: the most rows scored.
        seed: seed of the row sample.
    """
    n, k = map_neighbours.shape
    if not 0 < k < n / 2:
        raise ValueError(f"Expected `k` to be in (0, N / 2) = (0, {n / 2}), but got {k}.")
    scale = 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
    if n <= exact_limit:
        penalties = trust_penalties(vectors, map_neighbours, torch.arange(n), vector_neighbours)
        return 1.0 - scale * float(penalties.sum()), 0.0
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=generator)[:exact_limit].sort().values
    penalties = trust_penalties(vectors, map_neighbours, rows, vector_neighbours)
    mean = float(penalties.mean())
    spread = float(penalties.std()) if len(penalties) > 1 else 0.0
    error = scale * n * spread / math.sqrt(len(rows)) * math.sqrt(1.0 - len(rows) / n)
    return 1.0 - scale * n * mean, error
