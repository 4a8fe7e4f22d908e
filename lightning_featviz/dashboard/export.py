"""The callback's epoch results, as the dashboard's files (see :mod:`lightning_featviz.dashboard.data`): made here,
written by the run's folder (:class:`~lightning_featviz.outputs.run_folder.RunFolder`), which calls
:meth:`DashboardEpoch.write`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightning_featviz.analysis.results import DynamicsResults, EpochResults
from lightning_featviz.capture.bank import BankData
from lightning_featviz.dashboard.data import LayerEpoch, Samples, write_epoch


def samples_of(bank: BankData, paths: list[str] | None = None) -> Samples:
    """A bank's samples: indices, labels, (N, T, T, 3) thumbnails where it holds images, paths."""
    thumbnails = bank.thumbnails.permute(0, 2, 3, 1).numpy() if bank.thumbnails.ndim == 4 else None
    return Samples(bank.indices.numpy(), bank.labels.numpy(), thumbnails, paths)


@dataclass
class DashboardEpoch:
    """One analysed epoch as the FEATVIZ tab's files hold it (the arguments of
    :func:`~lightning_featviz.dashboard.data.write_epoch`), ready to write."""

    epoch: int
    step: int
    k: int
    class_names: list[str]
    samples: Samples
    predictions: np.ndarray
    confidences: np.ndarray
    layers: dict[str, LayerEpoch]
    reference: Samples | None

    def write(self, folder: Path) -> Path:
        """Write the epoch under ``folder/featviz_dashboard`` (``folder``: the run's log dir); return that folder."""
        return write_epoch(
            folder,
            self.epoch,
            self.step,
            self.k,
            self.class_names,
            self.samples,
            self.predictions,
            self.confidences,
            self.layers,
            self.reference,
        )


def add_dynamics(layer: LayerEpoch, dynamics: DynamicsResults, bank: BankData, class_names: list[str]) -> None:
    """The bank's N rows' dynamics scores, (E, N) label-probability trajectories and N trajectories in words (the
    label-issue CSV's ``dynamics`` column) into ``layer`` (NaN, ``""`` for a row the history does not track)."""
    positions = dynamics.positions(bank.indices)
    tracked, clamped = positions >= 0, positions.clamp_min(0)
    layer.dynamics = torch.where(tracked, dynamics.scores[clamped], float("nan")).numpy()
    layer.trajectory = torch.where(tracked[None], dynamics.trajectory()[:, clamped], float("nan")).numpy()
    layer.trajectory_epochs = np.asarray(dynamics.epochs, dtype=np.int32)
    words = dynamics.all_words(class_names)
    layer.words = [words[p] if p >= 0 else "" for p in positions.tolist()]


def dashboard_epoch(results: EpochResults, paths: list[str] | None, step: int) -> DashboardEpoch:
    """One analysed epoch for the FEATVIZ tab.

    Args:
        results: the epoch's results: every layer of ``results.stats`` is written, with its maps (a map of a
            large bank's subsample with the bank rows it shows, ``LayerMaps.rows``) and wrong cluster where the
            epoch has them.
        paths: the bank's file paths, where the dataset has them.
        step: the global step the epoch was logged at.
    """
    bank, searched = results.bank, results.searched
    same = searched is bank or (len(searched) == len(bank) and torch.equal(searched.indices, bank.indices))
    layers: dict[str, LayerEpoch] = {}
    for name, stats in results.stats.items():
        found = results.wrong_cluster.get(name)
        layer = LayerEpoch(
            neighbours=stats.indices.numpy(),
            distances=stats.distances.float().numpy(),
            purity=stats.purity.float().numpy(),
            votes=stats.votes.numpy(),
            mean_purity=stats.mean_purity,
            accuracy=stats.accuracy(bank.labels),
        )
        if name in results.maps:
            layer.maps, layer.map_rows = dict(results.maps[name].maps), results.maps[name].rows
        if found is not None:
            layer.flagged, layer.cluster = found.rows.numpy(), found.cluster.numpy()
            layer.count, layer.own = found.count.numpy(), found.own.numpy()
        if results.dynamics is not None and results.dynamics.layer == name:
            add_dynamics(layer, results.dynamics, bank, results.class_names)
        layers[name] = layer
    return DashboardEpoch(
        results.epoch,
        step,
        results.k,
        results.class_names,
        samples_of(bank, paths),
        bank.preds.numpy(),
        bank.confidences.float().numpy(),
        layers,
        reference=None if same else samples_of(searched),
    )
