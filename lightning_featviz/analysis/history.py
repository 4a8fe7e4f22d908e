"""The label-issue layer's history across the analysed epochs of a fit, kept on rank 0 by the callback.

:class:`DynamicsTracker` appends, each analysed epoch, one row per kept validation sample to a
:class:`~lightning_featviz.analysis.dynamics.SampleHistory` of the label-issue layer: the probability of the given
label and the margin (from the bank's model probabilities), the neighbour share of the given label and the
single-epoch label-issue score (the list's, :func:`~lightning_featviz.analysis.epoch.validation_label_issues`),
and the prediction. Tensor work only, O(N k C) per epoch (no Python loop over samples). Its
:meth:`~DynamicsTracker.state_dict` goes into the callback's checkpoint state, so a resumed fit continues it. The
CSV columns made from it are :func:`dynamics_columns`'. :class:`TrainingHistory` keeps the training batches'
margins per epoch (``capture.training``), ranked by their AUM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_featviz.analysis.dynamics import (
    DEFAULT_MAX_EPOCHS,
    SampleHistory,
    area_under_margin,
)
from lightning_featviz.analysis.epoch import known_probabilities, validation_label_issues
from lightning_featviz.analysis.results import DynamicsResults, EpochResults
from lightning_featviz.capture.warn import Warn

#: The label-issue CSV's columns from the history, after :data:`~lightning_featviz.analysis.label_issues.CSV_COLUMNS`.
DYNAMICS_CSV_COLUMNS = (
    "dynamics_score",
    "mean_label_probability",
    "label_probability_std",
    "epochs_seen",
    "dynamics",
)


class DynamicsTracker:
    """One :class:`~lightning_featviz.analysis.dynamics.SampleHistory` per label-issue layer, appended each
    analysed epoch of a fit (rank 0, from the gathered bank: the same history as one process).

    Args:
        max_epochs: epochs each history keeps (the oldest dropped beyond).
    """

    def __init__(self, max_epochs: int = DEFAULT_MAX_EPOCHS):
        self.max_epochs = max_epochs
        self.histories: dict[str, SampleHistory] = {}

    def update(self, results: EpochResults, layer: str, warn: Warn) -> DynamicsResults | None:
        """Append ``results``' epoch to ``layer``'s history; the dynamics up to it (None where the model gave no
        probabilities: the history needs the probability of the given label)."""
        bank, epoch = results.bank, results.epoch
        probabilities = known_probabilities(bank)
        if probabilities is None or layer not in results.stats:
            return None
        history = self.histories.get(layer)
        num_classes = len(results.class_names)
        if history is None or history.num_classes != num_classes or (history.epochs and epoch < history.epochs[-1]):
            # a new fit from an earlier epoch (not a resume): its history starts again
            history = self.histories[layer] = SampleHistory(num_classes, self.max_epochs, keep=bank.indices)
        issues = validation_label_issues(results, layer, warn)
        history.append(epoch, bank.indices, bank.labels, probabilities, issues.neighbour_share, issues.scores)
        return self.results(layer)

    def results(self, layer: str) -> DynamicsResults:
        """The dynamics of ``layer`` so far, on a copy of its history (later appends leave it as it is)."""
        kept = self.histories[layer]
        copy = SampleHistory(kept.num_classes, kept.max_epochs)
        copy.load_state_dict(kept.state_dict())
        return DynamicsResults(layer, copy)

    def state_dict(self) -> dict[str, Any]:
        """Each layer's history as tensors and ints (Lightning checkpoints keep it)."""
        return {layer: history.state_dict() for layer, history in self.histories.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.histories = {}
        for layer, saved in state.items():
            history = SampleHistory(int(saved["num_classes"]), self.max_epochs)
            history.load_state_dict(saved)
            self.histories[layer] = history


def dynamics_columns(
    dynamics: DynamicsResults, rows: Iterable[dict[str, object]], class_names: list[str]
) -> Iterator[dict[str, object]]:
    """``rows`` (dicts with an ``"index"``: a label-issue CSV's, one at a time) with the :data:`DYNAMICS_CSV_COLUMNS`
    of their sample added (empty cells for a sample the history does not track)."""
    position_of = {int(index): position for position, index in enumerate(dynamics.history.indices.tolist())}
    scores, confidence = dynamics.scores.tolist(), dynamics.confidence.tolist()
    variability, seen = dynamics.variability.tolist(), dynamics.seen.tolist()
    words = dynamics.all_words(class_names)

    def number(value: float) -> object:
        return "" if math.isnan(value) else round(value, 4)

    for row in rows:
        position = position_of.get(int(str(row["index"])))
        if position is None:
            yield {**row, **dict.fromkeys(DYNAMICS_CSV_COLUMNS, "")}
            continue
        yield {
            **row,
            "dynamics_score": number(scores[position]),
            "mean_label_probability": number(confidence[position]),
            "label_probability_std": number(variability[position]),
            "epochs_seen": int(seen[position]),
            "dynamics": words[position],
        }


#: The columns of the training samples' list by AUM (``featviz_label_issues/train_aum.csv``).
AUM_CSV_COLUMNS = ("rank", "index", "given_label", "aum", "epochs_seen", "last_margin")


class TrainingHistory:
    """The training batches' logit margins of the last ``max_epochs`` epochs, by dataset index (rank 0, gathered):
    per epoch (U,) int64 indices and float16 margins (a sample in several batches of an epoch: their mean), 10 bytes
    per sample seen per epoch."""

    def __init__(self, max_epochs: int = DEFAULT_MAX_EPOCHS):
        self.max_epochs = max_epochs
        self.epochs: list[int] = []
        self.indices: list[Tensor] = []
        self.margins: list[Tensor] = []
        self.labels: dict[int, int] = {}

    def append(self, epoch: int, columns: Mapping[str, Tensor]) -> None:
        """Record epoch ``epoch``'s gathered ``{"indices", "labels", "margins"}`` (M,) each."""
        if not columns or not len(columns["indices"]):
            return
        if self.epochs and epoch <= self.epochs[-1]:  # the same epoch again (a resume): replaced
            keep = [i for i, e in enumerate(self.epochs) if e < epoch]
            self.epochs = [self.epochs[i] for i in keep]
            self.indices, self.margins = [self.indices[i] for i in keep], [self.margins[i] for i in keep]
        indices = columns["indices"].long().cpu()
        unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
        total = torch.zeros(len(unique)).index_add_(0, inverse, columns["margins"].float().cpu())
        counts = torch.bincount(inverse, minlength=len(unique)).float()
        self.epochs.append(int(epoch))
        self.indices.append(unique)
        self.margins.append((total / counts).half())
        labels = torch.zeros(len(unique), dtype=torch.long)
        labels[inverse] = columns["labels"].long().cpu()
        self.labels |= dict(zip(unique.tolist(), labels.tolist(), strict=True))
        if len(self.epochs) > self.max_epochs:
            self.epochs, self.indices, self.margins = self.epochs[1:], self.indices[1:], self.margins[1:]

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-epoch arrays."""
        return sum(t.numel() * t.element_size() for t in [*self.indices, *self.margins])

    def ranking(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(indices, aum, seen, last)``, (U,) each for the U samples seen, lowest AUM first (the likeliest wrong
        labels): the mean margin over the kept epochs (:func:`~lightning_featviz.analysis.dynamics.area_under_margin`),
        the epochs seen, the last margin seen."""
        if not self.epochs:
            empty = torch.zeros(0)
            return empty.long(), empty, empty.long(), empty
        every = torch.unique(torch.cat(self.indices), sorted=True)
        matrix = torch.full((len(self.epochs), len(every)), float("nan"))
        for row, (indices, margins) in enumerate(zip(self.indices, self.margins, strict=True)):
            matrix[row, torch.searchsorted(every, indices)] = margins.float()
        aum, seen = area_under_margin(matrix), matrix.isfinite().sum(dim=0)
        last_row = torch.where(matrix.isfinite(), torch.arange(len(self.epochs))[:, None], -1).amax(dim=0)
        last = matrix[last_row, torch.arange(len(every))]
        order = torch.argsort(aum, stable=True)
        return every[order], aum[order], seen[order], last[order]

    def rows(self, class_names: list[str]) -> Iterator[dict[str, object]]:
        """The :data:`AUM_CSV_COLUMNS` rows, lowest AUM first."""
        indices, aum, seen, last = self.ranking()
        for rank, (index, value, count, margin) in enumerate(
            zip(indices.tolist(), aum.tolist(), seen.tolist(), last.tolist(), strict=True)
        ):
            label = self.labels.get(index, -1)
            yield {
                "rank": rank + 1,
                "index": index,
                "given_label": class_names[label] if 0 <= label < len(class_names) else str(label),
                "aum": round(value, 4),
                "epochs_seen": count,
                "last_margin": round(margin, 4),
            }

    def state_dict(self) -> dict[str, Any]:
        """Tensors, ints and lists (Lightning checkpoints keep it)."""
        labels = torch.tensor(sorted(self.labels.items()), dtype=torch.long).reshape(-1, 2)
        return {
            "epochs": list(self.epochs),
            "indices": list(self.indices),
            "margins": list(self.margins),
            "labels": labels,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epochs = [int(e) for e in state.get("epochs", [])]
        self.indices = [t.long() for t in state.get("indices", [])]
        self.margins = [t.half() for t in state.get("margins", [])]
        labels = state.get("labels")
        self.labels = {int(i): int(v) for i, v in labels.tolist()} if labels is not None else {}
