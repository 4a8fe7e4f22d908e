"""Label issues from training dynamics: each kept sample's history across the analysed epochs, and the scores
made from it.

Plain arrays in and out; nothing here draws, writes or knows Lightning. Shapes: E kept epochs, S tracked
samples (dataset indices), B samples of one append, C classes.

- :class:`SampleHistory` keeps, per tracked sample and analysed epoch, the probability of the given label,
  the margin (given label minus the largest other), the neighbour share of the given label, the epoch's
  single-epoch label-issue score (as log-odds; float16 each) and the prediction (int16): 10 bytes per sample
  per epoch, the last ``max_epochs`` epochs only (20 by default: 20,000 samples take 5.0 MB with the totals);
  and, over every epoch appended (kept or dropped), each sample's count, sum and sum of squares of the label probability
  (24 bytes per sample, float64: a float32 sum of squares left a spread of 1e-3 for a sample whose probability
  never changed, after 100 epochs): the run's mean and spread, dataset cartography's two axes.
- :func:`dynamics_scores` turns a history into one score per sample (the formula chosen by
  ``benchmarks/label_noise_dynamics.py`` on seeds 0-2 and checked on seeds 3-4, see docs/label_issues.md,
  "Training dynamics"): the last half's mean of the recorded scores (each epoch's list score) times one minus
  the mean label probability over every epoch.
- :func:`area_under_margin` (AUM, Pleiss et al. 2020) scores training samples from the logits of their
  training batches (:func:`training_margins`). That needs each row's dataset index, known only where the dataset
  returns it (``capture.batch_extractor``) or the sampler's order can be read ahead (a ``DistributedSampler``,
  whose shuffle is fixed by seed and epoch; a sequential one). A ``RandomSampler``, ``SubsetRandomSampler`` or
  ``WeightedRandomSampler`` draws a new order each time, an ``IterableDataset`` has no indices: there only the
  no-grad pass over the kept training samples (``reference="train"``) gives a history.
- :func:`dynamics_words` says in words what the predictions did ("consistently predicted as X since epoch 3",
  "unstable: flips between X and Y").

Over 300 lines because the history and the scores read from it are one method (docs/label_issues.md,
"Training dynamics") with one notation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

#: Epochs a :class:`SampleHistory` keeps by default (the oldest is dropped when a newer one arrives).
DEFAULT_MAX_EPOCHS = 20
_VERSION = 1
_FIELDS = ("label_probability", "margin", "neighbour_share", "score")


def _require(ok: bool, name: str, requirement: str, value: object, hint: str = "") -> None:
    if not ok:
        message = f"Expected `{name}` to be {requirement}, but got {value}."
        raise ValueError(message + (f" Hint: {hint}" if hint else ""))


def _log_odds(scores: Tensor) -> Tensor:
    """(B,) ``log(s / (1 - s))`` of (B,) scores in [0, 1], in [-60, 60]: scores are stored in float16 as log-odds,
    which keep the order at both ends (float16 itself has 1/2048 steps just below 1, where the samples to check
    first are: storing the scores directly cost 0.03 average precision on the shared photos)."""
    scores = scores.double().clamp(0.0, 1.0)  # float32 sums can exceed 1 by a rounding step: not NaN, the top
    return (scores.log() - torch.log1p(-scores)).clamp(-60.0, 60.0).float()


def label_probability(probabilities: Tensor, labels: Tensor) -> Tensor:
    """(B,) float32 ``probabilities[b, labels[b]]`` of (B, C) probabilities and (B,) labels."""
    return probabilities.float()[torch.arange(len(labels)), labels.long()]


def given_label_margin(scores: Tensor, labels: Tensor) -> Tensor:
    """(B,) float32: the given label's score minus the largest other class's, of (B, C) scores (probabilities
    or logits) and (B,) labels; negative when another class leads (the margin of AUM)."""
    scores = scores.float()
    rows, labels = torch.arange(len(labels)), labels.long()
    given = scores[rows, labels]
    others = scores.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return given - others


def _mean_of_duplicates(indices: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique (U,) indices and the (U, ...) float32 mean of ``values`` (B, ...) over each index's rows:
    the same whatever the rows' order (a DDP gather, padding repeats)."""
    unique, inverse = torch.unique(indices.long(), sorted=True, return_inverse=True)
    total = torch.zeros((len(unique), *values.shape[1:]), dtype=torch.float32)
    total.index_add_(0, inverse, values.float())
    counts = torch.bincount(inverse, minlength=len(unique)).float()
    return unique, total / counts.view(-1, *([1] * (values.dim() - 1)))


