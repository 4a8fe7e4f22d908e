"""The label-issue layer's history across the analysed epochs of a fit, kept on rank 0 by the callback.

:class:`DynamicsTracker` appends, each analysed epoch, one row per kept validation sample to a
:class:`~lightning_featviz.analysis.dynamics.SampleHistory` of the label-issue layer: the probability of the given
label and the margin (from the bank's model probabilities), the neighbour share of the given label and the
single-epoch label-issue score at :data:`~lightning_featviz.analysis.dynamics.DYNAMICS_NEIGHBOUR_WEIGHT` (the
epoch's own neighbour search, scored a second time), and the prediction. Tensor work only, O(N k C) per epoch (no
Python loop over samples). Its :meth:`~DynamicsTracker.state_dict` goes into the callback's checkpoint state, so a
resumed fit continues it. The CSV columns made from it are :func:`dynamics_columns`'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lightning_featviz.analysis.dynamics import DEFAULT_MAX_EPOCHS, DYNAMICS_NEIGHBOUR_WEIGHT, SampleHistory
from lightning_featviz.analysis.epoch import known_probabilities
from lightning_featviz.analysis.label_issues import LabelIssueOptions, LabelIssues, find_label_issues, label_issue_k
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


def dynamics_issues(results: EpochResults, layer: str, warn: Warn) -> LabelIssues:
    """The bank's single-epoch label issues in ``layer`` at the history's neighbour weight: the epoch's own search
    where it holds enough neighbours (within the bank), else a search like the list's (among the training
    reference)."""
    bank, searched, num_classes = results.bank, results.searched, len(results.class_names)
    vectors, probabilities = bank.vectors[layer].float(), known_probabilities(bank)
    if searched is bank:
        stats, k = results.stats[layer], label_issue_k(bank.labels)
        shared = stats.neighbours(k) if stats.leave_one_out and stats.metric == "euclidean" else None
        options = LabelIssueOptions(k=k, neighbour_weight=DYNAMICS_NEIGHBOUR_WEIGHT)
        return find_label_issues(
            vectors, bank.labels, num_classes, probabilities, options=options, warn=warn, neighbours=shared
        )
    options = LabelIssueOptions(neighbour_weight=DYNAMICS_NEIGHBOUR_WEIGHT)
    reference = searched.vectors[layer].float()
    return find_label_issues(
        vectors, bank.labels, num_classes, probabilities, reference, searched.labels, options=options, warn=warn
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
        issues = dynamics_issues(results, layer, warn)
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
            "dynamics": dynamics.words(position, class_names),
        }
