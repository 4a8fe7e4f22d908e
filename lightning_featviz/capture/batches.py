"""Reading inputs, labels and (optionally) dataset indices out of a validation batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

INPUT_KEYS = ("image", "images", "img", "input", "inputs", "x", "pixel_values", "input_ids", "features")
LABEL_KEYS = ("label", "labels", "target", "targets", "y")
INDEX_KEYS = ("index", "indices", "idx")
EXTRACTOR_HINT = (
    "Hint: pass `batch_extractor=lambda batch: (inputs, labels)` (or `(inputs, labels, dataset_indices)`) "
    "to FeatureVisualizer inside `capture=CaptureOptions(...)`."
)


class Batch(NamedTuple):
    """inputs: (B, ...) what the model sees (images (B, C, H, W), sequences, vectors or token ids, see
    :mod:`lightning_featviz.capture.inputs`); labels: (B,) int64; indices: (B,) dataset indices, or None if unknown."""

    inputs: Tensor
    labels: Tensor
    indices: Tensor | None


def default_extractor(batch: Any) -> tuple[Any, ...]:
    """Read ``(x, y, ...)`` tuples/lists and dicts with common input/label/index keys."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        image = next((batch[key] for key in INPUT_KEYS if key in batch), None)
        label = next((batch[key] for key in LABEL_KEYS if key in batch), None)
        index = next((batch[key] for key in INDEX_KEYS if key in batch), None)
        if image is not None and label is not None:
            return (image, label) if index is None else (image, label, index)
        raise TypeError(
            f"Expected a dict batch with an input key {INPUT_KEYS} and a label key {LABEL_KEYS}, "
            f"but got keys {sorted(batch)}. {EXTRACTOR_HINT}"
        )
    raise TypeError(f"Expected a batch `(images, labels)` or a dict, but got {type(batch).__name__}. {EXTRACTOR_HINT}")


class UnsupportedTargets(TypeError):
    """The labels are not single-label class ids (regression, multi-label): kNN purity is not defined for them."""


_SUPPORTED = (
    "FeatureVisualizer analyses single-label classifiers (kNN purity counts the neighbours of the same class); "
    "nothing is logged for targets that are not class ids."
)


def _targets_message(labels: Tensor) -> str:
    """What ``labels`` are (regression, one-hot, multi-hot, soft) and what to do, in the message template."""
    got = f"dtype {labels.dtype} and shape {tuple(labels.shape)}"
    values = labels.detach().float()
    if labels.ndim == 2 and not labels.is_complex():
        binary = bool(((values == 0) | (values == 1)).all())
        one_per_row = bool((values.sum(dim=1) == 1).all())
        if binary and one_per_row:
            what, hint = "one-hot labels", "pass `batch_extractor=lambda batch: (batch[0], batch[1].argmax(1))`"
        elif binary:
            what = "multi-hot labels (several classes per sample: multi-label)"
            hint = (
                "multi-label targets have no single class per sample; pass a `batch_extractor` returning one class "
                "id per sample if one label is primary"
            )
        else:
            what = "soft labels"
            hint = "if each row's largest value is its class, pass `batch_extractor=lambda b: (b[0], b[1].argmax(1))`"
    elif labels.is_floating_point() and labels.ndim == 1:
        what = "float targets (regression)"
        hint = (
            "regression targets have no classes; bin them into class ids in a `batch_extractor` (`torch.bucketize`) "
            "to analyse them"
        )
    else:
        what, hint = "targets that are not class ids", "pass a `batch_extractor` returning (inputs, class ids (B,))"
    return (
        f"Expected labels to be integer class ids of shape (B,), but got {what} ({got}). {_SUPPORTED} Hint: {hint} "
        "(inside `capture=CaptureOptions(...)`)."
    )


def check_class_ids(labels: Tensor, width: int | None) -> None:
    """Raise :class:`UnsupportedTargets` when integer ``labels`` (B,) cannot be class ids of a model whose output has
    ``width`` values per sample (a label at or above the width, or one output value: integer-valued regression);
    ``width`` None: the output was not seen."""
    if width is None or len(labels) == 0:
        return
    top = int(labels.max())
    if width < 2 or top >= width:  # negative labels are ignored samples (an ignore index): told later
        raise UnsupportedTargets(
            f"Expected labels to be class ids below the model's output width {width}, but got integer targets up to "
            f"{top}: integer-valued regression targets, not class ids. {_SUPPORTED} Hint: bin "
            "them into class ids in a `batch_extractor` to analyse them (inside `capture=CaptureOptions(...)`)."
        )


