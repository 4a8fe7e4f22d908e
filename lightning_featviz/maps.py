"""One epoch's t-SNE work for every layer: maps, their quality, figures and projector entries.

Plain functions over a :class:`~lightning_featviz.bank.BankData` and the kNN results; the
callback only decides when to call them and where the results go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from lightning_featviz.bank import BankData
from lightning_featviz.embedding import PCA_DIMS, MapTracker, map_displacement, pca_reduce
from lightning_featviz.knn import NeighbourStats, knn_purity, knn_search
from lightning_featviz.map_plot import MapPanel, map_image
from lightning_featviz.neighbourhoods import map_k, trustworthiness_estimate
from lightning_featviz.projector import ProjectorEntry


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
            of rows above :data:`~lightning_featviz.neighbourhoods.EXACT_TRUST_LIMIT` points).
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
    bank wide enough for a map (:func:`~lightning_featviz.neighbourhoods.map_k`), the change check, the
    t-SNE affinities and trustworthiness take their neighbours from it. ``rows`` (M,): map only these bank
    rows (a large bank's subsample, :func:`~lightning_featviz.neighbourhoods.map_rows`); the map's
    neighbours are then searched once, among them.

    Raises:
        ValueError: from :func:`~lightning_featviz.embedding.tsne_map` (too few points, constant
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
        rows = maps[layer].rows
        if rows is not None:  # a large bank's subsample
            marked = marked[rows] if marked is not None else None
            return MapPanel(title, maps[layer].maps[d], labels[rows], class_names, marked)
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


#: Above this many vector values in an epoch's projector files (rows x dims, all layers: about 10 bytes each
#: as text), wide layers are written as their top 50 principal components.
MAX_PROJECTOR_VALUES = 2_000_000


def _rows_of(maps: dict[str, LayerMaps], layer: str, n: int) -> torch.Tensor:
    """(M,) the bank rows of ``layer``'s projector entries: those its maps show."""
    rows = maps[layer].rows if layer in maps else None
    return torch.arange(n) if rows is None else torch.from_numpy(rows)


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
    ``extra_columns`` maps a layer to more columns (name -> N values) for its table.

    A layer mapped on a subsample (:attr:`LayerMaps.rows`) has entries of those rows only; and where the
    vectors would hold more than :data:`MAX_PROJECTOR_VALUES` values in all, layers wider than
    :data:`~lightning_featviz.embedding.PCA_DIMS` are written as their top principal components (what the
    projector's own PCA view shows; its t-SNE runs on those too)."""
    shown = class_column(class_names)
    entries = []
    chosen = {layer: _rows_of(maps, layer, len(bank)) for layer in stats}
    values = sum(len(chosen[layer]) * bank.vectors[layer].shape[1] for layer in stats)
    for layer, layer_stats in stats.items():
        rows_of_layer = chosen[layer]
        labels, preds = bank.labels[rows_of_layer].tolist(), bank.preds[rows_of_layer].tolist()
        thumbnails = bank.thumbnails[rows_of_layer] if bank.thumbnails.ndim == 4 else None
        extra = {
            name: [column[i] for i in rows_of_layer.tolist()]
            for name, column in (extra_columns or {}).get(layer, {}).items()
        }
        columns: dict[str, Sequence[object]] = {
            "class": [shown[y] for y in labels],
            "prediction": [shown[p] if p >= 0 else "-" for p in preds],
            "correct": ["-" if p < 0 else str(p == y).lower() for p, y in zip(preds, labels, strict=True)],
            "index": bank.indices[rows_of_layer].tolist(),
            f"purity@{k}": [round(v, 4) for v in layer_stats.purity[rows_of_layer].tolist()],
            **extra,
        }
        rows = list(zip(*columns.values(), strict=True))
        vectors = bank.vectors[layer][rows_of_layer].float()
        if values > MAX_PROJECTOR_VALUES and vectors.shape[1] > PCA_DIMS:
            named = {"vectors": pca_reduce(vectors, PCA_DIMS)}
        else:
            named = {"vectors": vectors.numpy()}
        for d, points in (maps[layer].maps if layer in maps else {}).items():
            named[f"tsne_{d}d"] = flat_map(points)
        for latest in (True, False) if keep else (True,):
            entries += [
                ProjectorEntry(projector_name(layer, what, epoch, latest), vectors, list(columns), rows, thumbnails)
                for what, vectors in named.items()
            ]
    return entries
