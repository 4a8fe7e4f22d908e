"""The one results object of an analysed epoch: what :mod:`lightning_featviz.analysis` computes and every output
(the report's figures and tables, the projector, the FEATVIZ tab's files) is made from.

Filled in two steps, where the work runs today: the kNN statistics in the training process (rank 0, cheap: the
scalars are logged from them), the rest — twin layers, t-SNE maps, wrong cluster, label issues — by the report job
(:func:`lightning_featviz.analysis.epoch.analyse_epoch`, in the background) before it draws anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from lightning_featviz.analysis.dynamics import SampleHistory, dynamics_words, every_sample_words
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
class DynamicsResults:
    """The training dynamics of one layer's label issues up to an epoch (``analysis.history.DynamicsTracker``).

    Attributes:
        layer: the layer whose single-epoch scores the history records (the label-issue layer).
        history: a copy of the layer's :class:`~lightning_featviz.analysis.dynamics.SampleHistory` (E kept epochs,
            S tracked samples by sorted dataset index).
        scores: (S,) the dynamics score (:func:`~lightning_featviz.analysis.dynamics.dynamics_scores`; high: the
            given label is likely wrong).
        confidence: (S,) the mean probability of the given label over the epochs a sample was seen, kept or dropped
            (cartography, :meth:`~lightning_featviz.analysis.dynamics.SampleHistory.cartography`).
        variability: (S,) its standard deviation over those epochs.
        seen: (S,) int, the epochs a sample was seen in.
    """

    layer: str
    history: SampleHistory
    scores: Tensor = field(init=False)
    confidence: Tensor = field(init=False)
    variability: Tensor = field(init=False)
    seen: Tensor = field(init=False)
    _said: dict[tuple[str, ...], list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.scores = self.history.dynamics_scores()
        self.confidence, self.variability, self.seen = self.history.cartography()

    @property
    def epochs(self) -> list[int]:
        """The E kept epochs, oldest first."""
        return list(self.history.epochs)

    def positions(self, indices: Tensor) -> Tensor:
        """(N,) each of the (N,) dataset ``indices``' position in the history, -1 where it is not tracked."""
        tracked = self.history.indices
        indices = indices.long().cpu()
        position = torch.searchsorted(tracked, indices).clamp_max(max(0, len(tracked) - 1))
        found = (tracked[position] == indices) if len(tracked) else torch.zeros(len(indices), dtype=torch.bool)
        return torch.where(found, position, -1)

    def trajectory(self) -> Tensor:
        """(E, S) float32 probability of the given label per kept epoch (NaN: not seen)."""
        return self.history.field("label_probability")

    def words(self, position: int, class_names: list[str]) -> str:
        """What the predictions of the sample at ``position`` did, in words
        (:func:`~lightning_featviz.analysis.dynamics.dynamics_words`)."""
        return dynamics_words(self.history, position, class_names)

    def all_words(self, class_names: list[str]) -> list[str]:
        """:meth:`words` of every tracked sample, in history order (S phrases), said once per ``class_names``: the
        FEATVIZ tab's epoch file and the label-issue CSV both ask (the history is this object's own copy)."""
        names = tuple(class_names)
        if names not in self._said:
            self._said[names] = every_sample_words(self.history, class_names)
        return self._said[names]


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
        dynamics: the label-issue layer's training dynamics up to this epoch (filled in the training process, on
            rank 0, each analysed epoch of ``fit`` or ``validate``), None where not tracked.
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
    dynamics: DynamicsResults | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def neighbour_labels(self, layer: str) -> Tensor:
        """(N, k) labels of each sample's neighbours in ``layer``."""
        return self.searched.labels[self.stats[layer].indices]

    def shown(self) -> EpochResults:
        """These results without the :attr:`twins` (what figures and projector entries show)."""
        if not self.twins:
            return self
        return replace(self, stats={layer: found for layer, found in self.stats.items() if layer not in self.twins})
