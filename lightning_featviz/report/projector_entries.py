"""What the TensorBoard projector shows of one epoch: per layer its vectors and t-SNE maps, with a metadata table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lightning_featviz.analysis.knn import NeighbourStats
from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.analysis.tsne import PCA_DIMS, pca_reduce
from lightning_featviz.capture.bank import BankData
from lightning_featviz.capture.warn import Warn
from lightning_featviz.outputs.projector import MAX_COLOURED_CLASSES, ProjectorEntry

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

    A layer mapped on a subsample (:attr:`~lightning_featviz.analysis.maps.LayerMaps.rows`) has entries of those
    rows only; and where the vectors would hold more than :data:`MAX_PROJECTOR_VALUES` values in all, layers
    wider than :data:`~lightning_featviz.analysis.tsne.PCA_DIMS` are written as their top principal
    components (what the projector's own PCA view shows; its t-SNE runs on those too)."""
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


def epoch_projector_entries(results: EpochResults, every_n_epochs: int, warn: Warn) -> list[ProjectorEntry]:
    """The epoch's projector entries (each layer of ``results.stats`` with its vectors and maps, the wrong cluster of
    each flagged sample as a column), to replace the latest ones; an epoch that is a multiple of ``every_n_epochs``
    is also kept under its own name (``previous/...``)."""
    names = results.class_names
    if len(names) > MAX_COLOURED_CLASSES:
        message = (
            f"{len(names)} classes: the projector colours points by label only up to {MAX_COLOURED_CLASSES}; "
            "the embeddings are written, search or filter by label there instead."
        )
        warn("projector-classes", message)
    columns: dict[str, dict[str, Sequence[object]]] = {}
    shown = class_column(names)  # as the projector's class column writes them
    for layer, found in results.wrong_cluster.items():
        cluster = ["-"] * len(results.bank)
        for row, other in zip(found.rows.tolist(), found.cluster.tolist(), strict=True):
            cluster[row] = shown[other]
        columns[layer] = {"wrong_cluster": cluster}
    keep = results.epoch % every_n_epochs == 0
    return projector_entries(
        results.bank, results.stats, results.maps, names, results.k, results.epoch, columns, keep=keep
    )
