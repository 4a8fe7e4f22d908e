"""Run by test_faults.py in a fresh process, as a user's script would train: TinyNet on digits with the callback
(``--no-callback``: without it), checkpoints in the log dir. No ``if __name__ == "__main__":`` guard on purpose:
the report process must not run this script again.

    python tests/fault_run.py LOG_DIR [--epochs 3] [--no-callback] [--background] [--resume]
        [--ready-at EPOCH]  # print READY (and wait) at the start of training epoch EPOCH

Prints ``SCRIPT_STARTED <pid>`` first, and ``FIT_ENDED <time.time()>`` when ``fit`` returns or raises.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

print(f"SCRIPT_STARTED {os.getpid()}", flush=True)  # once: a report process that ran this script would say so too

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyNet  # noqa: E402

from lightning_featviz import FeatureVisualizer, MapOptions, ResourceOptions  # noqa: E402
from lightning_featviz.demo.datasets import ColouredDigits  # noqa: E402
from lightning_featviz.demo.model import ClassificationData  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("log_dir")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--no-callback", action="store_true")
parser.add_argument("--background", action="store_true")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--ready-at", type=int, default=None)
args = parser.parse_args()


class Ready(pl.Callback):
    """Says when training epoch ``--ready-at`` starts (the reports of earlier epochs queued), then trains slowly
    so that the test's signal comes while it trains."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == args.ready_at:
            print("READY", flush=True)
            time.sleep(60)  # the test signals meanwhile


digits = ColouredDigits("val", seed=0)
data = ClassificationData(Subset(digits, range(240)), Subset(digits, range(240, 400)), digits.classes, batch_size=32)
visualizer = None
if not args.no_callback:
    visualizer = FeatureVisualizer(
        ["input", "conv2", "pool"],
        overhead=None,
        k=5,
        max_samples=100,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=args.background),
    )
log_dir = Path(args.log_dir)
checkpoints = ModelCheckpoint(dirpath=log_dir / "checkpoints", save_last=True)  # last.ckpt every epoch
trainer = pl.Trainer(
    default_root_dir=log_dir,
    max_epochs=args.epochs,
    limit_train_batches=4,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=1,
    logger=TensorBoardLogger(log_dir, version=0),
    callbacks=[c for c in (visualizer, checkpoints, Ready()) if c is not None],
)
try:
    trainer.fit(TinyNet(), datamodule=data, ckpt_path=log_dir / "checkpoints" / "last.ckpt" if args.resume else None)
finally:
    print(f"FIT_ENDED {time.time()}", flush=True)
