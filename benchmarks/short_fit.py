"""Short fits: a small CNN on the built-in digits, ``fit`` with the callback at its defaults over ``fit`` without it,
alternated in one process (issue 26: <= 1.30 at about 8 s of fit, <= 1.15 at about 30 s, on 2 cores).

The CNN's widths (:data:`CHANNELS`, 24 and 48) set the fits' scale: on the 2-core development machine its plain
fits took 6.9-9.1 s for 8 epochs and 23.7-34.5 s for 30 (three runs of ``fit_overhead.py``, 2026-12-08), the scale
of the issue's own check (7.2 s, 28.7 s). Until 2026-12-08 they were 16 and 32 (17-23 s for 30 epochs, a third
shorter than the target's scale, so the callback's per-epoch cost weighed up to half as much again);
``--channels 16 32`` runs that scale.

Each round runs a fit without the callback, then one with it (then, from the second round on, the other order
too), so machine noise and the first fit's warm-up hit both alike. The verdict is the median over the rounds of
each round's ratio (its callback fit over its plain fit, run back to back): the development machine's speed drifts
by 20-30% within minutes (in one run of ``fit_overhead.py`` the default case's plain fits took 101, 70 and 74 s),
which a ratio of the medians, or of the fastest fits, taken from different rounds counts as the callback's cost; a
round's two fits share the machine's speed of the moment. Both of those are printed as well. Imported by
``fit_overhead.py``, which prints it in the same run as its default case; ``python benchmarks/short_fit.py
[--epochs 8 30] [--rounds 3] [--channels 24 48]`` runs it alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_featviz import FeatureVisualizer
from lightning_featviz.demo.model import ClassificationData

#: epochs of each short fit -> its target ratio (about 1 s per epoch on 2 idle cores)
TARGETS = {8: 1.30, 30: 1.15}
#: the CNN's two convolutions' widths: the fits' scale (see the module's docstring)
CHANNELS = (24, 48)


class SmallCNN(pl.LightningModule):
    """Two conv blocks of ``channels`` widths and a linear head: (B, 3, 32, 32) -> (B, 10)."""

    def __init__(self, channels: tuple[int, int] = CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels[1], 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(self.pool(x).flatten(1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def fit_seconds(epochs: int, with_callback: bool, channels: tuple[int, int] = CHANNELS) -> tuple[float, list[str]]:
    """Wall time of one short fit, and the callback's schedule lines (empty without it)."""
    pl.seed_everything(0, verbose=False)
    data = ClassificationData.digits(batch_size=32)
    visualizer = FeatureVisualizer() if with_callback else None
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=TensorBoardLogger(logs),
            callbacks=[visualizer] if visualizer is not None else [],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
        )
        start = time.perf_counter()
        trainer.fit(SmallCNN(channels), datamodule=data)
        return time.perf_counter() - start, list(visualizer.schedule) if visualizer is not None else []


def alternated(
    fit: Callable[[bool], tuple[float, list[str]]], rounds: int
) -> tuple[list[float], list[float], list[str]]:
    """``rounds`` fits without and with the callback (``fit(with_callback)`` -> seconds, schedule lines), alternated
    (plain first in the first round): their seconds, and the callback's schedule."""
    plain: list[float] = []
    featviz: list[float] = []
    schedule: list[str] = []
    for round_ in range(rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for with_callback in order:
            seconds, lines = fit(with_callback)
            (featviz if with_callback else plain).append(seconds)
            schedule = lines or schedule
    return plain, featviz, schedule


def measure(epochs: int, rounds: int, channels: tuple[int, int]) -> tuple[list[float], list[float], list[str]]:
    """``rounds`` short fits of ``epochs`` without and with the callback, alternated."""
    return alternated(lambda with_callback: fit_seconds(epochs, with_callback, channels), rounds)


def paired_ratio(plain: list[float], featviz: list[float]) -> float:
    """The median over the rounds of each round's callback fit over its plain fit (``alternated``'s lists)."""
    return statistics.median(f / p for p, f in zip(plain, featviz, strict=True))


def report(epochs_list: list[int], rounds: int, channels: tuple[int, int] = CHANNELS) -> list[str]:
    """Print the short-fit rows; return the verdicts."""
    verdicts = []
    title = f"short fit: CNN {channels[0]}/{channels[1]}, digits, defaults"
    print(f"{title:<46}{'plain s':>9}{'featviz s':>10}{'paired':>8}{'medians':>9}{'fastest':>9}")
    for epochs in epochs_list:
        plain, featviz, schedule = measure(epochs, rounds, channels)
        paired, fastest = paired_ratio(plain, featviz), min(featviz) / min(plain)
        medians = statistics.median(featviz) / statistics.median(plain)
        runs = " ".join(f"{p:.1f}/{f:.1f}" for p, f in zip(plain, featviz, strict=True))
        print(f"{'  ' + str(epochs) + ' epochs (' + str(rounds) + ' rounds)':<46}", end="")
        print(f"{statistics.median(plain):>9.1f}{statistics.median(featviz):>10.1f}", end="")
        print(f"{paired:>8.2f}{medians:>9.2f}{fastest:>9.2f}   (plain/featviz per round: {runs})")
        for line in schedule:
            print(f"      {line}")
        target = TARGETS.get(epochs)
        if target is not None:
            met = "met" if paired <= target else "NOT met"
            verdicts.append(
                f"{epochs} epochs, paired {paired:.3f} (ratio of medians {medians:.2f}, of fastest {fastest:.2f}); "
                f"target <= {target:.2f}: {met}"
            )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=list(TARGETS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--channels", type=int, nargs=2, default=list(CHANNELS), help="the CNN's widths (the scale)")
    args = parser.parse_args()
    for verdict in report(args.epochs, args.rounds, tuple(args.channels)):
        print(verdict)


if __name__ == "__main__":
    main()
