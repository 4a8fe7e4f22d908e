"""The quick start's ``fit`` wall time with the full callback over ``fit`` without it, same seed,
same process: with the heavy report in the background (a child process at the lowest CPU priority),
and in the training loop.

Full callback: kNN scalars, neighbour grids, 2-D and 3-D t-SNE maps, projector, wrong-cluster
gallery and export, confusion matrices — every epoch, six layers, 1,000 validation digits. The fit
without the callback runs first and last; the baseline is the faster of the two (the first also
pays for warming up torch). Target (issue 5): <= 1.25 with the background worker.

Two settings: training on every core (a CPU-only run: whatever the report costs, training waits
for), and training on all cores but one (``torch.set_num_threads``), as when a GPU trains and the
CPU has room: the background report then runs beside training instead of after it.

    python benchmarks/fit_overhead.py [--epochs 8]
    python benchmarks/fit_overhead.py --gpu [...]   # on a GPU: ResNet-18 and ViT-S/16 at 224 px (fit_overhead_gpu.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer
from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier


def fit_seconds(epochs: int, background: bool | None) -> float:
    """Wall time of the quick start's fit; ``background=None``: without the callback."""
    pl.seed_everything(0, verbose=False)
    data = ClassificationData.digits(batch_size=32)
    callbacks = [] if background is None else [FeatureVisualizer(list(DEMO_LAYERS), k=10, background=background)]
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=TensorBoardLogger(logs),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        start = time.perf_counter()
        trainer.fit(ImageClassifier(num_classes=10), datamodule=data)
        return time.perf_counter() - start


def measure(epochs: int, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    times = {"plain_first": fit_seconds(epochs, None)}
    times["loop"] = fit_seconds(epochs, False)
    times["background"] = fit_seconds(epochs, True)
    times["plain_last"] = fit_seconds(epochs, None)
    return times


def main() -> None:
    if "--gpu" in sys.argv[1:]:  # the GPU mode lives in its own script (benchmarks/ is on sys.path when run)
        from fit_overhead_gpu import main as gpu_main

        return gpu_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    settings = [(f"training on all {cores} cores", cores)]
    if cores > 1:
        settings.append((f"training on {cores - 1} of {cores} cores", cores - 1))
    print(f"{'fit, ' + str(args.epochs) + ' epochs':<46}{'seconds':>9}{'ratio':>8}")
    verdicts = []
    for title, threads in settings:
        times = measure(args.epochs, threads)
        base = min(times["plain_first"], times["plain_last"])
        print(title)
        first_last = f"{times['plain_first']:>4.0f} /{times['plain_last']:>3.0f}"
        print(f"{'  no callback (first / last run)':<46}{first_last}{1.0:>8.2f}")
        print(
            f"{'  full callback, report in the background':<46}{times['background']:>9.0f}"
            f"{times['background'] / base:>8.2f}"
        )
        print(f"{'  full callback, report in the loop':<46}{times['loop']:>9.0f}{times['loop'] / base:>8.2f}")
        verdicts.append(f"{title}: {'met' if times['background'] / base <= 1.25 else 'NOT met'}")
    print("target: <= 1.25 with the background worker -> " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
