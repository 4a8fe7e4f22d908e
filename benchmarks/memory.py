"""Resident memory per epoch over a long run with the full callback, and the bank's predicted vs
measured size.

The quick start's model and data (ResNet-18, 1,000 validation digits at 32x32, six layers) with
every output on (kNN, grids, t-SNE 2-D and 3-D, projector, wrong-cluster, confusion), a few
training batches per epoch so that 20 epochs stay short. After each validation epoch: the
process's current resident set (RSS) and its peak so far; with ``--background``, also the RSS of
the report process. Target (issue 5): flat after epoch 2 — nothing the callback keeps grows with
the epochs.

    python benchmarks/memory.py [--epochs 20] [--background]

``--large`` instead measures a big bank: 20,000 validation images of 64x64 px, five layers (input and
four conv stages of a small CNN), every sample kept. ``trainer.validate`` runs twice, each in a fresh
process, with and without the callback (kNN, grids, gallery; no maps); the growth of the peak resident
set is compared with the bank size the callback predicts. Target (issue 13): growth <= 1.5x predicted.

    python benchmarks/memory.py --large

``--history`` measures what the training dynamics keep (issue 25): the label-issue layer's per-sample history
(``analysis.dynamics.SampleHistory``, appended each analysed epoch) for 2,000 and 20,000 samples and 10 classes, and
the training-batch margins (``analysis.history.TrainingHistory``) of 20,000 training samples: memory (``nbytes``) and
disk (its ``state_dict`` through ``torch.save``, as a checkpoint holds it) after 1, 10, 20 and 30 epochs (20 kept),
and the bytes per sample per epoch.

    python benchmarks/memory.py --history
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.capture.bank import BankData, bank_bytes
from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier

if TYPE_CHECKING:
    from lightning_featviz.analysis.dynamics import SampleHistory
    from lightning_featviz.analysis.history import TrainingHistory


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
            renderer = self.visualizer._reports.renderer
            child = current_rss_mib(renderer.pid) if renderer is not None else float("nan")
            self.rows.append((trainer.current_epoch, current_rss_mib(), peak, child))


def stored_bytes(bank: BankData) -> int:
    """Bytes a finalised bank actually holds."""
    tensors = [bank.indices, bank.labels, bank.preds, bank.confidences, bank.thumbnails, bank.probabilities]
    return sum(t.numel() * t.element_size() for t in [*tensors, *bank.vectors.values()])


class BankSize(FeatureVisualizer):
    """The visualiser, remembering the size of the last bank it analysed."""

    measured = 0

    def _analyse(self, trainer, pl_module, bank):
        self.measured = stored_bytes(bank)
        return super()._analyse(trainer, pl_module, bank)


LARGE = 20_000


class NoiseImages(torch.utils.data.Dataset):
    """``size`` 3x64x64 images, each a fixed function of its index (no file, no download), 10 classes."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        label = index % 10
        image = torch.rand(3, 64, 64, generator=generator) * 0.5 + label / 20
        return image, label


class SmallCNN(pl.LightningModule):
    """Four conv stages (16, 32, 64, 128 channels), global pool, linear head."""

    def __init__(self):
        super().__init__()
        widths = [3, 16, 32, 64, 128]
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = torch.nn.Linear(128, 10)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))

    def validation_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}


