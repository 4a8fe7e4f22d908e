"""One epoch's t-SNE work for every layer: maps, their quality, figures and projector entries.

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
from lightning_featviz.analysis.knn import NeighbourStats, knn_purity, knn_search
from lightning_featviz.capture.bank import BankData
from lightning_featviz.outputs.projector import ProjectorEntry
from lightning_featviz.render.map_plot import MapPanel, map_image


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


def map_images(
    maps: dict[str, LayerMaps],
    labels: np.ndarray,
    class_names: Sequence[str],
    layer_purity: dict[str, float],
    k: int,
    epoch: int,
    ringed: dict[str, np.ndarray] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """The pictures of one epoch, (H, W, 3) uint8, keyed by (kind, name).

    Per layer and dimension: ``("tsne_2d", layer)``, ``("tsne_3d", layer)``. With two or more
    layers: ``("tsne_2d", "<first>_vs_<last>")`` and its 3-D twin, and the progression of every
    layer in order ``("tsne_2d", "all_layers")``. ``ringed`` maps a layer to (N,) bool, the points
    ringed on its 2-D maps.
    """

    def panel(layer: str, d: int) -> MapPanel:
        title = f"{layer}: purity@{k} {layer_purity[layer]:.2f} (map {maps[layer].purity[d]:.2f})"
        marked = (ringed or {}).get(layer) if d == 2 else None
        return MapPanel(title, maps[layer].maps[d], labels, class_names, marked)

    images: dict[tuple[str, str], np.ndarray] = {}
    dims = sorted({d for layer_maps in maps.values() for d in layer_maps.maps})
    for d in dims:
        layers = [layer for layer in maps if d in maps[layer].maps]
        kind = f"tsne_{d}d"
        for layer in layers:
            images[(kind, layer)] = map_image([panel(layer, d)], f"Epoch {epoch}: {d}-D t-SNE of {layer}")
        if len(layers) >= 2:
            first, last = layers[0], layers[-1]
            images[(kind, f"{first}_vs_{last}")] = map_image(
                [panel(first, d), panel(last, d)], f"Epoch {epoch}: {d}-D t-SNE, {first} vs {last}"
            )
        if d == 2 and len(layers) >= 2:
            images[(kind, "all_layers")] = map_image(
                [panel(layer, d) for layer in layers], f"Epoch {epoch}: every layer in network order", columns=4
            )
    return images


LATEST = "latest"  #: the projector entries of the latest epoch start with this; the projector lists them first
PREVIOUS = "previous"  #: entries kept from earlier epochs (every n-th) start with this


def projector_name(layer: str, what: str, epoch: int, latest: bool) -> str:
    """A projector entry's name, e.g. ``latest/epoch_007/avgpool/tsne_2d``.

    The projector lists entries alphabetically and opens on the first: ``latest/…`` sorts before
    ``previous/…``, and within an epoch a layer's 2-D map (``tsne_2d``) before its 3-D map and its
    vectors (``vectors``).
    """
    return f"{LATEST if latest else PREVIOUS}/epoch_{epoch:03d}/{layer}/{what}"


def class_column(names: Sequence[str]) -> list[str]:
    """Class names as the projector should show them: ``"class 3"`` when every name looks like a number.

    The projector labels, searches and edits by the first metadata column that is not numeric;
    digits "0".."9" count as numeric, so they get a word in front to stay the default.
    """

    def numeric(name: str) -> bool:
        try:
            float(name)
        except ValueError:
            return False
        return True

    return [f"class {name}" for name in names] if names and all(numeric(n) for n in names) else list(names)


def flat_map(points: np.ndarray) -> np.ndarray:
    """An (N, 2) map as (N, 3) with z = 0 (the projector draws a 2-column tensor as an empty canvas);
    an (N, 3) map unchanged."""
    if points.shape[1] >= 3:
        return points
    return np.concatenate([points, np.zeros((len(points), 3 - points.shape[1]), dtype=points.dtype)], axis=1)


def projector_entries(
    bank: BankData,
    stats: dict[str, NeighbourStats],
    maps: dict[str, LayerMaps],
    class_names: Sequence[str],
    k: int,
    epoch: int,
    extra_columns: dict[str, dict[str, Sequence[object]]] | None = None,
    keep: bool = True,
) -> list[ProjectorEntry]:
    """Per layer: its vectors, and each t-SNE map as an embedding of its own (so the projector can
    show exactly the map the figures show; 2-D maps as (N, 3) with z = 0), sharing one metadata
    table with a header whose first text column is the class.

    Every entry comes as ``latest/epoch_<e>/<layer>/<tsne_2d|tsne_3d|vectors>`` and, when ``keep``
    (an epoch kept for later comparison), once more as ``previous/…``.
    ``extra_columns`` maps a layer to more columns (name -> N values) for its table."""
    labels, preds = bank.labels.tolist(), bank.preds.tolist()
    thumbnails = bank.thumbnails if bank.thumbnails.ndim == 4 else None
    shown = class_column(class_names)
    entries = []
    for layer, layer_stats in stats.items():
        columns: dict[str, Sequence[object]] = {
            "class": [shown[y] for y in labels],
            "prediction": [shown[p] if p >= 0 else "-" for p in preds],
            "correct": ["-" if p < 0 else str(p == y).lower() for p, y in zip(preds, labels, strict=True)],
            "index": bank.indices.tolist(),
            f"purity@{k}": [round(v, 4) for v in layer_stats.purity.tolist()],
            **(extra_columns or {}).get(layer, {}),
        }
        rows = list(zip(*columns.values(), strict=True))
        named = {"vectors": bank.vectors[layer].numpy()}
        for d, points in (maps[layer].maps if layer in maps else {}).items():
            named[f"tsne_{d}d"] = flat_map(points)
        for latest in (True, False) if keep else (True,):
            entries += [
                ProjectorEntry(projector_name(layer, what, epoch, latest), vectors, list(columns), rows, thumbnails)
                for what, vectors in named.items()
            ]
    return entries
