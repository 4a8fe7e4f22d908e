"""The callback's epoch results, as the dashboard's files (see :mod:`lightning_featviz.dashboard.data`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.measures import EpochResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster
from lightning_featviz.capture.bank import BankData
from lightning_featviz.dashboard.data import LayerEpoch, Samples, write_epoch


def samples_of(bank: BankData, paths: list[str] | None = None) -> Samples:
    """A bank's samples: indices, labels, (N, T, T, 3) thumbnails where it holds images, paths."""
    thumbnails = bank.thumbnails.permute(0, 2, 3, 1).numpy() if bank.thumbnails.ndim == 4 else None
    return Samples(bank.indices.numpy(), bank.labels.numpy(), thumbnails, paths)


def write_dashboard_epoch(
    log_dir: str | Path,
    results: EpochResults,
    maps: Mapping[str, LayerMaps],
    flagged: Mapping[str, WrongCluster],
    paths: list[str] | None,
    step: int,
) -> Path:
    """Write one analysed epoch for the FEATVIZ tab under ``log_dir/featviz_dashboard``; return that folder.

    Args:
        log_dir: the run's log dir.
        results: the epoch's bank and kNN results (every layer of ``results.stats`` is written).
        maps: layer -> its aligned t-SNE maps this epoch (layers or epochs without maps have none; a map of a
            large bank's subsample is written with the bank rows it shows, ``LayerMaps.rows``).
        flagged: layer -> its samples in the wrong cluster.
        paths: the bank's file paths, where the dataset has them.
        step: the global step the epoch was logged at.
    """
    bank, searched = results.bank, results.searched
    same = searched is bank or (len(searched) == len(bank) and torch.equal(searched.indices, bank.indices))
    layers: dict[str, LayerEpoch] = {}
    for name, stats in results.stats.items():
        found = flagged.get(name)
        layer = LayerEpoch(
            neighbours=stats.indices.numpy(),
            distances=stats.distances.float().numpy(),
            purity=stats.purity.float().numpy(),
            votes=stats.votes.numpy(),
            mean_purity=stats.mean_purity,
            accuracy=stats.accuracy(bank.labels),
        )
        if name in maps:
            layer.maps, layer.map_rows = dict(maps[name].maps), maps[name].rows
        if found is not None:
            layer.flagged, layer.cluster = found.rows.numpy(), found.cluster.numpy()
            layer.count, layer.own = found.count.numpy(), found.own.numpy()
        layers[name] = layer
    return write_epoch(
        log_dir,
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
