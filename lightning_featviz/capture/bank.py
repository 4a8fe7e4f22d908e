"""A bounded per-epoch store of captured samples: a class-stratified subset of the dataset, the same every epoch.

Which samples are kept depends only on the (dataset index, label) pairs an epoch shows, the seed and
the sizes, never on the order batches arrive in or on which rank sees them: every dataset index has a
fixed pseudo-random priority (:func:`sample_priorities`); each class keeps its ``floor`` lowest
priorities (k + 1, so that k neighbours can share its class wherever the data has them), and the
rest of ``max_samples`` goes to the lowest priorities overall (so classes keep their share of the
data). A :class:`FeatureBank` holds, batch by batch, only the rows that this choice can still take
(about ``max_samples``, at most twice that), in buffers allocated once and grown geometrically; the
choice itself is made by :func:`bank_from_columns` once every rank's rows are gathered.

Over 300 lines because the stratified choice, the bounded store that applies it batch by batch and the
gathered bank are one contract (which rows an epoch keeps) that changes as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def select_subset(num_items: int, max_samples: int, seed: int, required: Sequence[int] = ()) -> Tensor:
    """Choose at most ``max_samples`` of ``range(num_items)``, always including ``required``.

    The choice depends on ``(num_items, max_samples, seed, required)`` only; the global RNG is
    untouched. Returns a sorted (M,) int64 tensor.
    """
    required_t = torch.as_tensor(sorted(set(required)), dtype=torch.int64)
    if num_items <= max_samples:
        return torch.arange(num_items)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_items, generator=generator)
    rest = order[~torch.isin(order, required_t)][: max(max_samples - len(required_t), 0)]
    return torch.cat([required_t, rest]).sort().values


def to_thumbnails(
    images: Tensor,
    size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    on_rescale: Callable[[float, float], None] | None = None,
) -> Tensor:
    """Turn a batch of images (B, C, H, W) into RGB uint8 thumbnails (B, 3, size, size).

    With ``mean``/``std`` the normalisation is undone first. Images then in [0, 1] are kept as they
    are; any other range is min-max scaled per image, after calling ``on_rescale(low, high)``
    with the batch's range. One channel is repeated to three; of more than three, the first three
    are shown as RGB; of two, the first is shown in grey.
    """
    images = images.detach().float().cpu()
    if images.ndim == 3:
        images = images[:, None]
    if mean is not None and std is not None:
        images = images * torch.tensor(std)[None, :, None, None] + torch.tensor(mean)[None, :, None, None]
    images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    low, high = images.aminmax() if images.numel() else (torch.zeros(()), torch.zeros(()))
    if low < 0 or high > 1:
        if on_rescale is not None:
            on_rescale(float(low), float(high))
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # Here every value is in [0, 1] (a resize only averages), so round(x * 255) is a whole number in [0, 255] that needs
    # no clamp, and NumPy casts those to uint8 exactly, in 40% of torch's time (0.8 against 2.1 ms per 1,000 images
    # of 32 x 32): one new tensor, then one cast.
    with np.errstate(invalid="ignore"):  # NaN pixels (a broken batch) cast to 0 quietly, as torch's cast does
        return torch.from_numpy(images.mul(255).round_().numpy().astype(np.uint8))


@dataclass
class BankData:
    """One epoch's captured samples, sorted by dataset index, N rows each.

    Attributes:
        indices: (N,) dataset indices.
        labels: (N,) class ids.
        preds: (N,) predicted class ids, -1 where the model's output was not seen.
        confidences: (N,) the model's probability for its prediction, NaN where unknown.
        vectors: ``{layer display name: (N, D) float32}``.
        thumbnails: (N, 3, T, T) uint8, or (N, 0) when no output shows images.
        probabilities: (N, C) the model's softmax over the C classes (float32, or float16 storage),
            NaN rows where a batch's output was not seen; (N, 0) when no batch gave logits.
    """

    indices: Tensor
    labels: Tensor
    preds: Tensor
    confidences: Tensor
    vectors: dict[str, Tensor]
    thumbnails: Tensor
    probabilities: Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    def __post_init__(self) -> None:
        if self.probabilities.shape[0] != len(self.indices):
            self.probabilities = torch.zeros(len(self.indices), 0)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def rows_of(self, dataset_indices: Sequence[int]) -> Tensor:
        """Rows holding the given dataset indices (each must be in the bank)."""
        lookup = {int(i): row for row, i in enumerate(self.indices.tolist())}
        return torch.tensor([lookup[int(i)] for i in dataset_indices], dtype=torch.int64)


def bank_bytes(
    num_samples: int, dims: dict[str, int], dtype: torch.dtype, thumbnail_size: int | None, num_classes: int = 0
) -> int:
    """Bytes a bank of ``num_samples`` rows takes: vectors of ``dims`` (layer -> D) and the model's
    ``num_classes`` probabilities (0: no logits seen) in ``dtype``, RGB uint8 thumbnails of
    ``thumbnail_size`` (None: none), and four per-sample scalars. At 2,000 samples × 1,000 classes the
    probabilities take 7.6 MiB in float32, 3.8 MiB in float16."""
    vectors = (sum(dims.values()) + num_classes) * torch.empty((), dtype=dtype).element_size()
    thumbnails = 3 * thumbnail_size**2 if thumbnail_size else 0
    scalars = 8 + 8 + 8 + 4  # index, label, prediction (int64), confidence (float32)
    return num_samples * (vectors + thumbnails + scalars)


def sample_priorities(indices: Tensor, seed: int) -> Tensor:
    """A fixed pseudo-random priority in [0, 1) for each dataset index (a splitmix64 hash of index and seed).

    Args:
        indices: (n,) integer dataset indices.
        seed: the same seed gives the same priorities; the global RNGs are untouched.

    Returns:
        (n,) float64.
    """
    with np.errstate(over="ignore"):
        z = indices.detach().cpu().numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) / 2.0**53)


def per_class_floor(num_classes: int, max_samples: int, floor: int) -> int:
    """Rows each class is guaranteed: ``floor``, less where ``max_samples`` cannot give it to every class."""
    return min(floor, max_samples // max(num_classes, 1))


def stratified_choice(labels: Tensor, priorities: Tensor, max_samples: int, floor: int) -> Tensor:
    """Which of n candidate rows to keep: per class the :func:`per_class_floor` lowest priorities, then
    the lowest priorities overall up to ``max_samples`` rows in all.

    Args:
        labels: (n,) class ids.
        priorities: (n,) priorities (lower is kept first; give required rows -1).
        max_samples: rows kept at most.
        floor: rows per class wanted (k + 1).

    Returns:
        (n,) bool mask; all True when n <= max_samples.
    """
    n = len(labels)
    if n <= max_samples:
        return torch.ones(n, dtype=torch.bool)
    by_priority = torch.argsort(priorities, stable=True)
    keep = _class_floor(labels, by_priority, max_samples, floor)
    keep[by_priority[~keep[by_priority]][: max(max_samples - int(keep.sum()), 0)]] = True
    return keep


def _class_floor(labels: Tensor, by_priority: Tensor, max_samples: int, floor: int) -> Tensor:
    """(n,) mask of each class's :func:`per_class_floor` lowest-priority rows (``by_priority``: rows by priority)."""
    n = len(labels)
    order = by_priority[torch.argsort(labels[by_priority], stable=True)]  # by class, then priority
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[(torch.arange(n) - starts) < per_class_floor(len(counts), max_samples, floor)]] = True
    return mask


