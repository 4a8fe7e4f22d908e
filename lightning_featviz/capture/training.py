"""The logit margins of the training batches (``WrongClusterOptions(training_margins=True)``), for the area under the
margin (AUM, Pleiss et al. 2020) of each training sample.

A forward hook on the LightningModule keeps the logits of the first forward of each training batch; at the batch's
end, each row's margin (the given label's logit minus the largest other) is kept with its dataset index: (B,) int64
and float32 per batch, O(B C) tensor work, nothing else. The index truth is the validation capture's: the
``batch_extractor``'s third item, else a sampler whose order can be read ahead (sequential, a list of indices, a
non-shuffling ``DistributedSampler``). A shuffling ``RandomSampler`` (``shuffle=True``, the usual training loader),
a weighted or subset-random one draws a new order when the loop iterates, and an ``IterableDataset`` has no
indices: there one warning says so and nothing is recorded for the rest of the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_featviz.capture.batches import logits_of, read_batch
from lightning_featviz.capture.warn import Warn

NO_INDICES = (
    "FeatureVisualizer cannot tell which dataset samples a training batch holds (a shuffling or random sampler draws "
    "a new order each epoch; an iterable dataset has no indices): no training margins (AUM) are recorded. Hint: "
    "return dataset indices from `capture.batch_extractor` as `(inputs, labels, indices)`."
)


def label_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """(B,) float32: the given label's logit minus the largest other class's, of (B, C) logits and (B,) labels."""
    logits = logits.detach().float()
    rows, labels = torch.arange(len(labels), device=logits.device), labels.long().to(logits.device)
    given = logits[rows, labels]
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return (given - others).cpu()


class TrainingMargins:
    """One rank's training-batch margins of the epoch being trained, by dataset index.

    Args:
        extractor: the ``capture.batch_extractor`` (None: the default reading of a batch).
        warn: ``warn(key, message)``, warning once per key.
    """

    def __init__(self, extractor: Callable[[Any], tuple[Any, ...]] | None, warn: Warn):
        self.extractor, self.warn = extractor, warn
        self.off = False  # the indices cannot be known: nothing more this fit
        self._order: list[Tensor] | None = None
        self._logits: Tensor | None = None
        self._hook: Any = None
        self._indices: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._margins: list[Tensor] = []

    def start_epoch(self, module: nn.Module, order: list[Tensor] | None) -> None:
        """A training epoch starts: ``order`` holds each batch's dataset indices where the sampler tells (None:
        only the extractor can); the hook on ``module`` keeps each batch's logits."""
        self._order, self._indices, self._labels, self._margins = order, [], [], []
        if self._hook is None and not self.off:
            self._hook = module.register_forward_hook(self._keep_logits)

    def _keep_logits(self, module: nn.Module, args: Any, output: Any) -> None:
        logits = logits_of(output)
        if self._logits is None and isinstance(logits, Tensor) and logits.ndim == 2:
            self._logits = logits.detach()

    def add_batch(self, batch: Any, batch_idx: int) -> None:
        """Keep the margins of one training batch (its logits from the hook)."""
        logits, self._logits = self._logits, None
        if self.off or logits is None:
            return
        try:
            _, labels, indices = read_batch(batch, self.extractor)
        except (TypeError, ValueError):  # not class ids, or not a batch it can read: the validation capture says why
            self.off = True
            self.detach()
            return
        if indices is None and self._order is not None and batch_idx < len(self._order):
            indices = self._order[batch_idx]
        if indices is None or len(indices) != len(labels) or len(labels) != len(logits):
            self.warn("training-indices", NO_INDICES)
            self.off = True
            self.detach()
            return
        if len(labels) == 0 or int(labels.max()) >= logits.shape[1]:
            return  # empty, or not class ids of these logits (the validation capture says why)
        self._indices.append(indices.long().cpu())
        self._labels.append(labels.long().cpu())
        self._margins.append(label_margins(logits, labels))

    def take_columns(self) -> dict[str, Tensor]:
        """The epoch's ``{"indices", "labels", "margins"}`` (M,) each, for the gather (empty: nothing kept)."""
        if not self._indices:
            return {}
        columns = {
            "indices": torch.cat(self._indices),
            "labels": torch.cat(self._labels),
            "margins": torch.cat(self._margins),
        }
        self._indices, self._labels, self._margins = [], [], []
        return columns

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._logits = None
