"""A cache of results (kNN searches, t-SNE maps, their measures) keyed by a fingerprint of their input tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Generic, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def digest(tensors: tuple[Tensor | None, ...]) -> bytes:
    """A fingerprint of the tensors' shapes, dtypes and bytes (SHA-256): equal for bit-identical inputs.

    SHA-256 rather than BLAKE2b: on processors with SHA extensions (most x86 ones since 2017-2019, ARMv8) it hashes
    about twice as fast, 2.0 against 3.6 ms for the 3.4 MB of a 1,000-sample bank that a short fit hashes each epoch."""
    hasher = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            hasher.update(b"none")
            continue
        data = tensor.detach().cpu().contiguous()
        hasher.update(f"{tuple(data.shape)}{data.dtype}".encode())
        if data.numel():
            hasher.update(data.reshape(-1).view(torch.uint8).numpy().data)  # the bytes themselves, no copy
    return hasher.digest()


class ResultCache(Generic[T]):
    """Reuses results (kNN searches, t-SNE maps) whose inputs are bit-identical to earlier ones.

    Pixel space gives the same vectors every epoch, frozen layers do too, and some layers repeat
    another's vectors (a ResNet's ``layer4`` and ``avgpool`` on small images). Inputs are compared by
    :func:`digest`, O(N * D); the search it saves is O(N^2 * D). Only fingerprints are kept, never the
    inputs (a cache must not hold an epoch's bank into the next), and only for the entries used since
    the last :meth:`next_round`.
    """

    def __init__(self) -> None:
        self._previous: dict[bytes, T] = {}
        self._current: dict[bytes, T] = {}

    def get(self, key: tuple[Tensor | None, ...], compute: Callable[[], T]) -> T:
        """``compute()``'s result, or the one stored under an equal ``key`` (a tuple of tensors)."""
        fingerprint = digest(key)
        if fingerprint in self._current:
            return self._current[fingerprint]
        result = self._previous[fingerprint] if fingerprint in self._previous else compute()
        self._current[fingerprint] = result
        return result

    def next_round(self) -> None:
        """Forget everything not used in the round that just ended."""
        self._previous, self._current = self._current, {}
