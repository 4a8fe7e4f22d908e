"""Analyse a trained classifier on a data set, without training: the callback run by ``trainer.validate``.

    from lightning_featviz.posthoc import analyse_checkpoint
    analysis = analyse_checkpoint("model.ckpt", "food/val", "featviz_report", arch="resnet18")

writes a TensorBoard log dir and a static report (``report/index.html``) with the same figures.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_featviz.callback import FeatureVisualizer
from lightning_featviz.capture.batches import logits_of
from lightning_featviz.loading import IMAGENET_MEAN, IMAGENET_STD, build_model, image_folder, module_class
from lightning_featviz.options import CaptureOptions, OutputOptions, group_of


@dataclass
class PosthocResult:
    """Where the artefacts went, and what the callback found.

    Attributes:
        log_dir: the TensorBoard log dir (``tensorboard --logdir`` it).
        report: the static report's page (``index.html``), next to its PNG figures and ``metrics.csv``.
        history: kNN purity and accuracy per layer (one row per layer).
        wrong_cluster: dataset indices of the images in the wrong cluster, per layer.
    """

    log_dir: Path
    report: Path
    history: list[dict[str, Any]]
    wrong_cluster: dict[str, list[int]]


class _Evaluation(pl.LightningModule):
    """A plain classifier as a LightningModule that only validates (its layers are under ``model.``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.model(x))  # an HF model returns a ModelOutput holding them

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())


def load_classifier(arch: str, checkpoint: str | Path, num_classes: int) -> nn.Module:
    """A torchvision ``arch`` with a ``num_classes`` head and the weights of ``checkpoint``.

    ``checkpoint`` is a saved ``state_dict`` or a Lightning checkpoint whose module holds the
    network under one attribute (``self.model``, say): the prefix is found and stripped.
    """

    model = build_model(arch, num_classes)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    wanted = set(model.state_dict())
    if not wanted <= set(state):
        prefixes = {key.split(".", 1)[0] + "." for key in state if "." in key}
        for prefix in sorted(prefixes):
            stripped = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            if wanted <= set(stripped):
                state = stripped
                break
    model.load_state_dict(state)
    return model


def load_module(class_path: str, checkpoint: str | Path, **overrides: Any) -> pl.LightningModule:
    """``package.module.ClassName.load_from_checkpoint(checkpoint, **overrides)`` on the CPU.

    A ``weights`` argument of the class (pretrained weights to start from, as the demo's
    ``ImageClassifier`` has) is set to None unless overridden: the checkpoint holds the weights, so
    nothing is downloaded.
    """
    cls = module_class(class_path)
    if "weights" in inspect.signature(cls.__init__).parameters:
        overrides.setdefault("weights", None)
    return cls.load_from_checkpoint(checkpoint, map_location="cpu", **overrides)


def evaluation_folder(root: str | Path) -> Path:
    """The ImageFolder to analyse under ``root``: ``root/val`` when ``root`` holds ``train`` and ``val``
    folders (the layout ``featviz demo --data`` also reads), else ``root`` itself."""
    root = Path(root)
    return root / "val" if (root / "train").is_dir() and (root / "val").is_dir() else root


def analyse(
    model: nn.Module,
    data: str | Path | Dataset,
    out_dir: str | Path,
    layers: Sequence[str] | Mapping[str, str] | Literal["auto"] = "auto",
    image_size: int = 224,
    normalize: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator: str = "auto",
    progress: bool = True,
    **options: Any,
) -> PosthocResult:
    """Run the callback's analysis of ``model`` on ``data`` once and write its artefacts under ``out_dir``.

    Args:
        model: a classifier (``nn.Module``: its layers are named as in ``model.named_modules()``) or
            a LightningModule (used as it is, with its own ``validation_step``).
        data: an ImageFolder directory (``root/<class>/<image>``, or ``root/val/<class>/<image>`` next to
            ``root/train``; images resized to ``image_size`` and, with ``normalize``, normalised with
            ImageNet's statistics, as the model saw them in training) or a Dataset of ``(image, label)``.
        out_dir: gets ``events.out.tfevents.*`` and the projector files (a TensorBoard log dir) and
            ``report/`` (PNG figures, ``metrics.csv`` and ``index.html``).
        layers: the layers to analyse (see :class:`FeatureVisualizer`); ``"auto"``: the input, the main
            stages and the pooled feature before the head (see ``docs/layers.md``).
        options: further :class:`FeatureVisualizer` arguments (``k``, ``max_samples``, ...).
    """
    out_dir = Path(out_dir)
    if isinstance(data, (str, Path)):
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        dataset: Dataset = image_folder(evaluation_folder(data), image_size, mean, std)
    else:
        dataset = data
    capture = group_of("capture", options.pop("capture", CaptureOptions()))
    if isinstance(data, (str, Path)) and normalize and capture.image_mean is None:
        capture = replace(capture, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    outputs = replace(group_of("outputs", options.pop("outputs", OutputOptions())), report_dir=out_dir / "report")
    module = model if isinstance(model, pl.LightningModule) else _Evaluation(model)
    visualizer = FeatureVisualizer(layers, **options, capture=capture, outputs=outputs)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=TensorBoardLogger(out_dir, name="", version=""),
        callbacks=[visualizer],
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=out_dir,
    )
    trainer.validate(module, DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers))
    report = out_dir / "report" / "index.html"
    if not report.exists():
        raise RuntimeError(f"FeatureVisualizer analysed nothing on {data!r} (see the warnings above).")
    return PosthocResult(out_dir, report, list(visualizer.history), dict(visualizer.wrong_cluster_indices))


def analyse_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path,
    arch: str | None = None,
    module: str | None = None,
    **options: Any,
) -> PosthocResult:
    """:func:`analyse` a checkpoint on an ImageFolder: what ``featviz analyse`` runs.

    Give ``arch`` (a torchvision architecture, its head sized to the folder's classes; see
    :func:`load_classifier`) or ``module`` (a LightningModule class path; see :func:`load_module`).
    Class names are the folder names. ``options`` go to :func:`analyse` (``layers``, ``k``, ...).
    """
    from torchvision.datasets import ImageFolder

    if (arch is None) == (module is None):
        raise ValueError(f"Expected exactly one of `arch` and `module`, but got arch={arch!r}, module={module!r}.")
    classes = ImageFolder(str(evaluation_folder(data))).classes
    model = (
        load_classifier(arch, checkpoint, len(classes)) if arch is not None else load_module(str(module), checkpoint)
    )
    return analyse(model, data, out_dir, **{"class_names": classes, **options})
