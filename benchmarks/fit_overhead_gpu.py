"""``fit`` wall time on a GPU with the callback (report in the background) over ``fit`` without it:
ResNet-18 at 224 px and a ViT-S/16-size model (torchvision's ``VisionTransformer``: 12 layers, 6 heads,
384 wide, MLP 1,536; random init, nothing downloaded), target (issue 16) <= 1.05.

Data: the built-in coloured digits rendered at 224 px (1,000 validation images; the 797 training digits
in ``--train-copies`` renderings each), loaded by ``--workers`` processes into pinned memory. Training in
``--precision`` (bf16-mixed by default). The callback runs with its defaults (``layers="auto"``) and
``background=True``. For each model, the fit without the callback runs first and last (the baseline is
the faster of the two: the first also pays for warming up CUDA and cuDNN), the fit with it in between.

    python benchmarks/fit_overhead.py --gpu [--epochs 4] [--models resnet18 vit_s16]
    python benchmarks/fit_overhead_gpu.py ...   # the same

Without a GPU the script says so and stops (``--allow-cpu`` runs it on the CPU, for checking it works
with small ``--train-copies`` and ``--image-size``; such numbers say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_featviz import FeatureVisualizer, ResourceOptions
from lightning_featviz.demo.datasets import ColouredDigits
from lightning_featviz.demo.model import ClassificationData, ImageClassifier

TARGET = 1.05


def vit_s16(num_classes: int, image_size: int) -> nn.Module:
    """A ViT-S/16-size torchvision ``VisionTransformer`` (about 22 M parameters), random init."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=6,
        hidden_dim=384,
        mlp_dim=1536,
        num_classes=num_classes,
    )


class Classifier(ImageClassifier):
    """The quick start's classifier with ``self.model`` swapped for the benchmarked network."""

    def __init__(self, arch: str, num_classes: int, image_size: int):
        super().__init__(num_classes=num_classes, arch="resnet18")
        if arch == "vit_s16":
            self.model = vit_s16(num_classes, image_size)
        elif arch != "resnet18":
            raise ValueError(f"Expected `arch` to be 'resnet18' or 'vit_s16', but got {arch!r}.")


class PinnedData(ClassificationData):
    """The digits, loaded by worker processes into pinned memory, as a GPU run would load its data."""

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, shuffle=False)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:  # noqa: ANN001 - a torch Dataset
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )


def fit_seconds(args: argparse.Namespace, arch: str, data: PinnedData, with_callback: bool) -> float:
    """Wall time of one ``fit``, with the callback (defaults, background report) or without it."""
    pl.seed_everything(0, verbose=False)
    callbacks = [FeatureVisualizer(resources=ResourceOptions(background=True))] if with_callback else []
    model = Classifier(arch, len(data.classes), args.image_size)
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator="auto",
            devices=1,
            precision=args.precision,
            logger=TensorBoardLogger(logs),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="accepted for `fit_overhead.py --gpu` (always on here)")
    parser.add_argument("--models", nargs="+", default=["resnet18", "vit_s16"], choices=["resnet18", "vit_s16"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-copies", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (only to check the script)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print("no CUDA device: this benchmark measures a GPU run (--allow-cpu runs it anyway, as a check only)")
            return
        args.precision = "32-true" if args.precision == "bf16-mixed" else args.precision
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (a check only: not a GPU number)"
    train = ColouredDigits("train", image_size=args.image_size, train_copies=args.train_copies)
    val = ColouredDigits("val", image_size=args.image_size)
    data = PinnedData(train, val, train.classes, batch_size=args.batch_size, num_workers=args.workers)
    print(
        f"device: {device}; {len(train)} training / {len(val)} validation images at {args.image_size} px, "
        f"batch {args.batch_size}, {args.epochs} epochs, {args.precision}; callback: defaults, background=True"
    )
    print(f"{'model':<10}{'no callback first / last s':>28}{'with callback s':>17}{'ratio':>8}")
    verdicts = []
    for arch in args.models:
        first = fit_seconds(args, arch, data, with_callback=False)
        with_callback = fit_seconds(args, arch, data, with_callback=True)
        last = fit_seconds(args, arch, data, with_callback=False)
        ratio = with_callback / min(first, last)
        print(f"{arch:<10}{first:>15.1f} / {last:<10.1f}{with_callback:>17.1f}{ratio:>8.3f}", flush=True)
        verdicts.append(f"{arch} {ratio:.3f} ({'met' if ratio <= TARGET else 'NOT met'})")
    print(f"target: <= {TARGET} with the background report -> " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
