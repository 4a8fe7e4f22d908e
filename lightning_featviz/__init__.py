"""lightning_featviz: see what an image classifier learns while it is fine-tuned."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each name is imported when first used: a report process needs the functional core, not
# Lightning (about 250 MB less to import). ``__all__`` stays a literal list, as type checkers
# require of re-exports.
_MODULE_OF = {
    "ActivationCapture": "capture.hooks",
    "align_map": "analysis.embedding",
    "BankData": "capture.bank",
    "Batch": "capture.batches",
    "ColouredDigits": "demo.datasets",
    "default_layers": "capture.default_layers",
    "Layout": "capture.layouts",
    "LayoutError": "capture.layouts",
    "reduce_output": "capture.reductions",
    "FeatureBank": "capture.bank",
    "FeatureVisualizer": "callback",
    "CaptureOptions": "options",
    "MapOptions": "options",
    "ProjectorOptions": "options",
    "WrongClusterOptions": "options",
    "OutputOptions": "options",
    "ResourceOptions": "options",
    "FeatvizDeprecationWarning": "options",
    "find_label_issues": "analysis.label_issues",
    "find_wrong_cluster": "analysis.wrong_cluster",
    "image_folder": "loading",
    "knn_purity": "analysis.knn",
    "knn_search": "analysis.knn",
    "knn_vote": "analysis.knn",
    "label_issue_table": "analysis.label_issues",
    "LabelIssues": "analysis.label_issues",
    "map_displacement": "analysis.embedding",
    "map_image": "render.maps",
    "MapPanel": "render.maps",
    "MapTracker": "analysis.embedding",
    "neighbour_grid_image": "render.grids",
    "neighbour_stats": "analysis.knn",
    "NeighbourGrid": "render.grids",
    "neighbourhood_confusion": "analysis.wrong_cluster",
    "NeighbourStats": "analysis.knn",
    "pca_reduce": "analysis.tsne",
    "per_class_mean": "analysis.knn",
    "ProjectorEntry": "outputs.projector",
    "read_batch": "capture.batches",
    "reduce_activation": "capture.hooks",
    "reduce_input": "capture.inputs",
    "input_kind": "capture.inputs",
    "resolve_layers": "capture.hooks",
    "select_subset": "capture.bank",
    "to_thumbnails": "capture.bank",
    "trustworthiness": "analysis.tsne",
    "tsne_map": "analysis.tsne",
    "write_projector": "outputs.projector",
    "WrongCluster": "analysis.wrong_cluster",
}

__all__ = [
    "ActivationCapture",
    "BankData",
    "Batch",
    "CaptureOptions",
    "ColouredDigits",
    "FeatureBank",
    "FeatureVisualizer",
    "FeatvizDeprecationWarning",
    "LabelIssues",
    "Layout",
    "LayoutError",
    "MapOptions",
    "MapPanel",
    "MapTracker",
    "NeighbourGrid",
    "NeighbourStats",
    "OutputOptions",
    "ProjectorEntry",
    "ProjectorOptions",
    "ResourceOptions",
    "WrongCluster",
    "WrongClusterOptions",
    "align_map",
    "default_layers",
    "find_label_issues",
    "find_wrong_cluster",
    "image_folder",
    "input_kind",
    "knn_purity",
    "knn_search",
    "knn_vote",
    "label_issue_table",
    "map_displacement",
    "map_image",
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
    from lightning_featviz.analysis.embedding import MapTracker, align_map, map_displacement
    from lightning_featviz.analysis.knn import (
        NeighbourStats,
        knn_purity,
        knn_search,
        knn_vote,
        neighbour_stats,
        per_class_mean,
    )
    from lightning_featviz.analysis.label_issues import LabelIssues, find_label_issues, label_issue_table
    from lightning_featviz.analysis.tsne import pca_reduce, trustworthiness, tsne_map
    from lightning_featviz.analysis.wrong_cluster import WrongCluster, find_wrong_cluster, neighbourhood_confusion
    from lightning_featviz.callback import FeatureVisualizer
    from lightning_featviz.capture.bank import BankData, FeatureBank, select_subset, to_thumbnails
    from lightning_featviz.capture.batches import Batch, read_batch
    from lightning_featviz.capture.default_layers import default_layers
    from lightning_featviz.capture.hooks import ActivationCapture, reduce_activation, resolve_layers
    from lightning_featviz.capture.inputs import input_kind, reduce_input
    from lightning_featviz.capture.layouts import Layout, LayoutError
    from lightning_featviz.capture.reductions import reduce_output
    from lightning_featviz.demo.datasets import ColouredDigits
    from lightning_featviz.loading import image_folder
    from lightning_featviz.options import (
        CaptureOptions,
        FeatvizDeprecationWarning,
        MapOptions,
        OutputOptions,
        ProjectorOptions,
        ResourceOptions,
        WrongClusterOptions,
    )
    from lightning_featviz.outputs.projector import ProjectorEntry, write_projector
    from lightning_featviz.render.grids import NeighbourGrid, neighbour_grid_image
    from lightning_featviz.render.maps import MapPanel, map_image
