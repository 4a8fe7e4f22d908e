"""Each layer's t-SNE maps across epochs, kept comparable from one epoch to the next.

Small pieces with one job each, and :class:`MapTracker` only orchestrating them:

- the aligner, :func:`align_map` (and :func:`map_displacement`, how far a map moved);
- the change check: :func:`nearest_neighbours`, :func:`neighbourhood_changed` and :class:`ChangeCheck`, which
  decides once a round per layer whether its neighbourhoods changed since its last map;
- the per-layer map state, :class:`LastMaps`: each layer's last map per dimension and the samples it shows
  (what a warm start starts from, and what a checkpoint keeps);
- the warm-start policy, :func:`warm_start`, with the 3-D lift :func:`lift_map`;
- the reuse of a map for bit-identical vectors: :class:`~lightning_featviz.analysis.cache.ResultCache`.

Fitting one map is :mod:`lightning_featviz.analysis.tsne`'s job. Arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.linalg import orthogonal_procrustes

from lightning_featviz.analysis.cache import ResultCache
from lightning_featviz.analysis.knn import knn_search
from lightning_featviz.analysis.tsne import Backend as Backend  # options.MapOptions reads it here
from lightning_featviz.analysis.tsne import clamp_perplexity, pca_reduce, tsne_map

T = TypeVar("T")

# A warm map only settles (no exaggeration) where its layer kept at least this share of each
# sample's nearest neighbours since the last map: a model that has all but stopped changing keeps
# 0.97 on the digits; the quick start's layers kept 0.1-0.35 after the first epoch, 0.3-0.7 after the second.
NEIGHBOURS_COMPARED = 15
KEPT_TO_SETTLE = 0.9


def align_map(current: NDArray, previous: NDArray) -> NDArray[np.float64]:
    """Move ``current`` (N, c) onto ``previous`` (N, c), same points in the same order.

    The best rotation/reflection, uniform scale and shift (Procrustes analysis): clusters keep
    their place and orientation from one epoch's map to the next instead of jumping or mirroring.
    """
    current = np.asarray(current, dtype=np.float64)
    previous = np.asarray(previous, dtype=np.float64)
    a, b = current - current.mean(axis=0), previous - previous.mean(axis=0)
    rotation, singular_sum = orthogonal_procrustes(a, b)
    scale = singular_sum / max(float((a**2).sum()), 1e-300)
    return scale * (a @ rotation) + previous.mean(axis=0)


def map_displacement(current: NDArray, previous: NDArray) -> float:
    """Mean distance a point moved between two maps, over the previous map's spread (RMS radius)."""
    previous = np.asarray(previous, dtype=np.float64)
    spread = np.sqrt(((previous - previous.mean(axis=0)) ** 2).sum(axis=1).mean())
    return float(np.linalg.norm(np.asarray(current) - previous, axis=1).mean() / spread)


def lift_map(flat: NDArray, vectors: NDArray | torch.Tensor, seed: int = 0) -> NDArray[np.float64]:
    """A 3-D start for t-SNE from a 2-D map (N, 2) of the same (N, D) vectors: the map, and as
    depth the vectors' third principal component, scaled to the map's spread (N, 3).

    From there the warm schedule reaches a cold 3-D fit's trustworthiness (within 0.004 on the
    quick start's layers) in a fifth of the time, and the map fills all three axes.
    """
    flat = np.asarray(flat, dtype=np.float64)
    components = pca_reduce(vectors, 3, seed)
    # Narrower vectors have no third component: random depth (an equal one would never move).
    depth = components[:, 2] if components.shape[1] == 3 else np.random.default_rng(seed).normal(size=len(flat))
    depth = depth / (float(depth.std()) or 1.0) * float(flat.std())
    return np.column_stack([flat, depth])


def neighbours_kept(before: NDArray, after: NDArray) -> float:
    """The mean share of each row's neighbours in ``before`` (N, k) that are still among its
    neighbours in ``after`` (N, k'): 1 when nothing changed."""
    if before.shape[0] != after.shape[0] or before.shape[1] == 0:
        return 0.0
    return float((before[:, :, None] == after[:, None, :]).any(axis=2).mean())


