"""A record of one forward: every module call, in the order the calls finished, with its first output and
input tensors held by weak reference (a tensor freed since cannot be mistaken for one alive now)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(eq=False)
class TraceEntry:
    """One module call of a forward: its path, the module, and its first output and input tensors (shapes,
    and weak references: a tensor freed since cannot be one alive now, even where its memory was reused)."""

    path: str
    module: nn.Module
    shape: tuple[int, ...] | None
    output: weakref.ref[Tensor] | None
    input_shape: tuple[int, ...] | None
    input: weakref.ref[Tensor] | None

    @staticmethod
    def of(path: str, module: nn.Module, args: Any, output: Any) -> TraceEntry:
        out, inp = first_tensor(output), first_tensor(args)
        return TraceEntry(
            path,
            module,
            None if out is None else tuple(out.shape),
            None if out is None else weakref.ref(out),
            None if inp is None else tuple(inp.shape),
            None if inp is None else weakref.ref(inp),
        )


def same_tensor(a: weakref.ref[Tensor] | None, b: weakref.ref[Tensor] | None) -> bool:
    """Both alive and the same tensor, or views of the same memory with the same shape and strides."""
    x, y = (a() if a is not None else None), (b() if b is not None else None)
    if x is None or y is None:
        return False
    if x is y:
        return True
    try:
        same_memory = x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # a nested or sparse tensor
        return False
    same_view = x.shape == y.shape and x.stride() == y.stride() and int(x.storage_offset()) == int(y.storage_offset())
    return bool(same_memory and same_view)


def first_tensor(value: Any) -> Tensor | None:
    """``value`` if a tensor, else the first element of a tuple/list when it is one."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


class ForwardTrace:
    """Forward hooks on every module of ``model`` recording each call (completion order) as a :class:`TraceEntry`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.entries: list[TraceEntry] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def register(self) -> None:
        if self._handles:
            return
        for path, module in self.model.named_modules():
            self._handles.append(module.register_forward_hook(self._recorder(path)))

    def _recorder(self, path: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            self.entries.append(TraceEntry.of(path, module, args, output))

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.entries = []
