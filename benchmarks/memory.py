"""Resident memory per epoch over a long run with the full callback, and the bank's predicted vs
measured size.

The quick start's model and data (ResNet-18, 1,000 validation digits at 32x32, six layers) with
every output on (kNN, grids, t-SNE 2-D and 3-D, projector, wrong-cluster, confusion), a few
training batches per epoch so that 20 epochs stay short. After each validation epoch: the
process's current resident set (RSS) and its peak so far; with ``--background``, also the RSS of
the report process. Target (issue 5): flat after epoch 2 — nothing the callback keeps grows with
the epochs.

    python benchmarks/memory.py [--epochs 20] [--background]
"""

from __future__ import annotations

import argparse
import resource
import tempfile

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer
from lightning_featviz.bank import bank_bytes, stored_bytes
from lightning_featviz.demo import DEMO_LAYERS, ClassificationData, ImageClassifier


def current_rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class MemoryLog(pl.Callback):
    """Records RSS after each validation epoch (after the visualiser, which is registered first)."""

    def __init__(self, visualizer: FeatureVisualizer):
        self.visualizer = visualizer
        self.rows: list[tuple[int, float, float, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            renderer = self.visualizer._renderer
            child = current_rss_mib(renderer._process.pid) if renderer is not None else float("nan")
            self.rows.append((trainer.current_epoch, current_rss_mib(), peak, child))


class BankSize(FeatureVisualizer):
    """The visualiser, remembering the size of the last bank it analysed."""

    measured = 0

    def _analyse(self, trainer, pl_module, bank):
        self.measured = stored_bytes(bank)
        return super()._analyse(trainer, pl_module, bank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--background", action="store_true", help="render reports in the report process")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = ClassificationData.digits(batch_size=32)
    visualizer = BankSize(layers=list(DEMO_LAYERS), k=10, background=args.background)
    memory = MemoryLog(visualizer)
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            limit_train_batches=10,
            logger=TensorBoardLogger(logs),
            callbacks=[visualizer, memory],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(ImageClassifier(num_classes=10), datamodule=data)
    print(f"{'epoch':>5}{'RSS MiB':>10}{'peak MiB':>10}{'report process RSS MiB':>24}")
    for epoch, rss, peak, child in memory.rows:
        print(f"{epoch:>5}{rss:>10.0f}{peak:>10.0f}{child:>24.0f}")
    for column, name in [(1, "RSS"), (3, "report process RSS")]:
        after = [row[column] for row in memory.rows if row[0] >= 2 and row[column] == row[column]]
        if after:
            spread = max(after) - min(after)
            print(f"{name} from epoch 2 on: {min(after):.0f}-{max(after):.0f} MiB (spread {spread:.0f} MiB)")
    dims = {"input": 3 * 16 * 16, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512, "avgpool": 512}
    predicted = bank_bytes(len(data.val), dims, torch.float32, visualizer.thumbnail_size, num_classes=10)
    print(f"bank: predicted {predicted / 2**20:.2f} MiB, measured {visualizer.measured / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
