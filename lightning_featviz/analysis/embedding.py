"""t-SNE maps of layer vectors, and the measures that say how far to trust them.

Arrays in, arrays out; no Lightning, no plotting. openTSNE does the work: its FFT-accelerated
gradient in 2-D from 10,000 points, Barnes-Hut below that and in 3-D (FFT supports 2 output
dimensions only), on affinities from the project's exact kNN. Wide layers are reduced by PCA
first. A map can start from an earlier one (warm start, a short and mild exaggeration), and
:func:`align_map` rotates/reflects it onto the earlier map so successive epochs compare. Every
stochastic step takes a seed; the global RNGs are never touched.

Over 300 lines: t-SNE fitting, alignment, lifting and the :class:`MapTracker` that uses them; splitting
the tracker by responsibility (cache, change detector, warm-start policy, aligner) is still to do.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.linalg import orthogonal_procrustes

from lightning_featviz.analysis.knn import ResultCache, knn_search

Backend = Literal["opentsne", "sklearn"]
T = TypeVar("T")

PCA_DIMS = 50
# Cold schedule, tuned in benchmarks/tsne.py: openTSNE's defaults are 250 + 500 iterations with
# theta 0.5; on 3,500-10,000 points this shorter schedule with a coarser Barnes-Hut reaches the
# same trustworthiness (within 0.002) in less than half the time.
EARLY_EXAGGERATION_ITERS = 150
ITERS = 250
# Warm schedule, measured on the quick start's layers between real epochs: 60 plain iterations
# from the previous map lost up to 0.1 trustworthiness against a cold fit after the first epoch
# (points stay near neighbours they no longer have); a short, mild exaggeration first lets them
# travel and keeps the loss within 0.025 (mostly 0.01), at half a cold fit's cost or less.
WARM_EXAGGERATION_ITERS = 50
WARM_EXAGGERATION = 4.0
WARM_ITERS = 60
BH_THETA = 0.8
# A warm map only settles (no exaggeration) where its layer kept at least this share of each
# sample's nearest neighbours since the last map: a model that has all but stopped changing keeps
# 0.97 on the digits; the quick start's layers kept 0.1-0.35 after the first epoch, 0.3-0.7 after the second.
NEIGHBOURS_COMPARED = 15
KEPT_TO_SETTLE = 0.9
FFT_FROM = 10_000


def pca_reduce(vectors: NDArray | torch.Tensor, dims: int = PCA_DIMS, seed: int = 0) -> NDArray[np.float32]:
    """Project (N, D) vectors onto their top ``dims`` principal components: (N, min(dims, N, D)).

    Randomised PCA (Halko et al.: a Gaussian sketch, 4 power iterations, SVD of the projection)
    drawn from its own seeded generator, so it never touches the global RNG — not even briefly,
    which matters on a background thread while training draws from it. Narrow inputs are only centred.
    """
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    x = x - x.mean(dim=0, keepdim=True)
    q = min(dims, *x.shape)
    if x.shape[1] <= dims:
        return x.numpy()
    sketch = torch.randn(x.shape[1], min(q + 10, x.shape[1]), generator=torch.Generator().manual_seed(seed))
    basis = torch.linalg.qr(x @ sketch).Q  # (N, q + 10): spans the top components
    for _ in range(4):
        basis = torch.linalg.qr(x @ torch.linalg.qr(x.T @ basis).Q).Q
    _, _, vh = torch.linalg.svd(basis.T @ x, full_matrices=False)
    return (x @ vh[:q].T).numpy()


def clamp_perplexity(perplexity: float, n_samples: int, warn: bool = True) -> float:
    """The largest usable perplexity for ``n_samples`` points: below (N - 1) / 3, warned when lowered."""
    limit = max((n_samples - 1) / 3.0 - 1e-6, 1.0)
    if perplexity > limit:
        if warn:
            message = f"Perplexity {perplexity} is too large for {n_samples} samples; using {limit:.1f}."
            warnings.warn(message, stacklevel=2)
        return limit
    return perplexity


def tsne_map(
    vectors: NDArray | torch.Tensor,
    n_components: int = 2,
    perplexity: float = 30.0,
    seed: int = 0,
    init: NDArray | None = None,
    n_jobs: int | None = None,
    backend: Backend = "opentsne",
    reorganise: bool = True,
    neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> NDArray[np.float64]:
    """A t-SNE map (N, n_components) of (N, D) vectors.

    Vectors wider than 50 are reduced by PCA first. Cold (``init=None``): PCA initialisation,
    150 early-exaggeration iterations, then 250. Warm (``init`` an earlier map of the same
    points, (N, n_components)): starts there as it is and runs 50 iterations at a mild
    exaggeration (4, so points can reach neighbours they gained), then 60 plain; with
    ``reorganise=False`` (the vectors' neighbourhoods barely changed) only the 60 plain ones, so
    the map stays where it was. ``backend="sklearn"`` uses scikit-learn's TSNE instead (slower; also
    the fallback when openTSNE cannot be imported). ``neighbours``: ``(distances, indices)`` (N, K) of the
    vectors, nearest first, leave-one-out (the epoch's one search, :mod:`lightning_featviz.analysis.neighbourhoods`):
    openTSNE's affinities use their first 3 · perplexity instead of a search of their own (which is in the
    50 PCA dimensions, when K is smaller).

    Raises:
        ValueError: fewer than 4 points, non-finite or constant vectors, ``n_components`` not 2
            or 3, or ``init`` of the wrong shape.
    """
    if n_components not in (2, 3):
        raise ValueError(f"Expected `n_components` to be 2 or 3, but got {n_components}.")
    if backend not in ("opentsne", "sklearn"):
        raise ValueError(f"Expected `backend` to be 'opentsne' or 'sklearn', but got {backend!r}.")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"Expected (N, D) vectors with at least 4 points for a t-SNE map, but got {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("Expected finite vectors for a t-SNE map, but got NaN or Inf.")
    if float(np.ptp(x, axis=0).max()) == 0.0:
        raise ValueError("Expected vectors that differ for a t-SNE map, but all points are the same.")
    if init is not None and np.shape(init) != (x.shape[0], n_components):
        raise ValueError(f"Expected `init` of shape {(x.shape[0], n_components)}, but got {np.shape(init)}.")
    x = pca_reduce(x, PCA_DIMS, seed)
    n_jobs = n_jobs or os.cpu_count() or 1
    perplexity = clamp_perplexity(perplexity, x.shape[0])
    if backend == "opentsne":
        try:
            return _opentsne_map(x, n_components, perplexity, seed, init, n_jobs, reorganise, neighbours)
        except ImportError:
            warnings.warn("openTSNE is not installed; using scikit-learn's slower TSNE.", stacklevel=2)
    return _sklearn_map(x, n_components, perplexity, seed, init, n_jobs, reorganise)


def _opentsne_map(
    x: NDArray,
    n_components: int,
    perplexity: float,
    seed: int,
    init: NDArray | None,
    n_jobs: int,
    reorganise: bool,
    neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> NDArray[np.float64]:
    from openTSNE import TSNEEmbedding, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    n = x.shape[0]
    # Exact neighbours from the project's matmul kNN: faster than openTSNE's approximate index on
    # PCA-reduced data (0.3 s vs 3 s at 10,000 points), and exact. This cost is paid warm or cold.
    needed = min(n - 1, int(3 * perplexity))
    if neighbours is not None and neighbours[1].shape[1] >= needed:
        distances, found = neighbours[0][:, :needed], neighbours[1][:, :needed]
    else:
        distances, found = knn_search(torch.from_numpy(x), torch.from_numpy(x), needed, exclude_self=True)
    affinities = affinity.PerplexityBasedNN(
        perplexity=perplexity,
        knn_index=PrecomputedNeighbors(found.contiguous().numpy(), distances.double().contiguous().numpy()),
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    # FFT pays off from ~10,000 points and supports 2-D only; Barnes-Hut is faster below that.
    gradient = "fft" if n_components == 2 and n >= FFT_FROM else "bh"
    if init is None:
        start = initialization.pca(x, n_components=n_components, random_state=seed)
    else:
        start = np.array(init, dtype=np.float64)  # already at a converged scale: no rescaling
    embedding = TSNEEmbedding(
        start,
        affinities,
        negative_gradient_method=gradient,
        theta=BH_THETA,
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    if init is None:
        embedding = embedding.optimize(EARLY_EXAGGERATION_ITERS, exaggeration=12, momentum=0.5)
        embedding = embedding.optimize(ITERS, momentum=0.8)
    else:
        if reorganise:
            embedding = embedding.optimize(WARM_EXAGGERATION_ITERS, exaggeration=WARM_EXAGGERATION, momentum=0.5)
        embedding = embedding.optimize(WARM_ITERS, momentum=0.8)
    return np.asarray(embedding, dtype=np.float64)


def _sklearn_map(
    x: NDArray, n_components: int, perplexity: float, seed: int, init: NDArray | None, n_jobs: int, reorganise: bool
) -> NDArray[np.float64]:
    from sklearn.manifold import TSNE

    start: Any = "pca" if init is None else np.array(init, dtype=np.float32)
    tsne = TSNE(
        n_components=n_components,
        perplexity=perplexity,
        init=start,
        # Warm: scikit-learn's first phase is 250 iterations, mildly exaggerated or plain; then 100.
        early_exaggeration=12.0 if init is None else (WARM_EXAGGERATION if reorganise else 1.0),
        max_iter=1000 if init is None else 350,
        method="barnes_hut",  # n_components is 2 or 3
        random_state=seed,
        n_jobs=n_jobs,
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def neighbours_kept(before: NDArray, after: NDArray) -> float:
    """The mean share of each row's neighbours in ``before`` (N, k) that are still among its
    neighbours in ``after`` (N, k'): 1 when nothing changed."""
    if before.shape[0] != after.shape[0] or before.shape[1] == 0:
        return 0.0
    return float((before[:, :, None] == after[:, None, :]).any(axis=2).mean())


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


def trustworthiness(
    vectors: NDArray | torch.Tensor,
    embedding: NDArray,
    k: int = 10,
    chunk_size: int = 256,
    map_neighbours: torch.Tensor | None = None,
) -> float:
    """How far the map's k-neighbourhoods are true neighbourhoods of the (N, D) vectors (1 = all).

    Venna and Kaski's measure, as scikit-learn's ``trustworthiness`` computes it, but in chunks of
    ``chunk_size`` rows on torch: (chunk, N) distances at a time instead of a full (N, N) ranking.
    Each map neighbour j of i that is not among i's k nearest in the vectors costs r(i, j) - k,
    where r is its rank by distance in the vectors. ``map_neighbours`` (N, >= k), nearest first,
    saves the search in the map when the caller has it already.
    """
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    points = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
    n = x.shape[0]
    if not 0 < k < n / 2:
        raise ValueError(f"Expected `k` to be in (0, N / 2) = (0, {n / 2}), but got {k}.")
    if map_neighbours is None:
        map_neighbours = knn_search(points, points, k, exclude_self=True, chunk_size=chunk_size)[1]
    map_neighbours = map_neighbours[:, :k]
    penalty = 0.0
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n))
        distances = torch.cdist(x[rows], x).pow_(2)
        distances[torch.arange(len(rows)), rows] = float("inf")  # a point is not its own neighbour
        to_neighbours = distances.gather(1, map_neighbours[rows])  # (chunk, k)
        ranks = (distances[:, None, :] < to_neighbours[:, :, None]).sum(dim=2) + 1  # (chunk, k)
        penalty += float((ranks - k).clamp_min(0).sum())
    return 1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty


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
        backend: ``"opentsne"`` or ``"sklearn"``.
        n_jobs: threads for the fit; default all cores.
    """

    def __init__(
        self, perplexity: float = 30.0, seed: int = 0, backend: Backend = "opentsne", n_jobs: int | None = None
    ):
        self.perplexity = perplexity
        self.seed = seed
        self.backend: Backend = backend
        self.n_jobs = n_jobs
        self._previous: dict[tuple[str, int], tuple[NDArray, NDArray]] = {}  # (layer, dims) -> (indices, map)
        self._clamp_warned = False
        self._cache: ResultCache[NDArray] = ResultCache()
        self._measures: ResultCache[Any] = ResultCache()
        # layer -> (indices, (N, 15) nearest neighbours) of the vectors last mapped before this
        # round, and this round's (indices, neighbours, changed); not checkpointed (a resumed run
        # treats its first warm maps as changed).
        self._neighbours: dict[str, tuple[NDArray, NDArray]] = {}
        self._this_round: dict[str, tuple[NDArray, NDArray, bool]] = {}

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
        self._previous[(layer, dims)] = (indices, points)
        return points

    def measured(self, key: tuple[torch.Tensor, ...], measure: Callable[[], T]) -> T:
        """``measure()`` of a map, or its earlier result for bit-identical ``key`` tensors (the
        map and what it was measured against): a reused map is not measured again."""
        return self._measures.get(key, measure)

    def next_round(self) -> None:
        """Keep only the maps made since the last call for reuse (one epoch's, so memory stays flat)."""
        self._cache.next_round()
        self._measures.next_round()
        self._neighbours.update({layer: (i, n) for layer, (i, n, _) in self._this_round.items()})
        self._this_round = {}

    def _fit(
        self,
        layer: str,
        dims: int,
        indices: NDArray,
        vectors: NDArray | torch.Tensor,
        neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> NDArray:
        changed = self._changed(layer, indices, vectors, neighbours)
        init = self.previous(layer, dims, indices)
        start = init
        flat = self.previous(layer, 2, indices) if dims == 3 and init is None else None
        if flat is not None:
            start = lift_map(flat, vectors, self.seed)
        # Warn at the first clamp only, not for every layer and epoch.
        perplexity = clamp_perplexity(self.perplexity, len(indices), warn=not self._clamp_warned)
        self._clamp_warned |= perplexity != self.perplexity
        reorganise = changed or init is None
        points = tsne_map(
            vectors, dims, perplexity, self.seed, start, self.n_jobs, self.backend, reorganise, neighbours
        )
        return points if init is None else align_map(points, init)

    def _changed(
        self,
        layer: str,
        indices: NDArray,
        vectors: NDArray | torch.Tensor,
        found: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> bool:
        """Whether ``layer``'s samples kept less than :data:`KEPT_TO_SETTLE` of their nearest
        neighbours since its last map (or it has none of these samples); decided once a round."""
        if layer not in self._this_round:
            compared = min(NEIGHBOURS_COMPARED, len(indices) - 1)
            if found is not None and found[1].shape[1] >= compared:
                neighbours = found[1][:, :compared].numpy()
            else:
                x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
                neighbours = knn_search(x, x, compared, exclude_self=True)[1].numpy()
            earlier = self._neighbours.get(layer)
            same_samples = earlier is not None and np.array_equal(earlier[0], indices)
            kept = neighbours_kept(earlier[1], neighbours) if earlier is not None and same_samples else 0.0
            self._this_round[layer] = (indices, neighbours, kept < KEPT_TO_SETTLE)
        return self._this_round[layer][2]

    def previous(self, layer: str, dims: int, indices: NDArray | torch.Tensor) -> NDArray | None:
        """The last map of ``layer`` in ``dims`` dimensions if it was made of the samples ``indices``."""
        earlier = self._previous.get((layer, dims))
        if earlier is None or not np.array_equal(earlier[0], np.asarray(indices)):
            return None
        return earlier[1]

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and strings, so that checkpoints load with ``weights_only=True``."""
        # list() copies in one step: a checkpoint may be saved while the worker adds this epoch's maps.
        previous = list(self._previous.items())
        return {
            f"{layer}\t{dims}": {"indices": torch.from_numpy(indices), "map": torch.from_numpy(points)}
            for (layer, dims), (indices, points) in previous
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        previous = {}
        for key, value in state.items():
            layer, dims = key.rsplit("\t", 1)
            previous[(layer, int(dims))] = (
                torch.as_tensor(value["indices"]).numpy().astype(np.int64),
                torch.as_tensor(value["map"]).numpy().astype(np.float64),
            )
        self._previous = previous  # in one step: a checkpoint may be saved meanwhile (the worker loads)
