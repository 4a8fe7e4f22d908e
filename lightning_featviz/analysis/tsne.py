"""t-SNE maps of layer vectors, and how far to trust them.

Arrays in, arrays out; no Lightning, no plotting. openTSNE does the work: its FFT-accelerated
gradient in 2-D from 10,000 points, Barnes-Hut below that and in 3-D (FFT supports 2 output
dimensions only), on affinities from the project's exact kNN. Wide layers are reduced by PCA
first. A map can start from an earlier one (warm start, a short and mild exaggeration); keeping
maps comparable across epochs is :mod:`lightning_featviz.analysis.embedding`'s job. Every
stochastic step takes a seed; the global RNGs are never touched.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from lightning_featviz.analysis.knn import knn_search

#: The t-SNE implementations ``options.MapOptions.backend`` names; the maps are openTSNE's whatever it says (the option
#: goes with the options' rework: docs/architecture.md).
Backend = Literal["opentsne", "sklearn"]

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
    reorganise: bool = True,
    neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> NDArray[np.float64]:
    """A t-SNE map (N, n_components) of (N, D) vectors.

    Vectors wider than 50 are reduced by PCA first. Cold (``init=None``): PCA initialisation,
    150 early-exaggeration iterations, then 250. Warm (``init`` an earlier map of the same
    points, (N, n_components)): starts there as it is and runs 50 iterations at a mild
    exaggeration (4, so points can reach neighbours they gained), then 60 plain; with
    ``reorganise=False`` (the vectors' neighbourhoods barely changed) only the 60 plain ones, so
    the map stays where it was. One implementation: openTSNE (a core dependency), FFT gradients for 2-D
    maps of 10,000 points or more, Barnes-Hut below and for every 3-D map (FFT supports 2-D only).
    ``neighbours``: ``(distances, indices)`` (N, K) of the
    vectors, nearest first, leave-one-out (the epoch's one search, :mod:`lightning_featviz.analysis.neighbourhoods`):
    openTSNE's affinities use their first 3 · perplexity instead of a search of their own (which is in the
    50 PCA dimensions, when K is smaller).

    Raises:
        ValueError: fewer than 4 points, non-finite or constant vectors, ``n_components`` not 2
            or 3, or ``init`` of the wrong shape.
    """
    if n_components not in (2, 3):
        raise ValueError(f"Expected `n_components` to be 2 or 3, but got {n_components}.")
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
    return _opentsne_map(x, n_components, perplexity, seed, init, n_jobs, reorganise, neighbours)


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
