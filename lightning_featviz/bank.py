"""A bounded per-epoch store of captured samples: the same subset of the dataset every epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


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


def stored_bytes(bank: BankData) -> int:
    """Bytes a finalised bank actually holds."""
    tensors = [bank.indices, bank.labels, bank.preds, bank.confidences, bank.thumbnails, bank.probabilities]
    tensors += list(bank.vectors.values())
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class FeatureBank:
    """Collects, batch by batch, the samples of ``keep`` (sorted dataset indices); vectors and
    probabilities are stored in ``dtype`` (float16 halves the memory; analysis computes in float32)."""

    keep: Tensor
    dtype: torch.dtype = torch.float32
    _parts: dict[str, list[Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # select_subset keeps range(n) whole when n <= max_samples: then no batch needs filtering.
        self._keeps_everything = bool(len(self.keep) == 0 or int(self.keep[-1]) == len(self.keep) - 1)

    def rows_to_keep(self, indices: Tensor) -> Tensor | slice | None:
        """Rows of a batch with dataset ``indices`` (B,) that belong in the bank: all (a slice), some, or None."""
        if self._keeps_everything:
            return slice(None)
        mask = torch.isin(indices.cpu(), self.keep)
        if not bool(mask.any()):
            return None
        return slice(None) if bool(mask.all()) else mask.nonzero().flatten()

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
        """Add the rows of one batch (all (B, ...)); select them with :meth:`rows_to_keep` first.

        ``probabilities`` (B, C) is the model's softmax, None where its output was not seen.
        """
        columns = {
            "indices": indices,
            "labels": labels,
            "preds": preds,
            "confidences": confidences,
            "thumbnails": thumbnails,
            "probabilities": (probabilities if probabilities is not None else torch.zeros(len(indices), 0)).to(
                self.dtype
            ),
        }
        columns.update({f"vec/{name}": value.to(self.dtype) for name, value in vectors.items()})
        for key, value in columns.items():
            self._parts.setdefault(key, []).append(value.detach().cpu())

    def columns(self) -> dict[str, Tensor]:
        """Everything added so far, concatenated: name -> (n, ...) tensors; empty if nothing was added.

        Batches without probabilities get NaN rows of the others' width (C).
        """
        widths = {part.shape[1] for part in self._parts.get("probabilities", [])}
        if len(widths) > 1:
            width = max(widths)
            self._parts["probabilities"] = [
                part if part.shape[1] == width else torch.full((len(part), width), float("nan"), dtype=part.dtype)
                for part in self._parts["probabilities"]
            ]
        return {key: torch.cat(parts) for key, parts in self._parts.items()}

    def finalize(self) -> BankData | None:
        """Concatenate, sort by dataset index and drop repeated indices; None if nothing was added."""
        return bank_from_columns(self.columns())


def bank_from_columns(columns: dict[str, Tensor]) -> BankData | None:
    """A :class:`BankData` from :meth:`FeatureBank.columns` (of one rank, or gathered from all):
    sorted by dataset index, repeated indices dropped (a distributed sampler pads with repeats)."""
    if not columns or len(columns["indices"]) == 0:
        return None
    indices = columns["indices"]
    if not bool((indices[1:] > indices[:-1]).all()):  # a sequential sampler needs no reordering
        order = torch.argsort(indices, stable=True)
        columns = {key: value[order] for key, value in columns.items()}
        first = torch.ones_like(columns["indices"], dtype=torch.bool)
        first[1:] = columns["indices"][1:] != columns["indices"][:-1]
        columns = {key: value[first] for key, value in columns.items()}
    return BankData(
        indices=columns["indices"].long(),
        labels=columns["labels"].long(),
        preds=columns["preds"].long(),
        confidences=columns["confidences"].float(),
        vectors={key[4:]: value for key, value in columns.items() if key.startswith("vec/")},
        thumbnails=columns["thumbnails"],
        probabilities=columns.get("probabilities", torch.zeros(len(columns["indices"]), 0)),
    )