@dataclass(frozen=True)
class Choice:
    """How the final bank is chosen from the rows captured (see :func:`stratified_choice`).

    Attributes:
        max_samples: rows kept at most.
        floor: rows per class wanted (k + 1).
        seed: seed of the priorities.
        required: dataset indices always kept.
    """

    max_samples: int
    floor: int = 1
    seed: int = 0
    required: tuple[int, ...] = ()

    def priorities(self, indices: Tensor) -> Tensor:
        """(n,) priorities of the dataset ``indices`` (n,); -1 for the required ones."""
        values = sample_priorities(indices, self.seed)
        if self.required:
            values[torch.isin(indices.cpu(), torch.tensor(self.required, dtype=torch.int64))] = -1.0
        return values

    def rows(self, indices: Tensor, labels: Tensor) -> Tensor:
        """(n,) bool mask of the rows with dataset ``indices`` (n,) and ``labels`` (n,) that are kept."""
        return stratified_choice(labels.cpu(), self.priorities(indices), self.max_samples, self.floor)


class FeatureBank:
    """Collects an epoch's samples batch by batch, keeping only the rows its :class:`Choice` can still take.

    A row can be dropped once it is neither among the ``floor`` lowest priorities of its class nor among
    the ``max_samples`` lowest overall: more rows only push it further down. So the rows held are never
    more than about ``2 * max_samples`` (``max_samples`` when classes are many times larger than the
    floor), and the final choice of the gathered rows equals the choice over the whole epoch. Columns
    are allocated once on the first batch and grown by half when full; a repeated dataset index (a
    distributed sampler pads with repeats) is held once.

    Args:
        num_items: samples in the dataset: the first allocation holds min(num_items, 1.25 * max_samples) rows.
        choice: how the final bank is chosen.
        dtype: storage dtype of the vectors (float16 halves the memory; analysis computes in float32).
    """

    def __init__(self, num_items: int, choice: Choice, dtype: torch.dtype = torch.float32):
        self.choice, self.dtype = choice, dtype
        self._capacity = max(min(num_items, choice.max_samples + choice.max_samples // 4), 1)
        self._columns: dict[str, Tensor] = {}
        self._occupied = torch.zeros(self._capacity, dtype=torch.bool)
        self._end: int | None = 0  # rows [0, _end) held, the rest free; None once a row was evicted or it grew

    @property
    def size(self) -> int:
        """Rows held now."""
        return int(self._occupied.sum())

    def width(self, layer: str) -> tuple[int, ...] | None:
        """The shape of one row of ``layer``'s vectors, or None before its first batch."""
        column = self._columns.get(f"vec/{layer}")
        return None if column is None else tuple(column.shape[1:])

    def drop(self, layer: str) -> None:
        """Forget ``layer``'s vectors (its output changed shape)."""
        self._columns.pop(f"vec/{layer}", None)

    def add(
        self,
        indices: Tensor,
        labels: Tensor,
        preds: Tensor,
        confidences: Tensor,
        vectors: dict[str, Tensor],
        thumbnails: Tensor,
        probabilities: Tensor | None = None,
    ) -> None:
        """Add the B rows of one batch: ``indices``, ``labels``, ``preds`` (B,) int, ``confidences`` (B,)
        float, ``vectors`` ``{layer: (B, D)}``, ``thumbnails`` (B, 3, T, T) uint8 or (B, 0), and
        ``probabilities`` (B, C), the model's softmax (None where its output was not seen: NaN rows once
        another batch told C).

        Raises:
            ValueError: a layer's rows have another shape than on the first batch (check :meth:`width`).
        """
        batch = {
            "indices": indices.long(),
            "labels": labels.long(),
            "preds": preds.long(),
            "confidences": confidences.float(),
            "thumbnails": thumbnails,
            "probabilities": self._probability_rows(len(indices), probabilities),
            **{f"vec/{name}": value.to(self.dtype) for name, value in vectors.items()},
        }
        for key, value in batch.items():
            if key in self._columns and tuple(value.shape[1:]) != tuple(self._columns[key].shape[1:]):
                raise ValueError(
                    f"Expected every batch's {key!r} rows to have shape {tuple(self._columns[key].shape[1:])}, "
                    f"but got {tuple(value.shape[1:])}."
                )
        size = len(indices)
        # consecutive free slots (a bank filled from slot 0 on, the usual case) take a slice copy, not a scatter
        slots: Tensor | slice
        if self._end is not None and self._end + size <= self._capacity:
            slots, self._end = slice(self._end, self._end + size), self._end + size
        else:
            self._end = None
            slots = free = self._free_slots(size)
            if size and int(free[-1]) - int(free[0]) == size - 1:
                slots = slice(int(free[0]), int(free[0]) + size)
        for key, value in batch.items():
            if key not in self._columns:
                self._columns[key] = torch.empty((self._capacity, *value.shape[1:]), dtype=value.dtype)
            self._columns[key][slots] = value.detach().to("cpu", self._columns[key].dtype)
        self._occupied[slots] = True  # (priorities are a function of the index: computed when rows are evicted)

    def _probability_rows(self, size: int, probabilities: Tensor | None) -> Tensor:
        """(size, C) rows for the probability column: NaN where a batch had none but C is known; a column
        of width 0 (no logits so far) widens, NaN-filled, on the first batch that has them."""
        rows = (probabilities if probabilities is not None else torch.zeros(size, 0)).to(self.dtype)
        stored = self._columns.get("probabilities")
        if stored is None or rows.shape[1] == stored.shape[1]:
            return rows
        if rows.shape[1] == 0:
            return torch.full((size, stored.shape[1]), float("nan"), dtype=self.dtype)
        if stored.shape[1] == 0:
            self._columns["probabilities"] = torch.full((self._capacity, rows.shape[1]), float("nan"), dtype=self.dtype)
        return rows

    def _free_slots(self, needed: int) -> Tensor:
        free = (~self._occupied).nonzero().flatten()
        if len(free) < needed:
            self._evict()
            free = (~self._occupied).nonzero().flatten()
        if len(free) < needed:
            self._grow(max(self._capacity + self._capacity // 2, self._capacity - len(free) + needed))
            free = (~self._occupied).nonzero().flatten()
        return free[:needed]

    def _evict(self) -> None:
        """Free the slots of rows the final choice can no longer take, and of repeated indices."""
        held = self._occupied.nonzero().flatten()
        if not len(held):
            return
        indices, labels = self._columns["indices"][held], self._columns["labels"][held]
        order = torch.argsort(indices, stable=True)
        repeated = torch.zeros(len(held), dtype=torch.bool)
        repeated[order[1:]] = indices[order[1:]] == indices[order[:-1]]
        # A row stays while its class's floor or the max_samples lowest overall may still take it.
        unique = held[~repeated]
        by_priority = torch.argsort(self.choice.priorities(indices[~repeated]), stable=True)
        possible = _class_floor(labels[~repeated], by_priority, self.choice.max_samples, self.choice.floor)
        possible[by_priority[: self.choice.max_samples]] = True
        self._occupied[held[repeated]] = False
        self._occupied[unique[~possible]] = False

    def _grow(self, capacity: int) -> None:
        for key, column in self._columns.items():
            grown = torch.empty((capacity, *column.shape[1:]), dtype=column.dtype)
            grown[: self._capacity] = column
            self._columns[key] = grown
        self._occupied = torch.cat([self._occupied, torch.zeros(capacity - self._capacity, dtype=torch.bool)])
        self._capacity = capacity

    def columns(self) -> dict[str, Tensor]:
        """The rows held, name -> (n, ...) tensors (empty if nothing was added). The bank is emptied: each
        column's buffer is released as soon as its rows are copied out, so memory peaks at the bank plus
        one column."""
        held = self._occupied.nonzero().flatten()
        in_order = bool(len(held) == 0 or int(held[-1]) == len(held) - 1)  # filled from slot 0 on, none freed
        out: dict[str, Tensor] = {}
        for key in list(self._columns):
            column = self._columns.pop(key)
            out[key] = column[: len(held)] if in_order else column[held]  # a view where it can be
            del column
        self._occupied[:] = False
        self._end = 0
        return out

    def finalize(self) -> BankData | None:
        """The chosen rows, sorted by dataset index; None if nothing was added."""
        return bank_from_columns(self.columns(), self.choice)


def bank_from_columns(columns: dict[str, Tensor], choice: Choice | None = None) -> BankData | None:
    """A :class:`BankData` from :meth:`FeatureBank.columns` (of one rank, or gathered from all): repeated
    indices dropped (a distributed sampler pads with repeats), the rows of ``choice`` kept (all when
    None), sorted by dataset index. Columns are replaced one at a time, so memory peaks at the rows plus
    one column."""
    if not columns or len(columns["indices"]) == 0:
        return None
    indices = columns["indices"]
    take: Tensor | None = None
    if not bool((indices[1:] > indices[:-1]).all()):  # a sequential sampler needs no reordering
        order = torch.argsort(indices, stable=True)
        first = torch.ones(len(order), dtype=torch.bool)
        first[1:] = indices[order][1:] != indices[order][:-1]
        take = order[first]
    if choice is not None:
        rows = take if take is not None else torch.arange(len(indices))
        chosen = choice.rows(indices[rows], columns["labels"][rows])
        if not bool(chosen.all()):
            take = rows[chosen]
    if take is not None:
        for key in list(columns):
            columns[key] = columns[key][take]
    return BankData(
        indices=columns["indices"].long(),
        labels=columns["labels"].long(),
        preds=columns["preds"].long(),
        confidences=columns["confidences"].float(),
        vectors={key[4:]: value for key, value in columns.items() if key.startswith("vec/")},
        thumbnails=columns["thumbnails"],
        probabilities=columns.get("probabilities", torch.zeros(len(columns["indices"]), 0)),
    )
