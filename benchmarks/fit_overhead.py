"""The quick start's ``fit`` wall time with the full callback over ``fit`` without it, same seed,
same process: with the heavy report on the background worker, and without it.

Full callback: kNN scalars, neighbour grids, 2-D and 3-D t-SNE maps, projector, wrong-cluster
gallery and export, confusion matrices — every epoch, six layers, 1,000 validation digits. The fit
without the callback runs first and last; the baseline is the faster of the two (the first also
pays for warming up torch). Target (issue 5): <= 1.25 with the background worker.

    python benchmarks/fit_overhead.py [--epochs 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer
from lightning_featviz.demo import DEMO_LAYERS, ClassificationData, ImageClassifier


def fit_seconds(epochs: int, visualizer: FeatureVisualizer | None) -> float:
    pl.seed_everything(0, verbose=False)
    data = ClassificationData.digits(batch_size=32)
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=TensorBoardLogger(logs),
            callbacks=[visualizer] if visualizer else [],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        start = time.perf_counter()
        trainer.fit(ImageClassifier(num_classes=10), datamodule=data)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    layers = list(DEMO_LAYERS)
    plain_first = fit_seconds(args.epochs, None)
    foreground = fit_seconds(args.epochs, FeatureVisualizer(layers, k=10, background=False))
    background = fit_seconds(args.epochs, FeatureVisualizer(layers, k=10, background=True))
    plain_last = fit_seconds(args.epochs, None)
    base = min(plain_first, plain_last)
    print(f"{'fit, ' + str(args.epochs) + ' epochs':<40}{'seconds':>9}{'ratio':>8}")
    print(f"{'no callback (first / last run)':<40}{plain_first:>4.0f} /{plain_last:>3.0f}{1.0:>8.2f}")
    print(f"{'full callback, report on the worker':<40}{background:>9.0f}{background / base:>8.2f}")
    print(f"{'full callback, report in the loop':<40}{foreground:>9.0f}{foreground / base:>8.2f}")
    print(f"target: <= 1.25 with the worker -> {'met' if background / base <= 1.25 else 'NOT met'}")


if __name__ == "__main__":
    main()
