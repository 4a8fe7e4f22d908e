"""Validation-epoch time with the callback (capture + kNN; every output but maps and grids) over the time without it.

The quick start's model (torchvision ResNet-18, 10 classes) on the built-in 1,000 validation digits at 32x32,
batch size 32, inside ``fit`` as in training (one training batch per epoch keeps the run short), the demo's five
layers, no time budget (``overhead=None``) and no maps. Two fits, each with ``every_n_epochs=2`` so that analysed
and skipped validation epochs alternate within one process (machine noise, warm caches and thread pools hit both
alike): the first makes what the default time budget makes on most epochs (capture, the kNN search, kNN scalars
and the FEATVIZ tab's files; no figures, no wrong-cluster gallery), the second every output but maps and neighbour
grids (adds the purity-by-class and neighbourhood-confusion figures, the wrong-cluster gallery and export and the
label issues, in the loop: ``background`` is off on the CPU). An epoch is timed from the first
``on_validation_epoch_start`` to the last ``on_validation_epoch_end``. A fit without the callback is timed too,
as a check that a skipped epoch costs what no callback costs.
Target: capture + kNN ratio <= 1.10.

    python benchmarks/capture_overhead.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier


class Stopwatch(pl.Callback):
    """Listed first it records the epoch's start; listed last, its end."""

    def __init__(self, times: list[float], role: str):
        self.times, self.role = times, role

    def on_validation_epoch_start(self, trainer, pl_module):
        if self.role == "start":
            self.times.append(-time.perf_counter())

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.role == "end":
            self.times[-1] += time.perf_counter()


def epoch_times(model, data, epochs: int, visualizer: FeatureVisualizer | None) -> list[float]:
    """Validation-epoch times inside ``fit`` (one training batch per epoch)."""
    times: list[float] = []
    middle = [visualizer] if visualizer is not None else []
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tempfile.mkdtemp(),
        logger=TensorBoardLogger(tempfile.mkdtemp()),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[Stopwatch(times, "start"), *middle, Stopwatch(times, "end")],
    )
    trainer.fit(model, datamodule=data)
    return times


def alternating(model, data, epochs: int, **outputs) -> tuple[list[float], list[float]]:
    """Analysed and skipped validation-epoch times of one fit with ``every_n_epochs=2``."""
    visualizer = FeatureVisualizer(
        layers=list(DEMO_LAYERS), k=10, every_n_epochs=2, overhead=None, maps=MapOptions(every_n_epochs=None), **outputs
    )
    times = epoch_times(model, data, epochs + 2, visualizer)[2:]  # the first two warm up torch and scikit-learn
    return times[0::2], times[1::2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="validation epochs in each alternating fit")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = ClassificationData.digits(batch_size=32)
    model = ImageClassifier(num_classes=10)
    knn, knn_skipped = alternating(
        model, data, args.epochs, outputs=OutputOptions(neighbour_grids=False, confusion=False), wrong_cluster=False
    )
    everything, skipped = alternating(
        model, data, args.epochs, outputs=OutputOptions(every_n_epochs=1, neighbour_grids=False)
    )  # figures every analysed epoch
    plain = epoch_times(model, data, args.epochs // 2 + 1, None)[1:]
    print(
        f"threads: {torch.get_num_threads()}, validation set: {len(data.val)} images, layers: {', '.join(DEMO_LAYERS)}"
    )
    print(f"{'validation epoch':<48}{'epochs':>7}{'median s':>10}{'min s':>8}{'ratio':>8}")
    rows = [
        ("callback skipping the epoch (baseline)", knn_skipped, knn_skipped),
        ("capture, kNN scalars, dashboard files", knn, knn_skipped),
        ("callback skipping the epoch (baseline)", skipped, skipped),
        ("every output but maps and grids", everything, skipped),
        ("no callback at all (check)", plain, knn_skipped),
    ]
    for name, values, base in rows:
        ratio = statistics.median(values) / statistics.median(base)
        print(f"{name:<48}{len(values):>7}{statistics.median(values):>10.3f}{min(values):>8.3f}{ratio:>8.2f}")
    ratio = statistics.median(knn) / statistics.median(knn_skipped)
    print(f"target: capture + kNN ratio <= 1.10 -> {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.3f})")


if __name__ == "__main__":
    main()
