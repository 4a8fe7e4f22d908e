"""One epoch's t-SNE maps of a layer and how far to trust them (drawing them is the report's job).

Plain functions over a :class:`~lightning_featviz.capture.bank.BankData` and the kNN results; the
callback only decides when to call them and where the results go.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from lightning_featviz.analysis.embedding import MapTracker, map_displacement
from lightning_featviz.analysis.knn import NeighbourStats, knn_purity, knn_search
from lightning_featviz.analysis.neighbourhoods import map_k, map_rows, trustworthiness_estimate
from lightning_featviz.capture.bank import BankData
from lightning_featviz.capture.warn import Warn


@dataclass
class LayerMaps:
    """A layer's t-SNE maps of one epoch and how far to trust them.

    Attributes:
        maps: dims -> (N, dims) map, rows in bank order.
        trust: dims -> trustworthiness@k of the map (1 = every map neighbourhood is a true one).
        purity: dims -> kNN class purity@k measured in the map (compare with the layer's own).
        displacement: dims -> mean distance points moved since the layer's previous map of the
            same samples, over that map's RMS radius (absent for a first map).
        trust_error: dims -> standard error of ``trust`` (0 where it is exact; an estimate from a sample
            of rows above :data:`~lightning_featviz.analysis.neighbourhoods.EXACT_TRUST_LIMIT` points).
        rows: (M,) the bank rows the maps show (a stratified subsample of a large bank), None for all.
    """

    maps: dict[int, np.ndarray] = field(default_factory=dict)
    trust: dict[int, float] = field(default_factory=dict)
    purity: dict[int, float] = field(default_factory=dict)
    displacement: dict[int, float] = field(default_factory=dict)
    trust_error: dict[int, float] = field(default_factory=dict)
    rows: np.ndarray | None = None


def merged(first: LayerMaps, second: LayerMaps) -> LayerMaps:
    """One layer's maps of two calls (of other dimensions, the same rows) as one."""
    return LayerMaps(
        {**first.maps, **second.maps},
        {**first.trust, **second.trust},
        {**first.purity, **second.purity},
        {**first.displacement, **second.displacement},
        {**first.trust_error, **second.trust_error},
        first.rows,
    )


def fit_layer_maps(
    tracker: MapTracker,
    layer: str,
    bank: BankData,
    dims: Sequence[int],
    k: int,
    stats: NeighbourStats | None = None,
    rows: torch.Tensor | None = None,
) -> LayerMaps:
    """Fit (warm-started, aligned) maps of ``layer`` in each of ``dims`` and measure them.

    ``stats``: the layer's kNN results; where they come from a leave-one-out Euclidean search of the whole
    bank wide enough for a map (:func:`~lightning_featviz.analysis.neighbourhoods.map_k`), the change check, the
    t-SNE affinities and trustworthiness take their neighbours from it. ``rows`` (M,): map only these bank
    rows (a large bank's subsample, :func:`~lightning_featviz.analysis.neighbourhoods.map_rows`); the map's
    neighbours are then searched once, among them.

    Raises:
        ValueError: from :func:`~lightning_featviz.analysis.tsne.tsne_map` (too few points, constant
            or non-finite vectors).
    """
    vectors, labels, indices_t = bank.vectors[layer].float(), bank.labels, bank.indices
    if rows is not None:
        vectors, labels, indices_t = vectors[rows], labels[rows], indices_t[rows]
    result = LayerMaps(rows=None if rows is None else rows.numpy())
    indices = indices_t.numpy()
    found = _map_neighbours(vectors, tracker.perplexity, k, stats if rows is None else None)
    for d in dims:
        previous = tracker.previous(layer, d, indices)
        points = tracker.fit(layer, d, indices, vectors, found)
        result.maps[d] = points
        if previous is not None:
            result.displacement[d] = map_displacement(points, previous)
        key = (vectors, torch.from_numpy(points), labels, torch.tensor(k))
        measure = partial(_measure, vectors, points, labels, k, found, tracker.seed)
        result.trust[d], result.purity[d], result.trust_error[d] = tracker.measured(key, measure)
    return result


def _map_neighbours(
    vectors: torch.Tensor, perplexity: float, k: int, stats: NeighbourStats | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(distances, indices)`` (N, K) of the mapped vectors (N, D) that the map's steps share: from the
    epoch's search where it fits (see :func:`fit_layer_maps`), else one search here. None for < 5 points."""
    if len(vectors) < 5:
        return None
    needed = map_k(len(vectors), perplexity, k)
    if stats is not None and stats.leave_one_out and stats.metric == "euclidean" and len(stats.purity) == len(vectors):
        shared = stats.neighbours(needed)
        if shared is not None:
            return shared
    return knn_search(vectors, vectors, needed, exclude_self=True)


def _measure(
    vectors: torch.Tensor,
    points: np.ndarray,
    labels: torch.Tensor,
    k: int,
    found: tuple[torch.Tensor, torch.Tensor] | None,
    seed: int,
) -> tuple[float, float, float]:
    """A map's trustworthiness@k, kNN class purity@k and the trustworthiness's standard error (N, D
    vectors; N, c map; N labels; ``found``: the vectors' neighbours, (N, K) each)."""
    on_map = torch.as_tensor(points).float()
    neighbours = knn_search(on_map, on_map, k, exclude_self=True)[1]  # (N, k), used by both measures
    trust_k = min(k, (len(points) - 1) // 2)
    trust, error = trustworthiness_estimate(vectors, neighbours[:, :trust_k], found, seed=seed)
    return trust, float(knn_purity(labels[neighbours], labels).mean()), error


def fit_maps(
    tracker: MapTracker,
    bank: BankData,
    stats: dict[str, NeighbourStats],
    dims: Sequence[int],
    k: int,
    map_samples: int,
    seed: int,
    warn: Warn,
) -> tuple[dict[str, LayerMaps], dict[int, float]]:
    """Each layer of ``stats``'s maps in ``dims``, of at most ``map_samples`` rows of ``bank`` (the same rows
    every epoch, :func:`~lightning_featviz.analysis.neighbourhoods.map_rows`), 2-D first: a first 3-D map starts
    from it. A layer whose map cannot be made (too few points, constant vectors) is warned about and left out;
    returns the maps by layer and the seconds each dimension's maps took. Ends the tracker's round.
    """
    maps: dict[str, LayerMaps] = {}
    seconds: dict[int, float] = {}
    failed: set[str] = set()
    rows = map_rows(bank.labels, bank.indices, map_samples, seed)
    for d in dims:
        started = time.perf_counter()
        for layer in stats:
            if layer in failed:
                continue
            try:
                found = fit_layer_maps(tracker, layer, bank, [d], k, stats[layer], rows)
            except ValueError as error:
                failed.add(layer)
                maps.pop(layer, None)
                warn(f"tsne/{layer}", f"No t-SNE map of layer {layer!r} this epoch: {error}")
                continue
            maps[layer] = merged(maps[layer], found) if layer in maps else found
        seconds[d] = time.perf_counter() - started
    tracker.next_round()
    return maps, seconds