def output_width(output: Any) -> int | None:
    """Values per sample of a forward's output: C of (B, C) logits, 1 of (B,) outputs; None when unknown."""
    output = logits_of(output)
    tensor = (
        output if isinstance(output, Tensor) else (output[0] if isinstance(output, (tuple, list)) and output else None)
    )
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.ndim not in (1, 2):
        return None
    return 1 if tensor.ndim == 1 else int(tensor.shape[1])


def read_batch(batch: Any, extractor: Callable[[Any], tuple[Any, ...]] | None = None) -> Batch:
    """Apply the extractor and check what it returned.

    Raises:
        TypeError: inputs are not a tensor, or labels are not integer class ids of shape (B,).
    """
    parts = (extractor or default_extractor)(batch)
    if not isinstance(parts, (tuple, list)) or len(parts) not in (2, 3, 4):
        raise TypeError(
            "Expected the batch extractor to return (inputs, labels[, indices[, attention_mask]]), but got "
            f"{type(parts).__name__}."
        )
    inputs, labels = parts[0], parts[1]
    indices = parts[2] if len(parts) >= 3 else None
    if not isinstance(inputs, Tensor) or inputs.ndim == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise TypeError(
            f"Expected inputs to be a tensor with a batch dimension (images (B, C, H, W), sequences (B, T, F), "
            f"vectors (B, F) or token ids (B, T)), but got {shape}. {EXTRACTOR_HINT}"
        )
    if isinstance(labels, (list, tuple)) and any(isinstance(label, str) for label in labels):
        raise TypeError(
            f"Expected labels to be integer class ids, but got strings such as {next(iter(labels))!r}. Hint: map "
            "class names to ids in the dataset (ImageFolder's `class_to_idx`) and give the names as `class_names`."
        )
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
        raise UnsupportedTargets(_targets_message(labels))
    if labels.shape[0] != inputs.shape[0]:
        raise TypeError(f"Expected one label per input, but got {labels.shape[0]} labels for {inputs.shape[0]} inputs.")
    if indices is not None:
        indices = torch.as_tensor(indices).long().flatten()
    return Batch(inputs, labels.long(), indices)


def attention_mask_of(batch: Any, extractor: Callable[[Any], tuple[Any, ...]] | None = None) -> Tensor | None:
    """(B, T) nonzero at real tokens: the 4th item a ``batch_extractor`` returns, else a dict batch's
    ``"attention_mask"`` (HF tokenizer output) or ``"pixel_attention_mask"`` (an HF image processor's padded
    patches: SigLIP 2's head averages the real ones); None when the batch has none."""
    if extractor is not None:
        try:
            parts = extractor(batch)
        except Exception:  # read_batch reports a failing extractor
            return None
        mask = parts[3] if isinstance(parts, (tuple, list)) and len(parts) == 4 else None
    else:
        mask = None
        if isinstance(batch, Mapping):
            mask = batch.get("attention_mask", batch.get("pixel_attention_mask"))
    return mask if isinstance(mask, Tensor) and mask.ndim == 2 else None


def logits_of(output: Any) -> Any:
    """A forward's logits: ``output`` itself, or the ``logits`` of an HF ``ModelOutput`` (a dict with them)."""
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    return output


def _scores(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) predicted class ids and (B,) their softmax probability, from (B, C) logits."""
    confidence, preds = logits.detach().float().softmax(dim=1).max(dim=1)
    return preds.cpu(), confidence.cpu()


def scores_of(output: Any) -> tuple[Tensor, Tensor] | None:
    """Predictions and confidences from a forward's output: (B, C) logits, or a tuple/list starting with them."""
    output = logits_of(output)
    logits = (
        output if isinstance(output, Tensor) else (output[0] if isinstance(output, (tuple, list)) and output else None)
    )
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] > 1:
        return _scores(logits)
    return None


def probabilities_of(output: Any) -> Tensor | None:
    """(B, C) float32 softmax of a forward's output ((B, C) logits, or a tuple/list starting with them), else None."""
    found = scores_and_probabilities(output)
    return found[1] if found is not None else None


def scores_and_probabilities(output: Any) -> tuple[tuple[Tensor, Tensor], Tensor] | None:
    """What :func:`scores_of` and :func:`probabilities_of` give, from one softmax: ``((preds, confidences),
    probabilities)``, (B,), (B,) and (B, C) on the CPU; None where ``output`` holds no (B, C) logits."""
    output = logits_of(output)
    logits = (
        output if isinstance(output, Tensor) else (output[0] if isinstance(output, (tuple, list)) and output else None)
    )
    if not (isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] > 1):
        return None
    probabilities = logits.detach().float().softmax(dim=1)
    confidence, preds = probabilities.max(dim=1)
    return (preds.cpu(), confidence.cpu()), probabilities.cpu()


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
