"""What one analysed epoch shows: figures, tables and scalars built from the bank and kNN results.

No Lightning here: the callback (or a post-hoc analysis) hands in an :class:`EpochResults` and
writes what comes back. Figures are keyed by ``(kind, name)``; the caller turns that into a tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_featviz.bank import BankData
from lightning_featviz.knn import NeighbourStats
from lightning_featviz.label_issues import (
    IN_SAMPLE_MODEL_WEIGHT,
    LabelIssues,
    Warn,
    find_label_issues,
    label_issue_k,
)
from lightning_featviz.outliers import (
    WrongCluster,
    find_wrong_cluster,
    gallery_grid,
    neighbourhood_confusion,
)
from lightning_featviz.plots import (
    NeighbourGrid,
    class_purity_image,
    confusion_image,
    neighbour_grid_image,
    purity_depth_image,
)

MAX_DEFAULT_QUERIES = 10


@dataclass
class EpochResults:
    """One analysed epoch.

    Attributes:
        bank: the kept validation samples (the queries), N rows.
        searched: what they were searched among: the bank itself (leave-one-out) or the
            training reference.
        stats: layer -> kNN results of the bank's rows against ``searched``.
        class_names: name of each class id (C).
        k: neighbours per sample.
        epoch: the epoch the results belong to.
    """

    bank: BankData
    searched: BankData
    stats: dict[str, NeighbourStats]
    class_names: list[str]
    k: int
    epoch: int

    def neighbour_labels(self, layer: str) -> Tensor:
        """(N, k) labels of each sample's neighbours in ``layer``."""
        return self.searched.labels[self.stats[layer].indices]


def query_rows(bank: BankData, query_indices: Sequence[int] | None) -> Tensor:
    """Bank rows of the given dataset indices that were kept; else the first kept sample of each class (≤ 10)."""
    if query_indices is not None:
        kept = set(bank.indices.tolist())
        present = [i for i in query_indices if i in kept]
        if present:
            return bank.rows_of(present)
    classes = bank.labels.unique()[:MAX_DEFAULT_QUERIES]
    return torch.stack([torch.nonzero(bank.labels == c)[0, 0] for c in classes])


def neighbour_grid_images(results: EpochResults, rows: Tensor) -> dict[tuple[str, str], np.ndarray]:
    """(H, W, 3) uint8 images: per layer ``("neighbours", layer)``, and the first and last layer side by side."""
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
    images = {("neighbours", layer): neighbour_grid_image([grid], f"Epoch {epoch}") for layer, grid in grids.items()}
    first, last = list(grids)[0], list(grids)[-1]
    if first != last:
        images[("neighbours", f"{first}_vs_{last}")] = neighbour_grid_image(
            [grids[first], grids[last]], f"Epoch {epoch}: the same queries in {first} and {last}"
        )
    return images


def wrong_clusters(results: EpochResults, min_share: float) -> dict[str, WrongCluster]:
    """Per layer, the samples that sit in another class's cluster."""
    return {
        layer: find_wrong_cluster(
            results.neighbour_labels(layer), results.bank.labels, len(results.class_names), min_share
        )
        for layer in results.stats
    }


def known_probabilities(bank: BankData) -> Tensor | None:
    """The bank's (N, C) class probabilities, or None when no batch gave logits."""
    return bank.probabilities.float() if bank.probabilities.shape[1] > 1 else None


def label_issues_of(results: EpochResults, layer: str, warn: Warn) -> tuple[LabelIssues, LabelIssues | None]:
    """Label issues in ``layer``: of the validation samples (searched like the kNN statistics: among
    themselves, or among the training reference), and of the training reference's samples among
    themselves, with the model's in-sample probabilities tempered (None without one)."""
    bank, searched, num_classes = results.bank, results.searched, len(results.class_names)
    vectors = bank.vectors[layer].float()
    if searched is bank:
        stats = results.stats[layer]
        k = label_issue_k(bank.labels)
        shared = stats.neighbours(k) if stats.leave_one_out and stats.metric == "euclidean" else None
        probabilities = known_probabilities(bank)
        issues = find_label_issues(vectors, bank.labels, num_classes, probabilities, k, warn=warn, neighbours=shared)
        return issues, None
    reference = searched.vectors[layer].float()
    validation = find_label_issues(
        vectors,
        bank.labels,
        num_classes,
        known_probabilities(bank),
        reference=reference,
        reference_labels=searched.labels,
        warn=warn,
    )
    training = find_label_issues(
        reference,
        searched.labels,
        num_classes,
        known_probabilities(searched),
        warn=warn,
        model_weight=IN_SAMPLE_MODEL_WEIGHT,  # the model trained on these labels
    )
    return validation, training


def gallery_image(
    results: EpochResults,
    layer: str,
    found: WrongCluster,
    min_share: float,
    max_rows: int,
    issues: LabelIssues | None = None,
) -> np.ndarray:
    """The top flagged samples of ``layer`` (by label-issue score with ``issues``), captioned in words,
    each followed by its neighbours: an (H, W, 3) uint8 image."""
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
    """Per layer ``("neighbour_confusion", layer)``: neighbourhood confusion matrix and per-class
    purity, (H, W, 3) uint8."""
    images = {}
    for layer in results.stats:
        confusion = neighbourhood_confusion(
            results.neighbour_labels(layer), results.bank.labels, len(results.class_names)
        ).numpy()
        title = f"Epoch {results.epoch}: {layer}, where each class's neighbours come from"
        images[("neighbour_confusion", layer)] = confusion_image(np.nan_to_num(confusion), results.class_names, title)
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
