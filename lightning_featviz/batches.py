"""Reading images, labels and (optionally) dataset indices out of a validation batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

IMAGE_KEYS = ("image", "images", "img", "input", "inputs", "x", "pixel_values")
LABEL_KEYS = ("label", "labels", "target", "targets", "y")
INDEX_KEYS = ("index", "indices", "idx")
EXTRACTOR_HINT = (
    "Hint: pass `batch_extractor=lambda batch: (images, labels)` (or `(images, labels, dataset_indices)`) "
    "to FeatureVisualizer."
)


class Batch(NamedTuple):
    """images: (B, C, H, W); labels: (B,) int64; indices: (B,) dataset indices, or None if unknown."""

    images: Tensor
    labels: Tensor
    indices: Tensor | None


def default_extractor(batch: Any) -> tuple[Any, ...]:
    """Read ``(x, y, ...)`` tuples/lists and dicts with common image/label/index keys."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        image = next((batch[key] for key in IMAGE_KEYS if key in batch), None)
        label = next((batch[key] for key in LABEL_KEYS if key in batch), None)
        index = next((batch[key] for key in INDEX_KEYS if key in batch), None)
        if image is not None and label is not None:
            return (image, label) if index is None else (image, label, index)
        raise TypeError(
            f"Expected a dict batch with an image key {IMAGE_KEYS} and a label key {LABEL_KEYS}, "
            f"but got keys {sorted(batch)}. {EXTRACTOR_HINT}"
        )
    raise TypeError(f"Expected a batch `(images, labels)` or a dict, but got {type(batch).__name__}. {EXTRACTOR_HINT}")


def read_batch(batch: Any, extractor: Callable[[Any], tuple[Any, ...]] | None = None) -> Batch:
    """Apply the extractor and check what it returned.

    Raises:
        TypeError: images are not a (B, C, H, W) float tensor, or labels are not integer class ids.
    """
    parts = (extractor or default_extractor)(batch)
    if not isinstance(parts, (tuple, list)) or len(parts) not in (2, 3):
        raise TypeError(
            f"Expected the batch extractor to return (images, labels[, indices]), but got {type(parts).__name__}."
        )
    images, labels = parts[0], parts[1]
    indices = parts[2] if len(parts) == 3 else None
    if not isinstance(images, Tensor) or images.ndim not in (3, 4) or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"Expected images to be a float tensor (B, C, H, W), but got {shape}. {EXTRACTOR_HINT}")
    if images.ndim == 3:
        images = images[:, None]
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
        raise TypeError(
            f"Expected labels to be integer class ids of shape (B,), but got dtype {labels.dtype} and shape "
            f"{tuple(labels.shape)}. {EXTRACTOR_HINT}"
        )
    if labels.shape[0] != images.shape[0]:
        raise TypeError(f"Expected one label per image, but got {labels.shape[0]} labels for {images.shape[0]} images.")
    if indices is not None:
        indices = torch.as_tensor(indices).long().flatten()
    return Batch(images, labels.long(), indices)


def _scores(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) predicted class ids and (B,) their softmax probability, from (B, C) logits."""
    confidence, preds = logits.detach().float().softmax(dim=1).max(dim=1)
    return preds.cpu(), confidence.cpu()


def scores_of(output: Any) -> tuple[Tensor, Tensor] | None:
    """Predictions and confidences from a forward's output: (B, C) logits, or a tuple/list starting with them."""
    logits = (
        output if isinstance(output, Tensor) else (output[0] if isinstance(output, (tuple, list)) and output else None)
    )
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] > 1:
        return _scores(logits)
    return None


def probabilities_of(output: Any) -> Tensor | None:
    """(B, C) float32 softmax of a forward's output ((B, C) logits, or a tuple/list starting with them), else None."""
    logits = (
        output if isinstance(output, Tensor) else (output[0] if isinstance(output, (tuple, list)) and output else None)
    )
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] > 1:
        return logits.detach().float().softmax(dim=1).cpu()
    return None


def unknown_predictions(size: int) -> tuple[Tensor, Tensor]:
    """Predictions -1 and confidences NaN: the model's output was not seen."""
    return torch.full((size,), -1, dtype=torch.int64), torch.full((size,), float("nan"))


def predictions_from(outputs: Any) -> tuple[Tensor, Tensor] | None:
    """Predicted class ids and confidences from a validation_step's return value (logits or preds)."""
    if isinstance(outputs, Mapping):
        if isinstance(outputs.get("logits"), Tensor) and outputs["logits"].ndim == 2:
            return _scores(outputs["logits"])
        if isinstance(outputs.get("preds"), Tensor) and outputs["preds"].ndim == 1:
            preds = outputs["preds"].detach().long().cpu()
            return preds, torch.full(preds.shape, float("nan"))
    return None