def nearest_neighbours(
    vectors: NDArray | torch.Tensor, count: int, found: tuple[torch.Tensor, torch.Tensor] | None = None
) -> NDArray:
    """(N, count) indices of each of the (N, D) vectors' nearest others, nearest first: the first ``count``
    columns of ``found`` ``(distances, indices)`` (N, K), leave-one-out, where it has that many, else a search."""
    if found is not None and found[1].shape[1] >= count:
        return found[1][:, :count].numpy()
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    return knn_search(x, x, count, exclude_self=True)[1].numpy()


def neighbourhood_changed(earlier: tuple[NDArray, NDArray] | None, indices: NDArray, neighbours: NDArray) -> bool:
    """Whether the samples ``indices`` (N,), with nearest neighbours ``neighbours`` (N, k) now, kept less than
    :data:`KEPT_TO_SETTLE` of the ones they had in ``earlier`` ``(indices, neighbours)``; True without an
    ``earlier`` of the same samples."""
    if earlier is None or not np.array_equal(earlier[0], indices):
        return True
    return neighbours_kept(earlier[1], neighbours) < KEPT_TO_SETTLE


class ChangeCheck:
    """Per layer, whether its neighbourhoods changed since its last map: decided at the layer's first map of a
    round (its 2-D and 3-D maps share the answer); :meth:`next_round` makes this round's neighbours the ones the
    next round compares with. Not checkpointed: a resumed run treats its first warm maps as changed."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[NDArray, NDArray]] = {}  # layer -> (indices, (N, 15) nearest neighbours)
        self._this_round: dict[str, tuple[NDArray, NDArray, bool]] = {}  # and whether they changed

    def changed(
        self,
        layer: str,
        indices: NDArray,
        vectors: NDArray | torch.Tensor,
        found: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> bool:
        """Whether ``layer``'s samples ``indices`` (N,), at ``vectors`` (N, D) (neighbours ``found`` where
        given), changed their neighbourhoods since the last round (:func:`neighbourhood_changed`)."""
        if layer not in self._this_round:
            neighbours = nearest_neighbours(vectors, min(NEIGHBOURS_COMPARED, len(indices) - 1), found)
            changed = neighbourhood_changed(self._last.get(layer), indices, neighbours)
            self._this_round[layer] = (indices, neighbours, changed)
        return self._this_round[layer][2]

    def next_round(self) -> None:
        """Keep this round's neighbours for the next round's comparison."""
        self._last.update({layer: (i, n) for layer, (i, n, _) in self._this_round.items()})
        self._this_round = {}


class LastMaps:
    """Each layer's last map in each dimension, with the samples it shows: what a warm start starts from and
    the state a checkpoint keeps."""

    def __init__(self) -> None:
        self._maps: dict[tuple[str, int], tuple[NDArray, NDArray]] = {}  # (layer, dims) -> (indices, map)

    def previous(self, layer: str, dims: int, indices: NDArray | torch.Tensor) -> NDArray | None:
        """The last (N, dims) map of ``layer`` if it was made of the samples ``indices`` (N,), else None."""
        earlier = self._maps.get((layer, dims))
        if earlier is None or not np.array_equal(earlier[0], np.asarray(indices)):
            return None
        return earlier[1]

    def remember(self, layer: str, dims: int, indices: NDArray, points: NDArray) -> None:
        """Keep ``points`` (N, dims) as ``layer``'s last map of the samples ``indices`` (N,)."""
        self._maps[(layer, dims)] = (indices, points)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and strings, so that checkpoints load with ``weights_only=True``."""
        # list() copies in one step: a checkpoint may be saved while the worker adds this epoch's maps.
        maps = list(self._maps.items())
        return {
            f"{layer}\t{dims}": {"indices": torch.from_numpy(indices), "map": torch.from_numpy(points)}
            for (layer, dims), (indices, points) in maps
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        maps = {}
        for key, value in state.items():
            layer, dims = key.rsplit("\t", 1)
            maps[(layer, int(dims))] = (
                torch.as_tensor(value["indices"]).numpy().astype(np.int64),
                torch.as_tensor(value["map"]).numpy().astype(np.float64),
            )
        self._maps = maps  # in one step: a checkpoint may be saved meanwhile (the worker loads)


def warm_start(
    last: LastMaps, layer: str, dims: int, indices: NDArray, vectors: NDArray | torch.Tensor, seed: int = 0
) -> tuple[NDArray | None, NDArray | None]:
    """``(previous, start)`` for ``layer``'s next (N, dims) map of the samples ``indices`` (N,): ``previous``
    is its last map of these samples (to start from and align onto), ``start`` the map a fit starts from:
    ``previous``, or for a first 3-D map the layer's 2-D map of these samples lifted into depth
    (:func:`lift_map`), or None (a cold fit)."""
    previous = last.previous(layer, dims, indices)
    if previous is not None or dims != 3:
        return previous, previous
    flat = last.previous(layer, 2, indices)
    return None, (None if flat is None else lift_map(flat, vectors, seed))


class MapTracker:
    """Each layer's t-SNE maps over epochs, kept comparable from one epoch to the next.

    A layer's map starts from its previous map when that was made of the same samples (warm
    start) and is then aligned onto it (:func:`align_map`), so clusters keep their place and
    orientation. Where the layer's neighbourhoods changed since (its samples kept less than 90 % of
    their 15 nearest neighbours) the warm fit first lets points travel (a short exaggeration);
    where they did not, it only settles, so a model that stopped changing keeps its map. A first
    3-D map starts from the layer's 2-D map of the same samples, lifted into depth
    (:func:`lift_map`); maps of other samples, or a first 2-D map, are fitted cold.
    Vectors bit-identical to ones mapped in this round or the last (pixel space every epoch, a
    frozen layer, a layer that repeats another) get the same map again without a fit; call
    :meth:`next_round` after each epoch.

    Args:
        perplexity: t-SNE perplexity (clamped on small sets).
        seed: seed of every fit.
        n_jobs: threads for the fit; default all cores.
    """

    def __init__(self, perplexity: float = 30.0, seed: int = 0, n_jobs: int | None = None):
        self.perplexity = perplexity
        self.seed = seed
        self.n_jobs = n_jobs
        self._last = LastMaps()
        self._changes = ChangeCheck()
        self._clamp_warned = False
        self._cache: ResultCache[NDArray] = ResultCache()
        self._measures: ResultCache[Any] = ResultCache()

    def fit(
        self,
        layer: str,
        dims: int,
        indices: NDArray | torch.Tensor,
        vectors: NDArray | torch.Tensor,
        neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> NDArray:
        """The (N, dims) map of ``layer``'s (N, D) vectors for the samples ``indices`` (N,); ``neighbours``
        ``(distances, indices)`` (N, K) of the vectors, leave-one-out, serve the change check and the
        affinities instead of searches of their own."""
        indices = np.asarray(indices, dtype=np.int64)
        key = (torch.as_tensor(vectors), torch.from_numpy(indices), torch.tensor(dims))
        points = self._cache.get(key, partial(self._fit, layer, dims, indices, vectors, neighbours))
        self._last.remember(layer, dims, indices, points)
        return points

    def measured(self, key: tuple[torch.Tensor, ...], measure: Callable[[], T]) -> T:
        """``measure()`` of a map, or its earlier result for bit-identical ``key`` tensors (the
        map and what it was measured against): a reused map is not measured again."""
        return self._measures.get(key, measure)

    def next_round(self) -> None:
        """Keep only the maps made since the last call for reuse (one epoch's, so memory stays flat)."""
        self._cache.next_round()
        self._measures.next_round()
        self._changes.next_round()

    def previous(self, layer: str, dims: int, indices: NDArray | torch.Tensor) -> NDArray | None:
        """The last map of ``layer`` in ``dims`` dimensions if it was made of the samples ``indices``."""
        return self._last.previous(layer, dims, indices)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and strings, so that checkpoints load with ``weights_only=True``."""
        return self._last.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last.load_state_dict(state)

    def _fit(
        self,
        layer: str,
        dims: int,
        indices: NDArray,
        vectors: NDArray | torch.Tensor,
        neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> NDArray:
        changed = self._changes.changed(layer, indices, vectors, neighbours)
        previous, start = warm_start(self._last, layer, dims, indices, vectors, self.seed)
        # Warn at the first clamp only, not for every layer and epoch.
        perplexity = clamp_perplexity(self.perplexity, len(indices), warn=not self._clamp_warned)
        self._clamp_warned |= perplexity != self.perplexity
        reorganise = changed or previous is None
        points = tsne_map(vectors, dims, perplexity, self.seed, start, self.n_jobs, reorganise, neighbours)
        return points if previous is None else align_map(points, previous)
