"""Giving the C heap's free pages back to the operating system between large temporary allocations."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Return the free pages of the C heap to the operating system (glibc; a no-op elsewhere).

    A kNN search, a t-SNE fit or a report allocates and frees blocks of a few MB to tens of MB. glibc
    serves blocks of that size from its heap once a larger one has been freed (its mmap threshold
    adapts), and a freed block amid live ones stays resident: over one 20,000-sample epoch the process
    kept tens of MB more than it used (``benchmarks/memory.py --large``). Called between such phases,
    this keeps the resident set near what is in use. It costs about a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
