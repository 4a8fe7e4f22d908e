"""Each validation sample's thumbnail, made once: the same samples come back every epoch, and a thumbnail is a
picture of the sample, not of an epoch (the FEATVIZ tab always stored one set of pictures per set of samples).

A rank's memo holds the thumbnails of the rows its last bank held, for one validation dataset (another dataset,
e.g. ``trainer.validate`` on another loader, starts a new memo). Making them took 5-9 ms of each analysed epoch of
the short fit (1,000 samples; ``benchmarks/callback_time.py --inner``, ``thumbnails``). A validation set with random
transforms shows each sample as it was the first epoch it was kept.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class ThumbnailMemo:
    """The (M, 3, T, T) uint8 thumbnails of M dataset indices of one dataset."""

    def __init__(self) -> None:
        self._forget()

    def _forget(self) -> None:
        self._dataset: weakref.ref[Any] | None = None
        self._indices = torch.empty(0, dtype=torch.int64)  # (M,) sorted, no repeats
        self._thumbnails: Tensor | None = None  # (M, 3, T, T)
        self._start: int | None = None  # the first index, where the M indices are consecutive

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a pickled or deep-copied callback starts with an empty memo (a weak reference does not pickle)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._forget()

    def start(self, dataset: Any) -> None:
        """A captured epoch over ``dataset``: the thumbnails of any other dataset are forgotten (a dataset that
        cannot be weakly referenced is never remembered: an id may be reused)."""
        if self._dataset is not None and self._dataset() is dataset:
            return
        self._forget()
        try:
            self._dataset = weakref.ref(dataset)
        except TypeError:
            pass

    def thumbnails(self, indices: Tensor, make: Callable[[Tensor], Tensor]) -> Tensor:
        """(B, 3, T, T) thumbnails of the samples ``indices`` (B,): the remembered ones taken from the memo, the
        others made by ``make(rows)``, rows a (B,) bool mask of the batch."""
        indices = indices.cpu().long()
        if self._thumbnails is None or not len(indices):
            return make(torch.ones(len(indices), dtype=torch.bool))
        first, last = int(indices[0]), int(indices[-1])
        if self._start is not None and last - first == len(indices) - 1 and first >= self._start:
            # a sequential sampler's batch in a memo of consecutive indices: a slice, a few times cheaper
            if last < self._start + len(self._indices) and torch.equal(indices, torch.arange(first, last + 1)):
                return self._thumbnails[first - self._start : last - self._start + 1]
        at = torch.searchsorted(self._indices, indices).clamp_max(len(self._indices) - 1)
        known = self._indices[at] == indices
        if bool(known.all()):
            return self._thumbnails[at]
        made = make(~known)
        if not bool(known.any()):
            return made
        out = torch.empty((len(indices), *made.shape[1:]), dtype=made.dtype)
        out[known], out[~known] = self._thumbnails[at[known]], made
        return out

    def keep(self, indices: Tensor, thumbnails: Tensor) -> None:
        """Remember the thumbnails (N, 3, T, T) of a bank's rows ``indices`` (N,) (nothing for (N, 0): no images).
        Rows in index order are held as they are (the emptied bank's memory, which the analysis reads too): a single
        ``validate`` holds nothing more; a fit holds them beside the next epoch's bank."""
        if self._dataset is None or thumbnails.ndim != 4 or not len(indices):
            return
        if bool((indices[1:] > indices[:-1]).all()):  # a sequential sampler's: the bank's own tensors, no copy
            self._indices, self._thumbnails = indices, thumbnails
        else:
            order = torch.argsort(indices, stable=True)
            ordered = indices[order]
            first = torch.ones(len(order), dtype=torch.bool)
            first[1:] = ordered[1:] != ordered[:-1]  # a repeated index (a padding sampler) is held once
            self._indices, self._thumbnails = ordered[first], thumbnails[order[first]]
        start, end = int(self._indices[0]), int(self._indices[-1])
        self._start = start if end - start == len(self._indices) - 1 else None
