"""One epoch's t-SNE maps of a layer and how far to trust them (drawing them is the report's job).

Plain functions over a :class:`~lightning_featviz.capture.bank.BankData` and the kNN results; the
callback only decides when to call them and where the results go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from lightning_featviz.analysis.embedding import MapTracker, map_displacement, trustworthiness
from lightning_featviz.analysis.knn import knn_purity, knn_search
from lightning_featviz.capture.bank import BankData


@dataclass
class LayerMaps:
    """A layer's t-SNE maps of one epoch and how far to trust them.

    Attributes:
        maps: dims -> (N, dims) map, rows in bank order.
        trust: dims -> trustworthiness@k of the map (1 = every map neighbourhood is a true one).
        purity: dims -> kNN class purity@k measured in the map (compare with the layer's own).
        displacement: dims -> mean distance points moved since the layer's previous map of the
            same samples, over that map's RMS radius (absent for a first map).
    """

    maps: dict[int, np.ndarray] = field(default_factory=dict)
    trust: dict[int, float] = field(default_factory=dict)
    purity: dict[int, float] = field(default_factory=dict)
    displacement: dict[int, float] = field(default_factory=dict)


def fit_layer_maps(tracker: MapTracker, layer: str, bank: BankData, dims: Sequence[int], k: int) -> LayerMaps:
    """Fit (warm-started, aligned) maps of ``layer`` in each of ``dims`` and measure them.

    Raises:
        ValueError: from :func:`~lightning_featviz.analysis.embedding.tsne_map` (too few points, constant
            or non-finite vectors).
    """
    vectors = bank.vectors[layer].float()
    result = LayerMaps()
    indices = bank.indices.numpy()
    for d in dims:
        previous = tracker.previous(layer, d, indices)
        points = tracker.fit(layer, d, indices, vectors)
        result.maps[d] = points
        if previous is not None:
            result.displacement[d] = map_displacement(points, previous)
        key = (vectors, torch.from_numpy(points), bank.labels, torch.tensor(k))
        result.trust[d], result.purity[d] = tracker.measured(key, partial(_measure, vectors, points, bank.labels, k))
    return result


def _measure(vectors: torch.Tensor, points: np.ndarray, labels: torch.Tensor, k: int) -> tuple[float, float]:
    """A map's trustworthiness@k and kNN class purity@k (N, D vectors; N, c map; N labels)."""
    on_map = torch.as_tensor(points).float()
    neighbours = knn_search(on_map, on_map, k, exclude_self=True)[1]  # (N, k), used by both measures
    trust = trustworthiness(vectors, points, k=min(k, (len(points) - 1) // 2), map_neighbours=neighbours)
    return trust, float(knn_purity(labels[neighbours], labels).mean())
