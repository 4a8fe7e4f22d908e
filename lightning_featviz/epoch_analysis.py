"""Rank 0's analysis of one captured validation epoch: the kNN search of every layer, the scalars every rank
logs, and the warnings about what the kept samples allow.

It reads what it needs off the Trainer (the training reference, class names, where the model runs); the
numbers come from :mod:`lightning_featviz.analysis`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_featviz.analysis.cache import ResultCache
from lightning_featviz.analysis.knn import NeighbourStats
from lightning_featviz.analysis.label_issues import label_issue_k
from lightning_featviz.analysis.measures import LayerSearch, degenerate, epoch_metrics, layer_stats, purity_ceiling
from lightning_featviz.analysis.neighbourhoods import neighbours_needed
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.capture.bank import BankData
from lightning_featviz.capture.epoch import ValidationCapture
from lightning_featviz.capture.trainer_data import (
    capture_training_bank,
    known_class_names,
    matching_rows,
    training_loader,
    validation_loader,
)
from lightning_featviz.capture.warn import Warn
from lightning_featviz.options import CaptureOptions, MapOptions, ResourceOptions, WrongClusterOptions
from lightning_featviz.report.settings import tag as make_tag


class EpochAnalysis:
    """The kNN analysis of each epoch's gathered bank, with the callback's options.

    Args:
        k: neighbours per sample.
        max_samples: validation samples kept.
        seed: seed of the sample choice (the training reference uses ``seed + 1``).
        class_names: the names given, or None (read off the datamodule or dataset).
        capture: the capture options (reference, metric, batch extractor, dataloader).
        maps: the map options (perplexity and subsample size set how many neighbours the map needs).
        wrong_cluster: the wrong-cluster options, or None when it is off.
        resources: the kNN chunk size.
        monitor_class_purity: whether per-class purity scalars go through ``LightningModule.log``.
        warn: ``warn(key, message)``, warning once per key.
    """

    def __init__(
        self,
        k: int,
        max_samples: int,
        seed: int,
        class_names: list[str] | None,
        capture: CaptureOptions,
        maps: MapOptions,
        wrong_cluster: WrongClusterOptions | None,
        resources: ResourceOptions,
        monitor_class_purity: bool,
        warn: Warn,
    ):
        self.k, self.max_samples, self.seed, self.class_names = k, max_samples, seed, class_names
        self.capture, self.maps, self.wrong_cluster, self.resources = capture, maps, wrong_cluster, resources
        self.monitor_class_purity = monitor_class_purity
        self._warn = warn
        self._cache: ResultCache[NeighbourStats] = ResultCache()
        #: How long the last epoch's neighbour searches took (what the time budget counts as kNN).
        self.knn_seconds = 0.0

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
        return make_tag(kind, layer, *rest, k=self.k)

    def run(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        bank: BankData,
        capture: ValidationCapture,
        layers: list[str],
        val_dataset: Any,
        maps_due: bool,
        figures_due: bool,
    ) -> tuple[EpochResults | None, dict[str, float]]:
        """kNN per layer of ``bank`` (its ``layers``, display names in order); the results, and the scalars
        every rank logs (``({}, None)`` when the bank cannot be analysed: a warning says why)."""
        reference = self._reference(trainer, pl_module, capture) if self.capture.reference == "train" else None
        labelled = max(int(bank.labels.max()), int(reference.labels.max()) if reference else 0) + 1
        outputs = bank.probabilities.shape[1] if bank.probabilities.shape[1] > 1 else 0  # (N, C) softmax, else (N, 1)
        names = self._class_names(trainer, labelled, outputs)
        problem = degenerate(bank, reference, self.k)
        if problem is not None:
            self._warn(*problem)
            return None, {}
        # The search runs where the model is when that is a GPU; on the CPU, FAISS when installed.
        device = trainer.strategy.root_device if trainer.strategy.root_device.type == "cuda" else torch.device("cpu")
        layers = [layer for layer in layers if layer in bank.vectors]
        if reference is not None:
            layers = [layer for layer in layers if layer in reference.vectors]
        self._warn_ceiling(bank, reference)
        exclude = self._same_samples(trainer, bank, reference, val_dataset)
        within_bank = reference is None
        started = time.perf_counter()
        search = LayerSearch(
            self.k,
            len(names),
            self.capture.metric,
            device,
            self.resources.chunk_size,
            exclude,
            self._search_widths(bank, layers, within_bank, maps_due and within_bank, figures_due and within_bank),
        )
        stats, undefined = layer_stats(bank, reference, layers, search, self._cache, self._warn)
        self.knn_seconds = time.perf_counter() - started
        metrics = epoch_metrics(stats, bank.labels, names, self.tag, undefined, self.monitor_class_purity)
        searched = reference if reference is not None else bank
        return EpochResults(bank, searched, stats, names, self.k, trainer.current_epoch), metrics

    def _search_widths(self, bank: BankData, layers: list[str], within_bank: bool, maps: bool, figures: bool):
        """Each layer's K for its one search this epoch: what purity, label issues and (a map of the whole
        bank) the map need (:func:`~lightning_featviz.analysis.neighbourhoods.neighbours_needed`)."""
        whole_map = maps and len(bank) <= self.maps.samples
        wrong = self.wrong_cluster
        labelled = (wrong.layer or (layers[-1] if layers else None)) if wrong is not None else None
        label_k = label_issue_k(bank.labels) if within_bank and figures else 0
        return {
            layer: neighbours_needed(
                len(bank), self.k, self.maps.perplexity, whole_map, label_k if layer == labelled else 0
            )
            for layer in layers
        }

    def _warn_ceiling(self, bank: BankData, reference: BankData | None) -> None:
        """Warn once when too few samples of some classes were kept for purity@k to reach 1."""
        searched = reference if reference is not None else bank
        ceiling = purity_ceiling(bank.labels, searched.labels, self.k, reference is None)
        if ceiling > 0.999:
            return
        counts = torch.bincount(searched.labels)
        small = int(((counts > 0) & (counts < self.k + int(reference is None))).sum())
        knob = "capture.max_reference" if reference is not None else "max_samples"
        value = self.capture.max_reference if reference is not None else self.max_samples
        lifted = int((counts > 0).sum()) * (self.k + 1)
        self._warn(
            "ceiling",
            f"kNN purity@{self.k} cannot exceed {ceiling:.3f} here, however good the features: {small} of "
            f"{int((counts > 0).sum())} classes have fewer than {self.k + int(reference is None)} samples among "
            f"the {len(searched)} kept (`{knob}`={value}). Hint: `{knob}` >= {lifted} keeps {self.k + 1} of each "
            "class where the data has them; or lower `k`.",
        )

    @staticmethod
    def _same_samples(
        trainer: pl.Trainer, bank: BankData, reference: BankData | None, val_dataset: Any
    ) -> Tensor | None:
        """(N,) the reference row holding the same sample as each validation row (-1: none), where the
        training and validation sets come from one dataset; None otherwise."""
        loader = training_loader(trainer)
        if reference is None or loader is None or val_dataset is None:
            return None
        return matching_rows(val_dataset, bank.indices, loader.dataset, reference.indices)

    def _reference(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, capture: ValidationCapture
    ) -> BankData | None:
        """Up to ``capture.max_reference`` training samples, captured by a no-grad, eval-mode forward."""
        assert capture.hooks is not None
        bank = capture_training_bank(
            trainer,
            pl_module,
            capture.hooks,
            self.capture.max_reference,
            self.seed + 1,
            self.capture.batch_extractor,
            capture.vectors,
            capture.thumbnails,
        )
        if bank is None:
            self._warn(
                "train",
                "`capture.reference='train'` needs a training DataLoader over a sized dataset; "
                "searching the validation samples instead.",
            )
        return bank

    def _class_names(self, trainer: pl.Trainer, labelled: int, outputs: int) -> list[str]:
        """One name per class: the known names, then ids up to the largest label or the model's output width (a
        model with more outputs than the labels use, e.g. a head for classes this validation set lacks)."""
        known = self.class_names or known_class_names(trainer, validation_loader(trainer, self.capture.dataloader_idx))
        if max(labelled, outputs) > len(known) and known:
            spans = f"Labels go up to {labelled - 1}" if labelled > len(known) else f"The model gives {outputs} outputs"
            self._warn("labels", f"{spans} but only {len(known)} class names are known; the rest are named by id.")
        return list(known) + [str(i) for i in range(len(known), max(labelled, outputs))]

    def log(self, pl_module: pl.LightningModule, metrics: dict[str, float]) -> dict[str, float]:
        """Log the scalars through ``LightningModule.log`` (per-class purity only when monitored: C tags per
        layer); the rest, which go straight to the sinks."""
        monitored = {t: v for t, v in metrics.items() if self.monitor_class_purity or "/purity_of_class@" not in t}
        for tag, value in monitored.items():
            pl_module.log(tag, value, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)
        return {t: v for t, v in metrics.items() if t not in monitored}

    def history_rows(
        self, metrics: dict[str, float], layers: list[str], epoch: int, step: int
    ) -> list[dict[str, float | int | str]]:
        """One row of ``visualizer.history`` per analysed layer."""
        return [
            {
                "epoch": epoch,
                "step": step,
                "layer": layer,
                "knn_purity": metrics[self.tag("knn_purity", layer)],
                "knn_accuracy": metrics[self.tag("knn_accuracy", layer)],
            }
            for layer in layers
            if self.tag("knn_purity", layer) in metrics
        ]


def queries_within(queries: Sequence[int] | None, size: int, warn: Warn) -> list[int]:
    """The neighbour-grid queries inside a validation dataset of ``size`` samples, warning once about the rest."""
    kept = [i for i in queries or () if i < size]
    if len(kept) < len(queries or ()):
        beyond = sorted(set(queries or ()) - set(kept))
        warn(
            "queries",
            f"`outputs.query_indices` {beyond} are beyond the validation dataset ({size} samples); they are left out.",
        )
    return kept
