"""The one results object of an analysed epoch: what :mod:`lightning_featviz.analysis` computes and every output
(the report's figures and tables, the projector, the FEATVIZ tab's files) is made from.

Filled in two steps, where the work runs today: the kNN statistics in the training process (rank 0, cheap: the
scalars are logged from them), the rest — twin layers, t-SNE maps, wrong cluster, label issues — by the report job
(:func:`lightning_featviz.analysis.epoch.analyse_epoch`, in the background) before it draws anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor

from lightning_featviz.analysis.knn import NeighbourStats
from lightning_featviz.analysis.label_issues import LabelIssues
from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.wrong_cluster import WrongCluster
from lightning_featviz.capture.bank import BankData


@dataclass
class LabelIssueResults:
    """The label issues of one layer.

    Attributes:
        layer: the layer scored (the wrong-cluster layer).
        validation: the scores of the bank's N rows (searched as the kNN statistics were).
        training: the scores of the training reference's R rows among themselves (the model's in-sample
            probabilities tempered), None without a training reference.
    """

    layer: str
    validation: LabelIssues
    training: LabelIssues | None = None


@dataclass
class EpochResults:
    """One analysed epoch.

    Attributes:
        bank: the kept validation samples (the queries), N rows.
        searched: what they were searched among: the bank itself (leave-one-out) or the
            training reference.
        stats: layer -> kNN results of the bank's rows against ``searched`` (every analysed layer).
        class_names: name of each class id (C).
        k: neighbours per sample.
        epoch: the epoch the results belong to.
        twins: layer -> the later layer whose (N, D) vectors it equals element for element (drawn once, as that
            one; its scalars are logged all the same).
        maps: layer -> its t-SNE maps this epoch and their measures (epochs or layers without maps: absent).
        wrong_cluster: layer -> its samples in another class's cluster (every layer but the twins).
        label_issues: the label issues of the wrong-cluster layer, where the epoch scores them.
        confusion: layer -> (C, C) where each class's neighbours come from (row: the class; NaN for a class without
            samples), where the epoch draws it.
        seconds: what each part of the analysis took (``maps_2d``, ``maps_3d``, ``wrong_cluster``,
            ``label_issues``, ``confusion``), for the time budget.
    """

    bank: BankData
    searched: BankData
    stats: dict[str, NeighbourStats]
    class_names: list[str]
    k: int
    epoch: int
    twins: dict[str, str] = field(default_factory=dict)
    maps: dict[str, LayerMaps] = field(default_factory=dict)
    wrong_cluster: dict[str, WrongCluster] = field(default_factory=dict)
    label_issues: LabelIssueResults | None = None
    confusion: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def neighbour_labels(self, layer: str) -> Tensor:
        """(N, k) labels of each sample's neighbours in ``layer``."""
        return self.searched.labels[self.stats[layer].indices]

    def shown(self) -> EpochResults:
        """These results without the :attr:`twins` (what figures and projector entries show)."""
        if not self.twins:
            return self
        return replace(self, stats={layer: found for layer, found in self.stats.items() if layer not in self.twins})
