"""Collecting per-rank banks under DDP: uneven sizes, empty ranks, gloo or NCCL. No-ops on one process.

Every function here is a collective: every rank must call it, in the same order, or the others
hang. The callback calls them from hooks that all ranks run, never inside a rank-zero branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where collectives run: the current CUDA device for NCCL (it cannot gather CPU tensors), else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_columns(columns: dict[str, Tensor], dst: int = 0) -> dict[str, Tensor] | None:
    """Concatenate every rank's columns on rank ``dst``, in rank order; other ranks get None.

    ``columns`` maps a name to an (n_r, ...) tensor; n_r is the same for the columns of one rank
    and may differ between ranks, or be 0 — a rank that saw no batch passes ``{}``. Each column is
    padded to the largest n_r, all-gathered and trimmed (``all_gather`` needs equal shapes, and
    NCCL has no uneven gather). Outside DDP: ``columns`` itself.
    """
    if not is_distributed():
        return columns
    rank, world = dist.get_rank(), dist.get_world_size()
    local = {name: (tuple(value.shape), value.dtype) for name, value in columns.items()}
    layouts: list[Any] = [None] * world
    dist.all_gather_object(layouts, local)
    names = sorted({name for layout in layouts for name in layout})
    if not names:
        return {} if rank == dst else None
    template = next(layout for layout in layouts if layout)
    sizes = [next(iter(layout.values()))[0][0] if layout else 0 for layout in layouts]
    device, longest = _device(), max(sizes)
    gathered: dict[str, Tensor] = {}
    for name in names:
        shape, dtype = template[name]
        padded = torch.zeros((longest, *shape[1:]), dtype=dtype, device=device)
        if name in columns and sizes[rank]:
            padded[: sizes[rank]] = columns[name].to(device)
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        if rank == dst:
            gathered[name] = torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).cpu()
    return gathered if rank == dst else None


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` from rank ``src`` on every rank (the same metrics to log everywhere, say)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src, device=_device())
    return holder[0]


def all_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank; ``[value]`` outside DDP."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def on_rank_zero(is_global_zero: bool, action: Callable[[], tuple[Any, dict[str, float]]]) -> tuple[Any, dict]:
    """``action()`` on rank 0: its results there (None elsewhere) and its scalars on every rank. When it raises
    (``strict``), every rank raises after the broadcast: none is left waiting in a collective."""
    results, failure = None, None
    metrics: dict[str, float] = {}
    if is_global_zero:
        try:
            results, metrics = action()
        except Exception as error:  # raised below, after telling the other ranks
            failure = error
    failed, metrics = broadcast_object((failure is not None, metrics))
    if failure is not None:
        raise failure
    if failed:
        raise RuntimeError("FeatureVisualizer's analysis failed on rank 0 (strict=True); see its error.")
    return results, metrics


def ranks_without_batches(local_batches: float) -> list[int]:
    """The ranks that see no validation batch, when some others do (every rank calls this: a collective)."""
    everyone = all_objects(float(local_batches))
    return [rank for rank, count in enumerate(everyone) if count == 0] if min(everyone) == 0 < max(everyone) else []
