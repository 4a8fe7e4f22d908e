"""lightning_featviz: see what an image classifier learns while it is fine-tuned."""

from lightning_featviz.bank import BankData, FeatureBank, select_subset, to_thumbnails
from lightning_featviz.batches import Batch, read_batch
from lightning_featviz.callback import FeatureVisualizer
from lightning_featviz.capture import ActivationCapture, reduce_activation, reduce_input, resolve_layers
from lightning_featviz.datasets import ColouredDigits, image_folder
from lightning_featviz.embedding import (
    MapTracker,
    align_map,
    map_displacement,
    pca_reduce,
    trustworthiness,
    tsne_map,
)
from lightning_featviz.knn import NeighbourStats, knn_purity, knn_search, knn_vote, neighbour_stats, per_class_mean
from lightning_featviz.outliers import WrongCluster, find_wrong_cluster, neighbourhood_confusion
from lightning_featviz.plots import (
    MapPanel,
    NeighbourGrid,
    figure_to_array,
    map_figure,
    neighbour_grid_figure,
    neighbour_grid_image,
)
from lightning_featviz.projector import ProjectorEntry, write_projector

__version__ = "0.1.0"

__all__ = [
    "ActivationCapture",
    "BankData",
    "Batch",
    "ColouredDigits",
    "FeatureBank",
    "FeatureVisualizer",
    "MapPanel",
    "MapTracker",
    "NeighbourGrid",
    "NeighbourStats",
    "ProjectorEntry",
    "WrongCluster",
    "align_map",
    "figure_to_array",
    "find_wrong_cluster",
    "image_folder",
    "knn_purity",
    "knn_search",
    "knn_vote",
    "map_displacement",
    "map_figure",
    "neighbour_grid_figure",
    "neighbour_grid_image",
    "neighbour_stats",
    "neighbourhood_confusion",
    "pca_reduce",
    "per_class_mean",
    "read_batch",
    "reduce_activation",
    "reduce_input",
    "resolve_layers",
    "select_subset",
    "to_thumbnails",
    "trustworthiness",
    "tsne_map",
    "write_projector",
]
