"""The quick start: a torchvision classifier fine-tuned with the callback on built-in or ImageFolder data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_featviz.demo.datasets import ColouredDigits, stratified_split
from lightning_featviz.loading import IMAGENET_MEAN, IMAGENET_STD, build_model, image_folder

#: ResNet layers from pixels to the pooled features; not `layer4`, which `avgpool` only averages: pooled
#: to one vector per image (as the callback reduces conv maps) the two are identical.
DEMO_LAYERS = ("input", "layer1", "layer2", "layer3", "avgpool")


class ImageClassifier(pl.LightningModule):
    """Cross-entropy fine-tuning of a torchvision classifier (``self.model``), logging val_loss/val_acc."""

    def __init__(self, num_classes: int, arch: str = "resnet18", weights: str | None = None, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(arch, num_classes, weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)}


class ClassificationData(pl.LightningDataModule):
    """Train/val datasets with ``.classes``, plus the normalisation the images went through."""

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        classes: Sequence[str],
        batch_size: int = 64,
        num_workers: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        self.train, self.val, self.classes = train, val, list(classes)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.mean, self.std = mean, std

    @classmethod
    def digits(cls, batch_size: int = 64, seed: int = 0, image_size: int = 32) -> ClassificationData:
        """The built-in coloured digits (1,000 validation images, 2,391 training images)."""
        train = ColouredDigits("train", image_size=image_size, seed=seed)
        return cls(train, ColouredDigits("val", image_size=image_size, seed=seed), train.classes, batch_size)

    @classmethod
    def folder(
        cls, root: str | Path, image_size: int = 224, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0
    ) -> ClassificationData:
        """An ImageFolder; ``root/train`` and ``root/val`` are used when both exist, else a stratified split."""
        root = Path(root)
        if (root / "train").is_dir() and (root / "val").is_dir():
            train, val = image_folder(root / "train", image_size), image_folder(root / "val", image_size)
            return cls(train, val, train.classes, batch_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        full = image_folder(root, image_size)
        train_idx, val_idx = stratified_split(full.targets, val_fraction, seed)
        return cls(
            Subset(full, train_idx),
            Subset(full, val_idx),
            full.classes,
            batch_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
