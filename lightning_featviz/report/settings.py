"""What an epoch's report holds (:class:`ReportSettings`), and the names its outputs are logged under: :func:`tag`,
the one function in the package that builds a TensorBoard tag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# What a report reads of the user's option groups (:mod:`lightning_featviz.options`, which ``report/`` cannot import:
# the package's top level sits above it); the groups themselves are handed in.


class OutputFields(Protocol):
    @property
    def neighbour_grids(self) -> bool: ...
    @property
    def confusion(self) -> bool: ...
    @property
    def query_indices(self) -> Sequence[int] | None: ...


class MapFields(Protocol):
    @property
    def dims(self) -> Sequence[int]: ...
    @property
    def samples(self) -> int: ...


class WrongClusterFields(Protocol):
    @property
    def layer(self) -> str | None: ...
    @property
    def min_share(self) -> float: ...
    @property
    def max_gallery(self) -> int: ...


class ProjectorFields(Protocol):
    @property
    def keep_every_n_epochs(self) -> int: ...


@dataclass(frozen=True)
class ReportSettings:
    """What a report reads: the callback's ``k``, ``seed`` and ``dashboard``, and its option groups as given.

    Attributes:
        outputs: ``outputs=`` (which figures, the grids' queries).
        maps: ``maps=`` (dimensions drawn, samples mapped).
        wrong_cluster: ``wrong_cluster=``, or its defaults where it is off: the wrong-cluster shares and the
            dashboard's flags use them always.
        gallery: whether ``wrong_cluster`` is on: its gallery, table, exports and label issues.
        projector: ``projector=``, or None where it is off.
    """

    k: int
    seed: int
    dashboard: bool
    outputs: OutputFields
    maps: MapFields
    wrong_cluster: WrongClusterFields
    gallery: bool
    projector: ProjectorFields | None


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
    "wrong_cluster_cartography",
)


def tag(kind: str, layer: str, *rest: str, k: int) -> str:
    """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
    head = f"featviz/{kind}" if kind in UNRANKED_KINDS else f"featviz/{kind}@{k}"
    return "/".join([head, layer, *rest])
