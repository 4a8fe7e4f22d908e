"""Shared fixtures: a tiny CNN LightningModule and small slices of the built-in digits."""

from __future__ import annotations

import glob

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import Subset

from lightning_featviz.demo.datasets import ColouredDigits
from lightning_featviz.demo.model import ClassificationData


class TinyNet(pl.LightningModule):
    """conv -> BN -> in-place ReLU -> conv -> ReLU -> global pool -> linear, on 3x32x32 images."""

    def __init__(self, num_classes: int = 10, fail_at_batch: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.fail_at_batch = fail_at_batch

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.fail_at_batch is not None and not self.trainer.sanity_checking and batch_idx == self.fail_at_batch:
            raise RuntimeError("boom in validation_step")
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


@pytest.fixture(scope="session")
def digits_val() -> ColouredDigits:
    return ColouredDigits("val", seed=0)


@pytest.fixture
def small_data(digits_val) -> ClassificationData:
    """240 training and 160 validation images of the built-in digits."""
    train, val = Subset(digits_val, range(240)), Subset(digits_val, range(240, 400))
    return ClassificationData(train, val, digits_val.classes, batch_size=32)


@pytest.fixture
def one_thread():
    """Small forwards: one thread is far faster than two that spin-wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = dict(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=4,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        deterministic=True,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def read_events(log_dir) -> EventAccumulator:
    """TensorBoard's own reader over every event file of a run directory."""
    paths = glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True)
    assert paths, f"no event file under {log_dir}"
    accumulator = EventAccumulator(str(paths[0]).rsplit("/", 1)[0], size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def hooks_left(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