class SampleHistory:
    """Per-sample history across analysed epochs, by dataset index.

    Each :meth:`append` adds (or, for the same epoch again, completes: training batches one by one) an
    epoch's row. Values are stored as (E, S) float16 (label probability, margin, neighbour share, score; NaN where a
    sample was not seen that epoch) and int16 (prediction, -1 where not seen), S the sorted tracked indices.
    Only the last ``max_epochs`` epochs are kept; the start of each sample's current prediction streak is
    kept beyond them, so "since epoch 3" stays true after epoch 3 has been dropped, and so are the totals of
    the label probability over every epoch appended (:meth:`cartography`). Appends are
    order-independent (rows are stored by index, duplicate indices averaged), so rank 0 holding a gathered
    bank gets the same history as one process.

    Args:
        num_classes: C.
        max_epochs: epochs kept (E at most).
        keep: (S,) the dataset indices to track (e.g. the bank's kept samples); others are ignored. None:
            every index appended is tracked (memory grows with them, and each append that brings new indices
            copies the arrays: give ``keep`` when appending training batches one by one).
    """

    def __init__(self, num_classes: int, max_epochs: int = DEFAULT_MAX_EPOCHS, keep: Tensor | None = None):
        _require(num_classes >= 1, "num_classes", "at least 1", num_classes)
        _require(max_epochs >= 1, "max_epochs", "at least 1", max_epochs, "keep at least the last epoch.")
        self.num_classes, self.max_epochs = int(num_classes), int(max_epochs)
        self.fixed = keep is not None
        self.indices = torch.unique(keep.long().cpu()) if keep is not None else torch.zeros(0, dtype=torch.long)
        size = len(self.indices)
        self.labels = torch.full((size,), -1, dtype=torch.long)
        self.epochs: list[int] = []
        self.first_epoch: int | None = None  # the first epoch appended (the totals' first), kept or dropped
        self.values = {name: torch.zeros(0, size, dtype=torch.float16) for name in _FIELDS}
        self.prediction = torch.zeros(0, size, dtype=torch.int16)
        self.streak_class = torch.full((size,), -1, dtype=torch.int16)
        self.streak_start = torch.full((size,), -1, dtype=torch.int32)
        # the streaks as they stood before the last epoch's appends: an epoch appended again (a second `validate`
        # at the same epoch) replaces its row, and its streak step is taken again from there
        self.streak_before = (self.streak_class.clone(), self.streak_start.clone())
        # over every epoch appended, kept or dropped: (3, S) count, sum and sum of squares of the label probability
        # (float64: the variance is their difference, which float32 leaves at 1e-3 after 100 constant epochs)
        self.totals = torch.zeros(3, size, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-epoch arrays and the per-sample ones."""
        arrays = [*self.values.values(), self.prediction, self.labels, self.indices, self.streak_class, self.totals]
        return sum(a.numel() * a.element_size() for a in [*arrays, self.streak_start, *self.streak_before])

    def _grow(self, new: Tensor) -> None:
        """Track the sorted (U,) indices ``new`` too (not tracked yet)."""
        merged = torch.cat([self.indices, new]).sort().values
        position = torch.searchsorted(merged, self.indices)
        size, epochs = len(merged), len(self.epochs)

        def spread(old: Tensor, fill: float | int) -> Tensor:
            out = torch.full((*old.shape[:-1], size), fill, dtype=old.dtype)
            out[..., position] = old
            return out

        self.values = {name: spread(v, float("nan")) for name, v in self.values.items()}
        self.prediction = spread(self.prediction, -1) if epochs else torch.zeros(0, size, dtype=torch.int16)
        self.labels, self.streak_class = spread(self.labels, -1), spread(self.streak_class, -1)
        self.streak_start, self.indices = spread(self.streak_start, -1), merged
        self.totals = spread(self.totals, 0.0)
        self.streak_before = (spread(self.streak_before[0], -1), spread(self.streak_before[1], -1))

    def _row(self, epoch: int) -> int:
        """The row of ``epoch``, a new one (dropping the oldest beyond ``max_epochs``) when it is newer."""
        if self.epochs and epoch == self.epochs[-1]:
            return len(self.epochs) - 1
        _require(not self.epochs or epoch > self.epochs[-1], "epoch", f"> {self.epochs[-1:]}", epoch)
        size = len(self.indices)
        self.epochs.append(int(epoch))
        self.first_epoch = int(epoch) if self.first_epoch is None else self.first_epoch
        self.streak_before = (self.streak_class.clone(), self.streak_start.clone())
        nan_row = torch.full((1, size), float("nan"), dtype=torch.float16)
        self.values = {name: torch.cat([v, nan_row]) for name, v in self.values.items()}
        self.prediction = torch.cat([self.prediction, torch.full((1, size), -1, dtype=torch.int16)])
        if len(self.epochs) > self.max_epochs:
            self.epochs.pop(0)
            self.values = {name: v[1:] for name, v in self.values.items()}
            self.prediction = self.prediction[1:]
        return len(self.epochs) - 1

    def append(
        self,
        epoch: int,
        indices: Tensor,
        labels: Tensor,
        probabilities: Tensor,
        neighbour_share: Tensor | None = None,
        scores: Tensor | None = None,
        logits: Tensor | None = None,
    ) -> None:
        """Record epoch ``epoch`` for the (B,) dataset ``indices`` with (B,) given ``labels``.

        Args:
            probabilities: (B, C) softmax; NaN rows count as unseen.
            neighbour_share: (B,) the distance-weighted share of neighbours with the given label, or None.
            scores: (B,) the epoch's single-epoch label-issue scores, or None; for :func:`dynamics_scores`
                the epoch's list score (``analysis.label_issues.find_label_issues`` at its defaults).
            logits: (B, C) the logits behind ``probabilities``; where given, the margin is in logits (AUM's),
                else in probabilities.
        """
        b = len(indices)
        _require(
            probabilities.dim() == 2 and probabilities.shape == (b, self.num_classes),
            "probabilities",
            f"({b}, {self.num_classes})",
            tuple(probabilities.shape),
        )
        _require(labels.shape == (b,), "labels", f"({b},)", tuple(labels.shape))
        c, nan = self.num_classes, torch.full((b,), float("nan"))
        extras = [value if value is not None else nan for value in (neighbour_share, scores)]
        columns = [probabilities, *([logits] if logits is not None else []), *(e[:, None] for e in extras)]
        unique, mean = _mean_of_duplicates(indices.cpu(), torch.cat([x.float().cpu() for x in columns], dim=1))
        label_of = torch.zeros(len(unique), dtype=torch.long)
        label_of[torch.unique(indices.long().cpu(), return_inverse=True)[1]] = labels.long().cpu()
        if self.fixed:
            inside = torch.isin(unique, self.indices)
            unique, mean, label_of = unique[inside], mean[inside], label_of[inside]
        else:
            new = unique[~torch.isin(unique, self.indices)]
            if len(new):
                self._grow(new)
        seen = mean[:, :c].isfinite().all(dim=1)
        unique, mean, label_of = unique[seen], mean[seen], label_of[seen]
        probs = mean[:, :c]
        row, position = self._row(epoch), torch.searchsorted(self.indices, unique)
        margin_source = mean[:, c : 2 * c] if logits is not None else probs
        # recorded in this epoch already: its totals and streak steps are taken again
        again = position[self.prediction[row, position] >= 0]
        probability = label_probability(probs, label_of).half()
        self._add_to_totals(again, self.values["label_probability"][row, again], -1.0)
        self._add_to_totals(position, probability, 1.0)
        self.values["label_probability"][row, position] = probability
        self.values["margin"][row, position] = given_label_margin(margin_source, label_of).half()
        self.values["neighbour_share"][row, position] = mean[:, -2].half()
        self.values["score"][row, position] = _log_odds(mean[:, -1]).half()
        prediction = probs.argmax(dim=1).to(torch.int16)
        self.streak_class[again], self.streak_start[again] = self.streak_before[0][again], self.streak_before[1][again]
        self.prediction[row, position] = prediction
        self.labels[position] = label_of
        changed = prediction != self.streak_class[position]
        self.streak_class[position] = prediction
        self.streak_start[position[changed]] = int(epoch)

    def _add_to_totals(self, position: Tensor, probability: Tensor, sign: float) -> None:
        """Add (``sign`` 1) or take back (-1) one epoch's (B,) float16 ``probability`` at (B,) ``position``."""
        value = probability.double()
        self.totals[:, position] += sign * torch.stack([torch.ones_like(value), value, value * value])

    def cartography(self) -> tuple[Tensor, Tensor, Tensor]:
        """Dataset cartography (Swayamdipta et al., EMNLP 2020) over every epoch appended, kept or dropped:
        ``(confidence, variability, seen)``, (S,) each: the mean and standard deviation of the probability of the
        given label over the epochs a sample was seen, and their count (NaN confidence and variability for a sample
        never seen; variability 0 with one epoch). Low confidence and low variability: consistently against its
        label; high variability: ambiguous."""
        count, total, squares = self.totals
        seen = count.round().long()
        confidence = torch.where(seen > 0, total / count.clamp_min(1.0), float("nan"))
        variance = (squares / count.clamp_min(1.0) - confidence**2).clamp_min(0.0)
        variability = torch.where(seen > 0, variance.sqrt(), float("nan"))
        return confidence.float(), variability.float(), seen

    def field(self, name: str) -> Tensor:
        """(E, S) float32 of ``"label_probability"``, ``"margin"``, ``"neighbour_share"`` or ``"score"`` (NaN:
        not seen)."""
        values = self.values[name].float()
        return torch.sigmoid(values) if name == "score" else values

    def dynamics_scores(self, training_margins: Tensor | None = None) -> Tensor:
        """(S,) :func:`dynamics_scores` of the kept epochs' single-epoch scores and the mean label probability over
        every epoch appended (``training_margins``: (E', S), the tracked samples' training-batch margins, in
        :attr:`indices` order)."""
        return dynamics_scores(self.field("score"), training_margins, self.cartography()[0])

    def state_dict(self) -> dict[str, Any]:
        """Everything, as tensors and ints (``torch.save`` and Lightning checkpoints keep it)."""
        return {
            "version": _VERSION,
            "num_classes": self.num_classes,
            "max_epochs": self.max_epochs,
            "fixed": self.fixed,
            "indices": self.indices.clone(),
            "labels": self.labels.clone(),
            "epochs": list(self.epochs),
            "first_epoch": self.first_epoch,
            **{name: v.clone() for name, v in self.values.items()},
            "prediction": self.prediction.clone(),
            "streak_class": self.streak_class.clone(),
            "streak_start": self.streak_start.clone(),
            "streak_before_class": self.streak_before[0].clone(),
            "streak_before_start": self.streak_before[1].clone(),
            "totals": self.totals.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; a ``max_epochs`` smaller now keeps the newest epochs."""
        _require(
            state.get("version") == _VERSION,
            "state['version']",
            str(_VERSION),
            state.get("version"),
            "a history saved by another version of lightning_featviz; start a new one.",
        )
        _require(
            int(state["num_classes"]) == self.num_classes,
            "the saved history's num_classes",
            str(self.num_classes),
            state["num_classes"],
        )
        keep = max(0, len(state["epochs"]) - self.max_epochs)
        self.fixed = bool(state["fixed"])
        self.indices, self.labels = state["indices"].long().clone(), state["labels"].long().clone()
        self.epochs = [int(e) for e in state["epochs"]][keep:]
        first = state.get("first_epoch", state["epochs"][0] if state["epochs"] else None)
        self.first_epoch = None if first is None else int(first)
        self.values = {name: state[name].half()[keep:].clone() for name in _FIELDS}
        self.prediction = state["prediction"].to(torch.int16)[keep:].clone()
        self.streak_class = state["streak_class"].to(torch.int16).clone()
        self.streak_start = state["streak_start"].to(torch.int32).clone()
        self.streak_before = (
            state.get("streak_before_class", self.streak_class).to(torch.int16).clone(),
            state.get("streak_before_start", self.streak_start).to(torch.int32).clone(),
        )
        saved_totals = state.get("totals")
        if saved_totals is None:  # saved before the totals were kept: those of the epochs the state holds
            self.totals = torch.zeros(3, len(self.indices), dtype=torch.float64)
            for row in state["label_probability"].half():
                seen = row.isfinite()
                self._add_to_totals(seen.nonzero().flatten(), row[seen], 1.0)
        else:
            self.totals = saved_totals.double().clone()


def nan_mean(values: Tensor, dim: int = 0) -> Tensor:
    """The mean of ``values`` over ``dim`` ignoring NaN; NaN where every value is NaN."""
    finite = values.isfinite()
    total = torch.where(finite, values, 0.0).sum(dim=dim)
    return total / finite.sum(dim=dim).float()


def area_under_margin(margins: Tensor) -> Tensor:
    """AUM (Pleiss et al., NeurIPS 2020): (N,) the mean over epochs of (E, N) per-epoch margins (given label's
    logit minus the largest other, :func:`given_label_margin`), NaN epochs ignored. Low (negative) = the
    network fitted the label late or never: likely mislabelled."""
    return nan_mean(margins.float(), dim=0)


def training_margins(epoch_logits: Sequence[tuple[Tensor, Tensor, Tensor]], num_samples: int) -> Tensor:
    """(E, N) margins of the training batches of E epochs, from per-epoch ``(indices (B,), labels (B,),
    logits (B, C))`` (every batch of the epoch concatenated, indices in [0, N)): a sample seen several times in
    an epoch gets its mean margin, one not seen NaN. ``area_under_margin`` of the result is the AUM."""
    out = torch.full((len(epoch_logits), num_samples), float("nan"))
    for e, (indices, labels, logits) in enumerate(epoch_logits):
        unique, mean = _mean_of_duplicates(indices, given_label_margin(logits, labels)[:, None])
        out[e, unique] = mean[:, 0]
    return out


def dynamics_words(history: SampleHistory, row: int, class_names: Sequence[str], min_epochs: int = 3) -> str:
    """What sample ``row``'s predictions did over the kept epochs, in words (``row``: its position in
    ``history.indices``); :func:`every_sample_words` of that one sample."""
    return every_sample_words(history, class_names, min_epochs, rows=torch.tensor([row]))[0]


def every_sample_words(
    history: SampleHistory, class_names: Sequence[str], min_epochs: int = 3, rows: Tensor | None = None
) -> list[str]:
    """What each tracked sample's predictions did over the kept epochs, in words (S phrases, or one per ``rows``):

    - ``"consistently predicted as X since epoch e"``: the same prediction, not the given label, in the last
      ``min_epochs`` or more kept epochs the sample was seen in (``e`` survives the epoch cap);
    - ``"unstable: flips between X and Y"``: the prediction changed at least twice in the kept epochs it was seen in
      (X, Y the two most frequent predictions, of two as frequent the one predicted last);
    - ``"learnt: predicted as its label since epoch e"``, ``"predicted as X since epoch e"`` (another class, fewer
      than ``min_epochs`` epochs), or ``"one epoch seen"`` / ``"not seen in the kept epochs"``.

    Tensor work over the (E, S) predictions; a Python step per unstable sample only (its two classes).
    """
    rows = torch.arange(len(history)) if rows is None else rows.long()
    predicted = history.prediction[:, rows].long()  # (E, R), -1: not seen
    seen = predicted >= 0
    label, current = history.labels[rows].long(), history.streak_class[rows].long()
    since = history.streak_start[rows].long()
    epochs = torch.tensor(history.epochs, dtype=torch.long)[:, None]  # (E, 1)
    # the kept epochs of the streak in which the sample was seen (an epoch it was not seen in says nothing)
    streak = ((epochs >= since) & seen).sum(dim=0)
    # flips: a seen prediction that differs from the sample's previous seen one
    position = torch.where(seen, torch.arange(len(epochs))[:, None], -1)
    previous = torch.cat([torch.full_like(position[:1], -1), position[:-1].cummax(dim=0).values])  # (E, R)
    before = predicted.gather(0, previous.clamp_min(0))
    flips = (seen & (previous >= 0) & (predicted != before)).sum(dim=0)
    count = seen.sum(dim=0)
    unstable = (flips >= 2).nonzero().flatten()
    pairs = dict(zip(unstable.tolist(), _two_most_frequent(predicted[:, unstable], history.num_classes), strict=True))
    words = []
    columns = (count, current, label, since, streak, flips)
    for r, (n, c, lab, start, run, flip) in enumerate(zip(*(column.tolist() for column in columns), strict=True)):
        if n == 0:
            words.append("not seen in the kept epochs")
        elif c != lab and run >= min_epochs:
            words.append(f"consistently predicted as {class_names[c]} since epoch {start}")
        elif flip >= 2:
            first, second = pairs[r]
            words.append(f"unstable: flips between {class_names[first]} and {class_names[second]}")
        elif n == 1:
            words.append("one epoch seen")
        elif c == lab:
            words.append(f"learnt: predicted as its label since epoch {start}")
        else:
            words.append(f"predicted as {class_names[c]} since epoch {start}")
    return words


def _two_most_frequent(predicted: Tensor, num_classes: int) -> list[list[int]]:
    """Of each column of (E, U) predictions (-1: not seen), the two most frequent classes, of two as frequent the one
    predicted last; in chunks of columns whose (U, C) counts take at most 8 MB."""
    epochs, out = len(predicted), []
    step = max(1, 2**20 // max(num_classes, 1))
    when = torch.arange(epochs)[:, None]
    for start in range(0, predicted.shape[1], step):
        chunk = predicted[:, start : start + step]
        seen = chunk >= 0
        classes = chunk.clamp_min(0).T  # (u, E)
        counts = torch.zeros(len(classes), num_classes, dtype=torch.long).scatter_add_(1, classes, seen.T.long())
        latest = torch.full_like(counts, -1).scatter_reduce_(1, classes, torch.where(seen, when, -1).T, "amax")
        out += (counts * (epochs + 1) + latest).topk(2, dim=1).indices.tolist()  # a tie: the later
    return out


def fractional_ranks(values: Tensor) -> Tensor:
    """(N,) float32 ranks of (N,) ``values`` scaled to [0, 1] (0: the lowest), ties sharing their mean rank;
    NaN stays NaN."""
    values = values.float()
    out = torch.full_like(values, float("nan"))
    finite = values.isfinite()
    kept = values[finite]
    if len(kept) == 0:
        return out
    unique, inverse = torch.unique(kept, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(unique)).float()
    first = torch.cumsum(counts, 0) - counts  # rank of each distinct value's first member
    out[finite] = (first + (counts - 1) / 2)[inverse] / max(1, len(kept) - 1)
    return out


def dynamics_scores(
    scores: Tensor, training_margins: Tensor | None = None, mean_label_probability: Tensor | None = None
) -> Tensor:
    """The dynamics score of N samples: high = the given label is likely wrong (rank by it, descending).

    Chosen by ``benchmarks/label_noise_dynamics.py`` (docs/label_issues.md, "Training dynamics"):

    - one epoch: that epoch's single-epoch score (``analysis.label_issues.find_label_issues``), unchanged;
    - E >= 2 epochs: the mean of the single-epoch scores over the last ``ceil(E / 2)`` epochs (a temporal
      ensemble of the neighbourhood-and-model score; NaN epochs, where a sample was not seen, are skipped),
      times ``1 - mean_label_probability`` where it is given: the mean probability of the given label over every
      epoch of the run (:meth:`SampleHistory.cartography`), the model's view across the whole run: both must find
      the label unlikely;
    - with ``training_margins`` (E', N), the logit margins of the samples' own training batches
      (:func:`training_margins`): the mean of that score's fractional rank and the AUM's
      (:func:`area_under_margin`, low AUM ranking high); a sample without margins keeps its score's rank.

    Args:
        scores: (E, N) the single-epoch label-issue scores of the kept epochs, oldest first (NaN: not seen),
            (the list's score of each epoch).
        training_margins: (E', N) or None.
        mean_label_probability: (N,) the model's mean probability of the given label over every epoch (NaN: never
            seen, the factor is then 1), or None.

    Returns:
        (N,) float32; NaN for a sample seen in none of the averaged epochs.
    """
    _require(scores.dim() == 2 and scores.shape[0] >= 1, "scores", "(E, N) with E >= 1", tuple(scores.shape))
    epochs = scores.shape[0]
    if epochs == 1:
        dynamics = scores[0].float()
    else:
        dynamics = nan_mean(scores[epochs - (epochs + 1) // 2 :].float(), dim=0)
        if mean_label_probability is not None:
            _require(
                mean_label_probability.shape == scores.shape[1:],
                "mean_label_probability",
                str(tuple(scores.shape[1:])),
                tuple(mean_label_probability.shape),
            )
            mean = mean_label_probability.float()
            dynamics = dynamics * torch.where(mean.isnan(), 1.0, 1.0 - mean)
    if training_margins is None:
        return dynamics
    _require(
        training_margins.dim() == 2 and training_margins.shape[1] == scores.shape[1],
        "training_margins",
        f"(E', {scores.shape[1]})",
        tuple(training_margins.shape),
    )
    aum_rank = fractional_ranks(-area_under_margin(training_margins))
    score_rank = fractional_ranks(dynamics)
    combined = (score_rank + aum_rank) / 2
    return torch.where(aum_rank.isnan(), score_rank, combined)
