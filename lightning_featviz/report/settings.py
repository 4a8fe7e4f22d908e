"""What an epoch's report holds (:class:`ReportSettings`), and the names its outputs are logged under: :func:`tag`,
the one function in the package that builds a TensorBoard tag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportSettings:
    """What a report holds: the callback's arguments of the same names (read from it by name)."""

    k: int
    query_indices: list[int] | None
    log_neighbour_grids: bool
    log_wrong_cluster: bool
    wrong_cluster_layer: str | None
    min_share: float
    max_gallery: int
    log_confusion: bool
    tsne_dims: list[int]
    log_projector: bool
    projector_every_n_epochs: int
    dashboard: bool = True
    map_samples: int = 2000
    seed: int = 0


#: Tags of these kinds have no ``@k``: images, and a measure that does not depend on k.
UNRANKED_KINDS = (
    "neighbours",
    "tsne_2d",
    "tsne_3d",
    "tsne_displacement",
    "wrong_cluster",
    "wrong_cluster_table",
    "label_issues",
    "neighbour_confusion",
    "purity_by_depth",
    "purity_by_class",
)


def tag(kind: str, layer: str, *rest: str, k: int) -> str:
    """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
    head = f"featviz/{kind}" if kind in UNRANKED_KINDS else f"featviz/{kind}@{k}"
    return "/".join([head, layer, *rest])
