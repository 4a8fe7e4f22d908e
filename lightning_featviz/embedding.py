"""t-SNE maps of layer vectors, and the measures that say how far to trust them.

Arrays in, arrays out; no Lightning, no plotting. openTSNE does the work: its FFT-accelerated
gradient in 2-D from 10,000 points, Barnes-Hut below that and in 3-D (FFT supports 2 output
dimensions only). Wide layers are
reduced by PCA first. A map can start from an earlier one (warm start, no early exaggeration),
and :func:`align_map` rotates/reflects it onto the earlier map so successive epochs compare.
Every stochastic step takes a seed; the global RNGs are never touched.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.linalg import orthogonal_procrustes
from sklearn.manifold import trustworthiness as _trustworthiness

PCA_DIMS = 50
EARLY_EXAGGERATION_ITERS = 250
ITERS = 500
WARM_ITERS = 250
FFT_FROM = 10_000


def pca_reduce(vectors: NDArray | torch.Tensor, dims: int = PCA_DIMS, seed: int = 0) -> NDArray[np.float32]:
    """Project (N, D) vectors onto their top ``dims`` principal components: (N, min(dims, N, D)).

    Uses ``torch.pca_lowrank`` (randomised) under a forked, seeded RNG. Narrow inputs are only centred.
    """
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    x = x - x.mean(dim=0, keepdim=True)
    q = min(dims, *x.shape)
    if x.shape[1] <= dims:
        return x.numpy()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=q, center=False, niter=4)
    return (x @ v[:, :q]).numpy()


def clamp_perplexity(perplexity: float, n_samples: int) -> float:
    """The largest usable perplexity for ``n_samples`` points: below (N - 1) / 3, warned when lowered."""
    limit = max((n_samples - 1) / 3.0 - 1e-6, 1.0)
    if perplexity > limit:
        warnings.warn(f"Perplexity {perplexity} is too large for {n_samples} samples; using {limit:.1f}.", stacklevel=2)
        return limit
    return perplexity


def tsne_map(
    vectors: NDArray | torch.Tensor,
    n_components: int = 2,
    perplexity: float = 30.0,
    seed: int = 0,
    init: NDArray | None = None,
    n_jobs: int | None = None,
) -> NDArray[np.float64]:
    """A t-SNE map (N, n_components) of (N, D) vectors.

    Cold (``init=None``): PCA initialisation, 250 early-exaggeration iterations, then 500. Warm
    (``init`` an earlier map of the same points, (N, n_components)): starts there as it is and
    runs 250 plain iterations, since the layout already exists.

    Raises:
        ValueError: fewer than 4 points, non-finite values, or ``n_components`` not 2 or 3.
    """
    from openTSNE import TSNEEmbedding, affinity, initialization

    x = pca_reduce(vectors, PCA_DIMS, seed)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"Expected at least 4 points for a t-SNE map, but got {n}.")
    if not np.isfinite(x).all():
        raise ValueError("Expected finite vectors for a t-SNE map, but got NaN or Inf.")
    if n_components not in (2, 3):
        raise ValueError(f"Expected `n_components` to be 2 or 3, but got {n_components}.")
    n_jobs = n_jobs or os.cpu_count() or 1
    perplexity = clamp_perplexity(perplexity, n)
    affinities = affinity.PerplexityBasedNN(
        x, perplexity=perplexity, method="auto", n_jobs=n_jobs, random_state=seed, verbose=False
    )
    # FFT pays off from ~10,000 points and supports 2-D only; Barnes-Hut is faster below that.
    gradient = "fft" if n_components == 2 and n >= FFT_FROM else "bh"
    if init is None:
        start = initialization.pca(x, n_components=n_components, random_state=seed)
    else:
        start = np.array(init, dtype=np.float64)  # already at a converged scale: no rescaling
    embedding = TSNEEmbedding(
        start, affinities, negative_gradient_method=gradient, n_jobs=n_jobs, random_state=seed, verbose=False
    )
    if init is None:
        embedding = embedding.optimize(EARLY_EXAGGERATION_ITERS, exaggeration=12, momentum=0.5)
        embedding = embedding.optimize(ITERS, momentum=0.8)
    else:
        embedding = embedding.optimize(WARM_ITERS, momentum=0.8)
    return np.asarray(embedding)


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


def trustworthiness(vectors: NDArray | torch.Tensor, embedding: NDArray, k: int = 10) -> float:
    """How far the map's k-neighbourhoods are true neighbourhoods of the vectors (1 = all), scikit-learn's measure."""
    return float(_trustworthiness(np.asarray(vectors, dtype=np.float32), embedding, n_neighbors=k))
