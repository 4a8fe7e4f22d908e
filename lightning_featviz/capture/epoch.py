"""One rank's capture of the validation epochs: each batch read, its layers reduced to vectors and the kept
samples' rows added to a :class:`~lightning_featviz.capture.bank.FeatureBank`.

No Lightning here: the callback says when an epoch starts and ends and hands in each batch; this
object owns the hooks, the bank, the input's kind and the bank's size check against the memory budget.

Over 300 lines because the per-batch checks (dataset indices, layers that change shape, the input's kind,
the memory budget) all guard one bank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from lightning_featviz.capture.bank import Choice, FeatureBank, bank_bytes, to_thumbnails
from lightning_featviz.capture.batches import (
    UnsupportedTargets,
    attention_mask_of,
    check_class_ids,
    output_width,
    predictions_from,
    probabilities_of,
    read_batch,
    scores_and_probabilities,
    unknown_predictions,
)
from lightning_featviz.capture.compiled import eager
from lightning_featviz.capture.hooks import INPUT_LAYER, ActivationCapture, LayerReduction
from lightning_featviz.capture.inputs import (
    InputKind,
    as_images,
    check_input_kind,
    input_kind,
    input_width,
    reduce_input,
)
from lightning_featviz.capture.pooling import KnownModel
from lightning_featviz.capture.thumbnail_memo import ThumbnailMemo
from lightning_featviz.capture.warn import Warn


class CaptureFields(Protocol):
    """What a capture reads of the user's ``capture=`` options (:class:`lightning_featviz.CaptureOptions`, which
    ``capture/`` cannot import: the package's top level sits above it)."""

    @property
    def reference(self) -> Literal["val", "train"]: ...
    @property
    def max_reference(self) -> int: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def input_size(self) -> int: ...
    @property
    def input_kind(self) -> InputKind | None: ...
    @property
    def thumbnail_size(self) -> int: ...
    @property
    def image_mean(self) -> Sequence[float] | None: ...
    @property
    def image_std(self) -> Sequence[float] | None: ...
    @property
    def storage_dtype(self) -> Literal["float32", "float16"]: ...
    @property
    def batch_extractor(self) -> Callable[[Any], tuple[Any, ...]] | None: ...


@dataclass(frozen=True)
class CaptureSettings:
    """What a capture reads: the ``capture=`` options as the user gave them, the callback's top-level arguments it
    needs, and whether any output shows thumbnails."""

    capture: CaptureFields
    k: int
    max_samples: int
    seed: int
    memory_budget_mb: float
    strict: bool
    shows_images: bool = field(default=True)


