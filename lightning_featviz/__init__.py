"""lightning_featviz: see what an image classifier learns while it is fine-tuned."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each name is imported when first used: a report process needs the functional core, not
# Lightning (about 250 MB less to import). ``__all__`` stays a literal list, as type checkers
# require of re-exports.
_MODULE_OF = {
    "ActivationCapture": "capture",
    "align_map": "embedding",
    "BankData": "bank",
    "Batch": "batches",
    "ColouredDigits": "datasets",
    "default_layers": "default_layers",
    "Layout": "layouts",
    "LayoutError": "layouts",
    "reduce_output": "layouts",
    "FeatureBank": "bank",
    "FeatureVisualizer": "callback",
    "figure_to_array": "plots",
    "find_label_issues": "label_issues",
    "find_wrong_cluster": "outliers",
    "image_folder": "datasets",
    "knn_purity": "knn",
    "knn_search": "knn",
    "knn_vote": "knn",
    "label_issue_table": "label_issues",
    "LabelIssues": "label_issues",
    "map_displacement": "embedding",
    "map_figure": "map_plot",
    "map_image": "map_plot",
    "MapPanel": "map_plot",
    "MapTracker": "embedding",
    "neighbour_grid_figure": "plots",
    "neighbour_grid_image": "plots",
    "neighbour_stats": "knn",
    "NeighbourGrid": "plots",
    "neighbourhood_confusion": "outliers",
    "NeighbourStats": "knn",
    "pca_reduce": "embedding",
    "per_class_mean": "knn",
    "ProjectorEntry": "projector",
    "read_batch": "batches",
    "reduce_activation": "capture",
    "reduce_input": "inputs",
    "input_kind": "inputs",
    "resolve_layers": "capture",
    "select_subset": "bank",
    "to_thumbnails": "bank",
    "trustworthiness": "embedding",
    "tsne_map": "embedding",
    "write_projector": "projector",
    "WrongCluster": "outliers",
}

__all__ = [
    "ActivationCapture",
    "BankData",
    "Batch",
    "ColouredDigits",
    "FeatureBank",
    "FeatureVisualizer",
    "LabelIssues",
    "Layout",
    "LayoutError",
    "MapPanel",
    "MapTracker",
    "NeighbourGrid",
    "NeighbourStats",
    "ProjectorEntry",
    "WrongCluster",
    "align_map",
    "default_layers",
    "figure_to_array",
    "find_label_issues",
    "find_wrong_cluster",
    "image_folder",
    "input_kind",
    "knn_purity",
    "knn_search",
    "knn_vote",
    "label_issue_table",
    "map_displacement",
    "map_figure",
    "map_image",
    "neighbour_grid_figure",
    "neighbour_grid_image",
    "neighbour_stats",
    "neighbourhood_confusion",
    "pca_reduce",
    "per_class_mean",
    "read_batch",
    "reduce_activation",
    "reduce_input",
    "reduce_output",
    "resolve_layers",
    "select_subset",
    "to_thumbnails",
    "trustworthiness",
    "tsne_map",
    "write_projector",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lightning_featviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_featviz.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


if TYPE_CHECKING:
    from lightning_featviz.bank import BankData, FeatureBank, select_subset, to_thumbnails
    from lightning_featviz.batches import Batch, read_batch
    from lightning_featviz.callback import FeatureVisualizer
    from lightning_featviz.capture import ActivationCapture, reduce_activation, resolve_layers
    from lightning_featviz.datasets import ColouredDigits, image_folder
    from lightning_featviz.default_layers import default_layers
    from lightning_featviz.embedding import (
        MapTracker,
        align_map,
        map_displacement,
        pca_reduce,
        trustworthiness,
        tsne_map,
    )
    from lightning_featviz.inputs import input_kind, reduce_input
    from lightning_featviz.knn import NeighbourStats, knn_purity, knn_search, knn_vote, neighbour_stats, per_class_mean
    from lightning_featviz.label_issues import LabelIssues, find_label_issues, label_issue_table
    from lightning_featviz.layouts import Layout, LayoutError, reduce_output
    from lightning_featviz.map_plot import MapPanel, map_figure, map_image
    from lightning_featviz.outliers import WrongCluster, find_wrong_cluster, neighbourhood_confusion
    from lightning_featviz.plots import NeighbourGrid, figure_to_array, neighbour_grid_figure, neighbour_grid_image
    from lightning_featviz.projector import ProjectorEntry, write_projector