def large_case(with_callback: bool) -> dict:
    """Peak RSS of one ``validate`` over the 20,000 images, and the bank size the callback predicts."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(NoiseImages(LARGE), batch_size=250)
    layers = ["input", "stages.0", "stages.1", "stages.2", "stages.3"]
    visualizer = BankSize(
        layers, k=10, max_samples=LARGE, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            logger=TensorBoardLogger(logs),
            callbacks=[visualizer] if with_callback else [],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.validate(SmallCNN(), loader, verbose=False)
    dims = {"input": 3 * 16 * 16, "stages.0": 16, "stages.1": 32, "stages.2": 64, "stages.3": 128}
    return {
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "predicted_mib": bank_bytes(LARGE, dims, torch.float32, visualizer.capture.thumbnail_size) / 2**20,
        "measured_mib": visualizer.measured / 2**20,
    }


def run_large() -> None:
    results = {}
    for name in ("without", "with", "with-torch-knn"):
        command = [sys.executable, __file__, "--large-run", name]
        results[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    baseline, predicted = results["without"]["peak_mib"], results["with"]["predicted_mib"]
    print(f"{LARGE} samples, 64x64 px, 5 layers, every sample kept (trainer.validate, kNN + grids + gallery)")
    print(f"  bank predicted / measured: {predicted:.0f} / {results['with']['measured_mib']:.0f} MiB")
    print(f"  {'run':<42}{'peak RSS MiB':>14}{'growth MiB':>12}{'growth / bank':>15}")
    print(f"  {'without the callback':<42}{baseline:>14.0f}")
    for name, label in [
        ("with", "with it (kNN by FAISS where installed)"),
        ("with-torch-knn", "with it, kNN by torch (FAISS not importable)"),
    ]:
        growth = results[name]["peak_mib"] - baseline
        ratio = growth / predicted
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(
            f"  {label:<42}{results[name]['peak_mib']:>14.0f}{growth:>12.0f}{ratio:>15.2f}  (target <= 1.5: {verdict})"
        )


def saved_bytes(state: dict) -> int:
    """Bytes of ``state`` through ``torch.save`` (as a Lightning checkpoint stores the callback's state)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def _history_row(
    name: str, history: SampleHistory | TrainingHistory, size: int, epochs: int, previous: tuple[int, int] | None
) -> tuple[int, int]:
    """Print one row: the history's memory and saved size after ``epochs`` epochs, and the bytes per sample per
    epoch since ``previous`` (epochs, memory); return (epochs, memory)."""
    memory, disk = history.nbytes, saved_bytes(history.state_dict())
    per = "" if previous is None else f"{(memory - previous[1]) / size / (epochs - previous[0]):.1f}"
    print(f"{name:<34}{size:>8}{epochs:>7}{memory / 1e6:>11.2f}{disk / 1e6:>9.2f}{per:>16}")
    return epochs, memory


def run_history() -> None:
    """Memory and disk of the training dynamics' histories per epoch, from the real objects."""
    from lightning_featviz.analysis.dynamics import SampleHistory
    from lightning_featviz.analysis.history import TrainingHistory

    classes, generator = 10, torch.Generator().manual_seed(0)
    print(f"{'object':<34}{'samples':>8}{'epochs':>7}{'memory MB':>11}{'disk MB':>9}{'B/sample/epoch':>16}")
    for size in (2000, 20000):
        history, previous = SampleHistory(classes, keep=torch.arange(size)), None
        for epoch in range(30):
            probabilities = torch.rand(size, classes, generator=generator).softmax(dim=1)
            labels = torch.randint(0, classes, (size,), generator=generator)
            share, scores = torch.rand(size, generator=generator), torch.rand(size, generator=generator)
            history.append(epoch, torch.arange(size), labels, probabilities, share, scores)
            if epoch + 1 in (1, 10, 20, 30):
                previous = _history_row("SampleHistory (validation)", history, size, epoch + 1, previous)
    size, training, previous = 20000, TrainingHistory(), None
    for epoch in range(30):
        order = torch.randperm(size, generator=generator)
        margins = torch.randn(size, generator=generator)
        training.append(epoch, {"indices": order, "labels": order % classes, "margins": margins})
        if epoch + 1 in (1, 10, 20, 30):
            previous = _history_row("TrainingHistory (training AUM)", training, size, epoch + 1, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--background", action="store_true", help="render reports in the report process")
    parser.add_argument("--large", action="store_true", help="the 20,000-sample bank: RSS growth vs prediction")
    parser.add_argument("--history", action="store_true", help="the training dynamics' histories per epoch")
    parser.add_argument("--large-run", choices=["with", "without", "with-torch-knn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_run:
        if args.large_run == "with-torch-knn":
            sys.modules["faiss"] = None  # type: ignore[assignment]  # `import faiss` fails: the torch search runs
        print(json.dumps(large_case(args.large_run != "without")))
        return
    if args.large:
        run_large()
        return
    if args.history:
        run_history()
        return
    torch.manual_seed(0)
    data = ClassificationData.digits(batch_size=32)
    visualizer = BankSize(
        layers=list(DEMO_LAYERS),
        k=10,
        overhead=None,
        outputs=OutputOptions(every_n_epochs=1),  # every output every epoch
        maps=MapOptions(every_n_epochs=1),
        resources=ResourceOptions(background=args.background),
    )
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
    predicted = bank_bytes(len(data.val), dims, torch.float32, visualizer.capture.thumbnail_size, num_classes=10)
    print(f"bank: predicted {predicted / 2**20:.2f} MiB, measured {visualizer.measured / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
