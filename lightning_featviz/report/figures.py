"""What one analysed epoch shows: its figures, drawn from the epoch's results (nothing is computed here but
what a picture needs: the analysis filled :class:`~lightning_featviz.analysis.results.EpochResults`).

No Lightning here, and no file: figures are (H, W, 3) uint8 arrays keyed by ``(kind, name)``; the caller turns that
into a tag and hands the encoded picture to the sinks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_featviz.analysis.label_issues import LabelIssues
from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster, caption
from lightning_featviz.capture.bank import BankData
from lightning_featviz.render.cartography import cartography_image
from lightning_featviz.render.grids import NeighbourGrid, neighbour_grid_image
from lightning_featviz.render.maps import MapPanel, map_image
from lightning_featviz.render.purity_charts import class_purity_image, confusion_image, purity_depth_image

MAX_DEFAULT_QUERIES = 10


def query_rows(bank: BankData, query_indices: Sequence[int] | None) -> Tensor:
    """Bank rows of the given dataset indices that were kept; else the first kept sample of each class (≤ 10)."""
    if query_indices is not None:
        kept = set(bank.indices.tolist())
        present = [i for i in query_indices if i in kept]
        if present:
            return bank.rows_of(present)
    classes = bank.labels.unique()[:MAX_DEFAULT_QUERIES]
    return torch.stack([torch.nonzero(bank.labels == c)[0, 0] for c in classes])


def neighbour_grid_images(results: EpochResults, rows: Tensor) -> Iterator[tuple[tuple[str, str], np.ndarray]]:
    """(H, W, 3) uint8 images, drawn one at a time: per layer ``("neighbours", layer)``, and the first and
    last layer side by side."""
    bank, searched = results.bank, results.searched
    grids = {
        layer: NeighbourGrid(
            title=f"{layer} (purity@{results.k} {stats.mean_purity:.2f})",
            query_images=bank.thumbnails[rows],
            neighbour_images=searched.thumbnails[stats.indices[rows]],
            query_labels=bank.labels[rows],
            neighbour_labels=searched.labels[stats.indices[rows]],
            class_names=results.class_names,
        )
        for layer, stats in results.stats.items()
    }
    epoch = results.epoch
    for layer, grid in grids.items():
        yield ("neighbours", layer), neighbour_grid_image([grid], f"Epoch {epoch}")
    first, last = list(grids)[0], list(grids)[-1]
    if first != last:
        title = f"Epoch {epoch}: the same queries in {first} and {last}"
        yield ("neighbours", f"{first}_vs_{last}"), neighbour_grid_image([grids[first], grids[last]], title)


def gallery_image(
    results: EpochResults,
    layer: str,
    found: WrongCluster,
    min_share: float,
    max_rows: int,
    issues: LabelIssues | None = None,
) -> np.ndarray:
    """The top flagged samples of ``layer`` (in the wrong-cluster list's order; with ``issues`` each caption names
    the label-issue score), captioned in words, each followed by its neighbours: an (H, W, 3) uint8 image."""
    n, k = len(results.bank), results.k
    title = (
        f"{layer}: {len(found)} of {n} images sit in another class's cluster "
        f"(at least {int(np.ceil(min_share * k - 1e-9))} of {k} neighbours)"
    )
    grid = gallery_grid(
        found,
        results.bank,
        results.searched,
        results.stats[layer].indices,
        results.class_names,
        title,
        max_rows,
        issues,
    )
    return neighbour_grid_image([grid], f"Epoch {results.epoch}: images in the wrong semantic cluster")


def confusion_images(results: EpochResults) -> dict[tuple[str, str], np.ndarray]:
    """Per layer with a matrix in ``results.confusion``, ``("neighbour_confusion", layer)``: the neighbourhood
    confusion matrix and per-class purity, (H, W, 3) uint8."""
    images = {}
    for layer in results.stats:
        if layer in results.confusion:
            title = f"Epoch {results.epoch}: {layer}, where each class's neighbours come from"
            confusion = np.nan_to_num(results.confusion[layer].numpy())
            images[("neighbour_confusion", layer)] = confusion_image(confusion, results.class_names, title)
    return images


def class_purity_images(results: EpochResults) -> dict[tuple[str, str], np.ndarray]:
    """Per layer ``("purity_by_class", layer)``: the purity of each class (of the lowest and highest
    when there are many), (H, W, 3) uint8: one figure instead of C scalars."""
    return {
        ("purity_by_class", layer): class_purity_image(
            stats.class_purity.numpy(), results.class_names, f"Epoch {results.epoch}: {layer}, purity of each class"
        )
        for layer, stats in results.stats.items()
    }


def dynamics_image(results: EpochResults) -> np.ndarray | None:
    """The dataset cartography of the label-issue layer's tracked samples up to this epoch (confidence against
    variability), one panel per layer (the twins left out) with the samples in that layer's wrong cluster
    flagged; None where the epoch has no training dynamics, or one epoch of them (a post-hoc analysis, a fit's
    first epoch): variability, the y axis, is 0 for every sample there."""
    dynamics = results.dynamics
    if dynamics is None or dynamics.history.first_epoch == dynamics.epochs[-1]:
        return None
    flagged = {}
    for layer in results.stats:
        found = results.wrong_cluster.get(layer)
        if found is None:
            continue
        marked = np.zeros(len(dynamics.history), dtype=bool)
        positions = dynamics.positions(results.bank.indices[found.rows]).numpy()
        marked[positions[positions >= 0]] = True
        flagged[layer] = marked
    heading = (
        f"Epoch {results.epoch}: dataset cartography of {dynamics.layer}'s label issues "
        f"(epochs {dynamics.history.first_epoch}-{dynamics.epochs[-1]}), by layer"
    )
    return cartography_image(dynamics.confidence.numpy(), dynamics.variability.numpy(), flagged, heading)


def depth_image(results: EpochResults, history: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Purity by layer order this epoch, and the layer × epoch purity heatmap of ``history`` rows
    (``{"epoch", "layer", "knn_purity"}``; later rows of the same epoch and layer win)."""
    layers = list(results.stats)
    epochs = sorted({int(row["epoch"]) for row in history} | {results.epoch})
    grid = np.full((len(layers), len(epochs)), np.nan)
    for row in history:
        if row["layer"] in layers:
            grid[layers.index(str(row["layer"])), epochs.index(int(row["epoch"]))] = float(row["knn_purity"])
    purity = [results.stats[layer].mean_purity for layer in layers]
    return purity_depth_image(layers, purity, grid, epochs, results.k, results.epoch)


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
        subtitle = f"purity@{k} {layer_purity[layer]:.2f}, map {maps[layer].purity[d]:.2f}"
        marked = (ringed or {}).get(layer) if d == 2 else None
        rows = maps[layer].rows
        if rows is not None:  # a large bank's subsample
            marked = marked[rows] if marked is not None else None
            return MapPanel(layer, maps[layer].maps[d], labels[rows], class_names, marked, subtitle)
        return MapPanel(layer, maps[layer].maps[d], labels, class_names, marked, subtitle)

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


