"""torch.compile: the forward of a compiled module (``torch.compile(module)``, ``self.net = torch.compile(net)``) runs
generated code in which forward hooks added after compiling never fire. While a layer is captured the forward runs
eagerly (``torch.compiler.set_stance("force_eager")``): the real modules run, with their hooks, and give the eager
numbers. An ``OptimizedModule`` keeps the model as ``_orig_mod``; layer names are shown without it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

COMPILED_ATTRIBUTE = "_orig_mod"


@contextmanager
def eager() -> Iterator[None]:
    """Inside, compiled functions and modules run their original Python (no-op where torch has no stances)."""
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield


def without_compiled(path: str) -> str:
    """A module path without torch.compile's ``_orig_mod`` parts (``net._orig_mod.layer1`` -> ``net.layer1``)."""
    return ".".join(part for part in path.split(".") if part != COMPILED_ATTRIBUTE)
