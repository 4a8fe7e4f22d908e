"""Copies of captured vectors to host memory that do not stall a CUDA forward.

A blocking ``tensor.cpu()`` in a forward hook waits for every kernel queued before it, once per layer per
batch, and the GPU idles while the host catches up. On CUDA, :class:`HostCopies` instead copies into
page-locked (pinned) host memory with ``non_blocking=True`` and records an event; the forward goes on, and
:meth:`HostCopies.wait` blocks once, when the vectors are read. Tensors on other devices are copied as before.
"""

from __future__ import annotations

import torch
from torch import Tensor


class HostCopies:
    """Host float32 copies of device tensors, made without blocking on CUDA.

    :meth:`to_host` returns a CPU tensor at once; for a CUDA source its values are valid only after
    :meth:`wait`. Pinned blocks come from PyTorch's caching host allocator (as a ``DataLoader`` with
    ``pin_memory=True`` uses it): freed blocks are reused once their copies are done, so memory stays at
    about one batch's vectors.
    """

    def __init__(self) -> None:
        self._pending: list[torch.cuda.Event] = []

    def to_host(self, vectors: Tensor, copy: bool = False) -> Tensor:
        """``vectors`` (B, D) as a CPU float32 tensor (B, D).

        Args:
            vectors: (B, D) tensor on any device, any floating dtype.
            copy: copy even where the result could share memory with ``vectors`` (a CPU float32 view of a
                layer's output, which a later in-place operation would change). A CUDA source is always copied.

        Returns:
            (B, D) float32 CPU tensor; pinned, and filled only once :meth:`wait` returns, for a CUDA source.
        """
        if vectors.device.type != "cuda":
            return vectors.to(device="cpu", dtype=torch.float32, copy=copy)
        # Cast on the device (a new tensor there when the dtype differs), then one asynchronous transfer. Work
        # queued later on this stream (an in-place ReLU on the same output) runs after the copy has read it.
        source = vectors.to(dtype=torch.float32)
        host = torch.empty(source.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(source, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(source.device))
        self._pending.append(event)
        return host

    @property
    def pending(self) -> bool:
        """Whether copies were started that :meth:`wait` has not waited for."""
        return bool(self._pending)

    def wait(self) -> None:
        """Block until every copy started by :meth:`to_host` has landed in host memory."""
        for event in self._pending:
            event.synchronize()
        self._pending = []