def _two_places_down(score: float) -> str:
    """``score`` to two places, rounded down (0.497 is "0.49", not the "0.50" at which a label error is likely)."""
    return f"{math.floor(score * 100 + 1e-6) / 100:.2f}"


def gallery_grid(
    found: WrongCluster,
    bank: BankData,
    searched: BankData,
    neighbours: Tensor,
    class_names: Sequence[str],
    title: str,
    max_rows: int = 8,
    issues: LabelIssues | None = None,
) -> NeighbourGrid:
    """The top ``max_rows`` flagged samples, each captioned in words and followed by its neighbours.

    ``neighbours`` (N, k) are rows of ``searched`` (the bank itself, or the training reference).
    The samples keep ``found``'s ranking, the one of the wrong-cluster CSV, the text table and the FEATVIZ tab's
    review; with ``issues`` (label-issue scores of the bank's N rows) each caption ends with the score and category.
    """
    ranks = list(range(len(found)))
    captions = []
    for rank in ranks[:max_rows]:
        row = int(found.rows[rank])
        words = caption(rank, found, int(bank.labels[row]), class_names)
        pred, confidence = int(bank.preds[row]), float(bank.confidences[row])
        said = "" if pred < 0 else f"; model says {class_names[pred]}"
        said += "" if pred < 0 or confidence != confidence else f" ({confidence:.0%})"
        if issues is not None:
            said += f"; label issue {_two_places_down(float(issues.scores[row]))}: {issues.words(row, class_names)}"
        captions.append(f"#{int(bank.indices[row])}: {words}{said}")
    rows = found.rows[torch.as_tensor(ranks[:max_rows], dtype=torch.long)]
    return NeighbourGrid(
        title=title,
        query_images=bank.thumbnails[rows],
        neighbour_images=searched.thumbnails[neighbours[rows]],
        query_labels=bank.labels[rows],
        neighbour_labels=searched.labels[neighbours[rows]],
        class_names=class_names,
        row_captions=captions,
    )