class ValidationCapture:
    """The hooks, the input's kind and (during a captured epoch) the bank of one rank.

    Args:
        options: what to capture and how much memory it may take.
        warn: ``warn(key, message)``, warning once per key.
        info: logs a line once (rank 0's ``rank_zero_info`` in the callback).
    """

    def __init__(self, options: CaptureSettings, warn: Warn, info: Callable[[str], None]):
        self.options = options
        self._warn = warn
        self._info = info
        self.paths: dict[str, str] = {}  # module path -> display name
        self.hooks: ActivationCapture | None = None
        self.bank: FeatureBank | None = None
        self.choice: Choice | None = None  # which captured samples the epoch's bank keeps
        self.dropped: set[str] = set()  # layers left out of this epoch (did not run, changed shape)
        self.index_batches: list[Tensor] | None = None
        self.over_budget = False  # the bank would exceed the memory budget: off for the rest of the run
        self._input_kind: InputKind | None = options.capture.input_kind  # told from the first batch when not given
        self._sized = False  # the bank's size was predicted and checked against the budget
        self._preds: tuple[Tensor, Tensor] | None = None  # (B,) predicted class, (B,) its probability
        self._probs: Tensor | None = None  # (B, C) the model's softmax
        self._output_hook: Any = None
        self._mask: Tensor | None = None  # (B, T) attention mask of the batch being run
        self._eager = ExitStack()  # a captured batch runs compiled code eagerly: the hooks fire
        self._width: int | None = None  # values per sample of the model's output (C of (B, C) logits)
        self.unsupported_targets = False  # labels are not class ids (regression, multi-label): nothing kept this run
        self._memo = ThumbnailMemo()  # each kept sample's thumbnail, made the first epoch it was kept

    def use(
        self,
        model: nn.Module,
        paths: dict[str, str],
        reduction: str | Mapping[str, LayerReduction],
        identified: Sequence[KnownModel] = (),
        activations: Mapping[str, str] | None = None,
    ) -> None:
        """Capture ``paths`` (module path -> display name) of ``model`` from now on, reduced as ``reduction`` says
        (see :func:`~lightning_featviz.capture.hooks.resolve_reductions`); ``identified``: token models whose
        pooling a probe found and ``activations`` its head applies (``{path: name in HEAD_ACTIVATIONS}``; a layer
        given a reduction keeps it) (:func:`~lightning_featviz.capture.default_layers.default_layers`)."""
        self.paths = paths
        self.hooks = ActivationCapture(model, list(paths), reduction, self.options.capture.pool_size)
        self.hooks.known.extend(identified)
        given = {} if isinstance(reduction, str) else reduction
        self.hooks.activations.update({path: name for path, name in (activations or {}).items() if path not in given})

    def forget_layers(self) -> None:
        self.paths, self.hooks = {}, None

    def start_epoch(
        self, model: nn.Module, dataset: Any, size: int, queries: Sequence[int], index_batches: list[Tensor] | None
    ) -> None:
        """A captured epoch over ``dataset`` of ``size`` samples: a new bank, the hooks on."""
        assert self.hooks is not None
        dtype = torch.float16 if self.options.capture.storage_dtype == "float16" else torch.float32
        choice = Choice(self.options.max_samples, self.options.k + 1, self.options.seed, tuple(queries))
        self.bank, self.choice, self.dropped = FeatureBank(size, choice, dtype), choice, set()
        self.index_batches = index_batches
        self._memo.start(dataset)
        self.hooks.register()
        self._output_hook = model.register_forward_hook(self._remember_predictions)

    def start_batch(self, batch: Any, probing: bool) -> None:
        """Before a validation batch's forward; ``probing``: the sanity check's first batch (how wide is each
        layer?)."""
        if self.hooks is not None:
            self.hooks.clear()
            self.hooks.batch_size = batch_size_of(batch, self.options.capture.batch_extractor)
            self._mask = attention_mask_of(batch, self.options.capture.batch_extractor)
            self.hooks.attention_mask = self._mask
            if probing and not self._sized and not self.hooks.attached:
                self.hooks.register()
            if self.hooks.attached:
                self._eager.close()
                self._eager.enter_context(eager())
        self._preds = self._probs = None

    def take_columns(self) -> dict[str, Any]:
        """The epoch's bank as columns to gather (empty when nothing was kept); the bank is let go."""
        columns = self.bank.columns() if self.bank is not None else {}
        self.bank = None
        if columns:
            self._memo.keep(columns["indices"], columns["thumbnails"])
        return columns

    def detach(self) -> None:
        self._eager.close()
        if self.hooks is not None:
            self.hooks.remove()
        if self._output_hook is not None:
            self._output_hook.remove()
            self._output_hook = None

    def _remember_predictions(self, module: Any, args: Any, output: Any) -> None:
        if self._preds is None:
            found = scores_and_probabilities(output)  # one softmax for both
            self._preds, self._probs = found if found is not None else (None, None)
            self._width = output_width(output)

    def _targets(self, error: UnsupportedTargets) -> None:
        """Labels that are not class ids found in training (integer-valued regression, told by the model's output
        width; any such labels without a sanity check): say so once (raise with ``strict``); nothing more is
        analysed this run. The sanity check's first batch raises instead (:meth:`probe`)."""
        if self.options.strict:
            raise error
        self.unsupported_targets = True
        self.detach()
        self._warn("targets", f"{error} FeatureVisualizer is off for this run; training goes on.")

    def probe(self, model: nn.Module, batch: Any) -> None:
        """The sanity check's first batch: read it, tell the input's kind, name layers that did not run,
        and size the bank against the memory budget."""
        self._eager.close()
        inputs, _, _ = read_batch(
            batch, self.options.capture.batch_extractor
        )  # labels that are not class ids fail here
        self.kind_of(inputs, model)
        if self._sized or self.hooks is None:
            return
        captured = self.hooks.pop()
        self.hooks.remove()
        missing = [path for path in self.paths if path != INPUT_LAYER and path not in captured]
        if missing:
            raise ValueError(
                f"Expected every layer in `layers` to run in the validation forward, but {missing} did not. "
                "Hint: name modules that `forward` calls (a module defined but unused, or only used in "
                "training, has no output to capture)."
            )
        self._check_memory(captured, inputs, sanity=True)

    def add_batch(self, model: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> bool:
        """Read one validation batch and add its kept rows to the bank; True when it went through (even
        with nothing to keep), False when the epoch cannot be analysed."""
        assert self.hooks is not None and self.bank is not None
        self._eager.close()
        captured = self.hooks.pop()
        if self.unsupported_targets:  # every epoch still runs on every rank (DDP gathers), with nothing kept
            return False
        try:
            inputs, labels, indices = read_batch(batch, self.options.capture.batch_extractor)
            check_class_ids(labels, self._width)
        except UnsupportedTargets as error:
            self._targets(error)
            return False
        if len(labels) == 0:  # an empty batch (a filtering collate): nothing ran, nothing to keep
            return True
        if indices is None:
            if (
                self.index_batches is None
                or batch_idx >= len(self.index_batches)
                or len(self.index_batches[batch_idx]) != len(labels)
            ):
                self._warn(
                    "indices",
                    "FeatureVisualizer cannot tell which dataset samples a validation batch holds: only a sampler "
                    "whose order is known (sequential, a list of indices, a non-shuffling DistributedSampler) "
                    "tells; a random, weighted or subset-random sampler draws a new order each time; nothing is "
                    "analysed. Hint: use shuffle=False and no sampler for validation, or return dataset indices "
                    "from `capture.batch_extractor`.",
                )
                return False
            indices = self.index_batches[batch_idx]
        self.kind_of(inputs, model)
        if not self._sized:
            self._check_memory(captured, inputs, sanity=False)
            if self.over_budget:
                return False
        vectors = self.vectors(inputs, captured, self._mask)
        preds_and_confidences = predictions_from(outputs) or self._preds
        if preds_and_confidences is None or len(preds_and_confidences[0]) != len(labels):
            preds_and_confidences = unknown_predictions(len(labels))
        preds, confidences = (values.cpu() for values in preds_and_confidences)
        step_logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        probs = probabilities_of(step_logits) if step_logits is not None else self._probs
        probs = probs if probs is not None and len(probs) == len(labels) else None
        thumbnails = self._memo.thumbnails(
            indices, lambda rows: self.thumbnails(inputs[rows] if not rows.all() else inputs)
        )
        self.bank.add(indices, labels.cpu(), preds, confidences, vectors, thumbnails, probs)
        return True

    def vectors(self, inputs: Tensor, captured: dict[str, Tensor], mask: Tensor | None = None) -> dict[str, Tensor]:
        """One (B, D) vector per sample for each layer still captured this epoch (``mask``: the batch's (B, T)
        attention mask, for token ids); a layer that did not run or whose vectors changed shape is left out for the
        rest of the epoch, with one warning."""
        vectors = {}
        for path, display in self.paths.items():
            if display in self.dropped:
                continue
            if path == INPUT_LAYER:
                vectors[display] = reduce_input(
                    inputs, self.kind_of(inputs), self.options.capture.input_size, mask
                ).cpu()
            elif path in captured:
                vectors[display] = captured[path]
            else:
                self._drop_layer(display, "it did not run in a validation forward")
                continue
            width, stored = tuple(vectors[display].shape[1:]), self.bank.width(display) if self.bank else None
            if stored is not None and width != stored:
                del vectors[display]
                self._drop_layer(display, f"its vectors changed shape from {stored} to {width} within the epoch")
        return vectors

    def _drop_layer(self, layer: str, reason: str) -> None:
        message = f"Layer {layer!r} is left out of this epoch's analysis: {reason}. The other layers go on."
        if self.options.strict:
            raise ValueError(message)
        self.dropped.add(layer)
        if self.bank is not None:
            self.bank.drop(layer)
        self._warn(f"dropped/{layer}", message)

    def kind_of(self, inputs: Tensor, model: nn.Module | None = None) -> InputKind:
        """The input's kind (``input_kind``, else told from the first batch and the model), the same all run.

        Raises:
            TypeError: the batch does not have the shape and dtype of that kind.
        """
        if self._input_kind is None:
            self._input_kind = self.options.capture.input_kind or input_kind(inputs, model)
            if self._input_kind != "image":
                self._warn(
                    "not-images",
                    f"FeatureVisualizer sees {self._input_kind} inputs {tuple(inputs.shape)}, not images: neighbour "
                    "grids, the wrong-cluster gallery and projector thumbnails are left out; every other output "
                    "is made. Hint: pass `capture.input_kind` if that is not what the inputs are.",
                )
        check_input_kind(inputs, self._input_kind)
        return self._input_kind

    def _check_memory(self, captured: dict[str, Tensor], inputs: Tensor, sanity: bool) -> None:
        """Predict the bank's size from one batch's vectors, log it once, and hold it to the budget."""
        if any(path != INPUT_LAYER and path not in captured for path in self.paths):
            return  # a layer did not run on this batch: try again on the next one
        self._sized = True
        options = self.options
        width = input_width(tuple(inputs.shape), self.kind_of(inputs), options.capture.input_size)
        dims = {
            display: width if path == INPUT_LAYER else int(captured[path][0].numel())
            for path, display in self.paths.items()
        }
        rows = options.max_samples + (options.capture.max_reference if options.capture.reference == "train" else 0)
        dtype = torch.float16 if options.capture.storage_dtype == "float16" else torch.float32
        shown = options.shows_images and self._input_kind == "image"
        classes = self._probs.shape[1] if self._probs is not None else 0
        thumbnail_size = options.capture.thumbnail_size if shown else None
        # the validation samples' thumbnails are also kept across epochs, with their indices (ThumbnailMemo)
        memo = options.max_samples * (8 + 3 * thumbnail_size**2) if thumbnail_size else 0
        size = (bank_bytes(rows, dims, dtype, thumbnail_size, classes) + memo) / 2**20
        widths = " + ".join(f"{d} ({layer})" for layer, d in dims.items())
        self._info(
            f"FeatureVisualizer bank: up to {rows} samples x {widths} dims"
            f"{f' + {classes} class probabilities' if classes else ''} in {options.capture.storage_dtype}"
            f"{' + thumbnails (and their memo across epochs)' if shown else ''} = {size:.1f} MiB "
            f"(budget {options.memory_budget_mb:.0f} MiB)."
        )
        if size <= options.memory_budget_mb:
            return
        message = (
            f"Expected the FeatureVisualizer bank to fit `resources.memory_budget_mb` = {options.memory_budget_mb:g}, "
            f"but it would take {size:.0f} MiB ({widths} dims per sample). Hint: lower `max_samples`"
            f"{' or `capture.max_reference`' if options.capture.reference == 'train' else ''}, downsample the input "
            "layer more (`capture.input_size`), pool conv layers (`capture.reduction='avg'` or a smaller "
            "`capture.pool_size`), store `capture.storage_dtype='float16'`, or raise `resources.memory_budget_mb`."
        )
        if sanity:
            raise ValueError(message)
        self.over_budget = True  # found mid-run: keep the user's training going
        self._warn("memory", message + " FeatureVisualizer is off for this run.")

    def thumbnails(self, inputs: Tensor) -> Tensor:
        """(B, 3, T, T) uint8 thumbnails of image inputs, or (B, 0) when no output shows images."""
        if not self.options.shows_images or self._input_kind != "image":
            return torch.empty(inputs.shape[0], 0, dtype=torch.uint8)
        images = as_images(inputs)
        channels = images.shape[1]
        if channels not in (1, 3):
            shown = "the first three as RGB" if channels > 3 else "the first in grey"
            self._warn(
                "channels",
                f"Validation images have {channels} channels; thumbnails (grids, gallery, projector sprite) show "
                f"{shown}. Pixel-space vectors use all {channels}.",
            )
        return to_thumbnails(
            images,
            self.options.capture.thumbnail_size,
            self.options.capture.image_mean,
            self.options.capture.image_std,
            self._warn_rescaled,
        )

    def _warn_rescaled(self, low: float, high: float) -> None:
        hint = (
            "check `capture.image_mean`/`capture.image_std`"
            if self.options.capture.image_mean is not None
            else "pass the normalisation as `capture.image_mean`/`capture.image_std` so it can be undone"
        )
        self._warn(
            "image-range",
            f"Validation images span [{low:.3g}, {high:.3g}], not [0, 1]; thumbnails (grids, projector sprite) are "
            f"min-max scaled per image, so their colours are not the true ones. Hint: {hint}.",
        )


def batch_size_of(batch: Any, extractor: Callable[[Any], tuple[Any, ...]] | None) -> int | None:
    """The number of samples in ``batch`` (its labels), or None when it cannot be read."""
    try:
        return len(read_batch(batch, extractor).labels)
    except (TypeError, ValueError, KeyError, IndexError):
        return None
