"""Loading a classifier and its images without the demo: a torchvision model sized for its classes, and an
ImageFolder resized and normalised as ImageNet models expect. Used by the post-hoc analysis, the CLI and the demo."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_folder(
    root: str | Path, image_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
):
    """A torchvision ``ImageFolder`` (``root/<class>/<image>``) resized, centre-cropped and normalised."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return datasets.ImageFolder(str(root), transform=transform)


def build_model(arch: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """A torchvision classifier with its last layer sized for ``num_classes``.

    ``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; downloaded by
    torchvision, so online only) or the path of a saved ``state_dict``; ``None`` is random init.
    """
    from torchvision import models

    if weights is not None and Path(weights).is_file():
        model = models.get_model(arch)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        model = models.get_model(arch, weights=weights)
    head_name, head = next((n, m) for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear))
    parent = model.get_submodule(head_name.rpartition(".")[0]) if "." in head_name else model
    setattr(parent, head_name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))
    return model


def module_class(class_path: str) -> Any:
    """The class at ``package.module.Class``; a ValueError that says why where it does not import."""
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"Expected `module` to be a class path like 'package.module.Class', but got {class_path!r}.")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"Expected `module` to be an importable class, but got {class_path!r} ({type(error).__name__}: {error}).\n"
            "Hint: its package must import here (installed, or on PYTHONPATH)."
        ) from None
