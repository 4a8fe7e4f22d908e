"""How a layer's output becomes (B, D) vectors once its layout is known, and which reductions apply to which
layout (deciding the layout is :mod:`lightning_featviz.capture.layouts`' job).

Maps are reduced by ``"avg"`` | ``"adaptive"`` | ``"flatten"``, sequences by ``"cls"`` | ``"mean"`` | ``"last"`` |
``"flatten"``; a vector is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_featviz.capture.layouts import Layout, LayoutError
from lightning_featviz.capture.pooling import TokenPooling, masked_mean

#: Functions a head may apply to a module's (B, F) vectors before it reads them, as no module of its own: RoBERTa's
#: classification head (``tanh``), heads written with ``F.relu``, ``F.gelu``. Elementwise, so the
#: capture applies them to the layer's vectors.
HEAD_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu}

#: A layer's reduction: a name, a model's token pooling, or a function of the layer's output that returns (B, D).
LayerReduction = str | TokenPooling | Callable[[Any], Tensor]
MAP_REDUCTIONS = ("avg", "mean", "adaptive", "flatten")
SEQUENCE_REDUCTIONS = ("mean", "avg", "cls", "first", "last", "flatten")


def to_standard(tensor: Tensor, layout: Layout) -> Tensor:
    """Move axes so that maps are (B, C, *spatial), sequences (B, T, C) and vectors (B, F)."""
    if layout.kind == "map" and layout.feature_axis != 1:
        return tensor.movedim(layout.feature_axis % tensor.ndim, 1)
    if layout.kind == "sequence" and layout.batch_axis != 0:
        return tensor.transpose(0, 1)
    return tensor


def reduce_map(maps: Tensor, reduction: str, pool_size: int = 2) -> Tensor:
    """(B, C, *spatial) → (B, D): ``"avg"``/``"mean"`` (D = C), ``"adaptive"`` (average pool to
    ``pool_size`` per side, D = C * pool_size**ndim) or ``"flatten"`` (D = C * prod(spatial))."""
    if maps.ndim <= 2:
        return maps.reshape(maps.shape[0], -1)
    if reduction in ("avg", "mean"):
        return maps.flatten(2).mean(dim=2)
    if reduction == "adaptive":
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[maps.ndim - 2]
        return pool(maps, pool_size).flatten(1)
    return maps.flatten(1)


def reduce_sequence(sequence: Tensor, reduction: str | TokenPooling, mask: Tensor | None = None) -> Tensor:
    """(B, T, C) → (B, D): ``"cls"``/``"first"`` token 0 (D = C), ``"mean"``/``"avg"`` over T (D = C; only the tokens
    where ``mask`` (B, T) is nonzero, when given: text padding), ``"last"`` step T - 1 (D = C), ``"flatten"``
    (D = T * C), or a model's :class:`~lightning_featviz.capture.pooling.TokenPooling` (D = C)."""
    if isinstance(reduction, TokenPooling):
        return reduction.reduce(sequence, mask)
    if reduction in ("cls", "first"):
        return sequence[:, 0]
    if reduction == "last":
        return sequence[:, -1]
    if reduction == "flatten":
        return sequence.flatten(1)
    return masked_mean(sequence, mask)


def reduce_output(
    tensor: Tensor, layout: Layout, reduction: str | TokenPooling, pool_size: int = 2, mask: Tensor | None = None
) -> Tensor:
    """An output in ``layout`` → (B, D) vectors with ``reduction`` (see :func:`reduce_map`, :func:`reduce_sequence`;
    ``mask``: the batch's (B, T) attention mask, or None)."""
    standard = to_standard(tensor, layout)
    if layout.kind == "sequence":
        return reduce_sequence(standard, reduction, mask)
    if isinstance(reduction, TokenPooling):
        return standard.reshape(standard.shape[0], -1) if standard.ndim == 2 else reduce_map(standard, "avg")
    return reduce_map(standard, reduction, pool_size)


def token_layout(layout: Layout, pooling: TokenPooling | None, rank: int) -> Layout:
    """A rank-3 output inside a timm / HF transformers token model is its (B, N, C) tokens (those libraries are
    batch first), whatever a shape-keeping module that produced it suggested."""
    if pooling is None or rank != 3 or layout.kind == "sequence":
        return layout
    return Layout("sequence", 0, 2, why=f"tokens of {pooling.owner}")


def layer_reduction(
    layout: Layout, given: str | TokenPooling | None, pooling: TokenPooling | None, map_reduction: str
) -> str | TokenPooling:
    """The reduction of a layer: the one ``given`` for it, else its model's token ``pooling`` for a sequence, else
    the layout's default (``map_reduction`` for maps)."""
    if given is not None:
        return given
    if pooling is not None and layout.kind == "sequence":
        return pooling
    return layout.default_reduction(map_reduction)


def reduction_name(reduction: str | TokenPooling, length: int | None = None) -> str:
    """How ``featviz layers`` shows a reduction (a pooling on a sequence without its prefix tokens: ``"mean"``)."""
    if isinstance(reduction, TokenPooling):
        return reduction.name if length is None or reduction.carries_prefix(length) else "mean"
    return reduction


def assumed_layout(rank: int, reduction: str) -> Layout | None:
    """The layout a reduction given for an undecidable layer implies: (B, T, C) for a sequence reduction of a
    3-D output, (B, C, *spatial) for a map reduction, as the error message's hint says; else None."""
    if rank == 3 and reduction in SEQUENCE_REDUCTIONS and reduction not in ("avg", "flatten"):
        return Layout("sequence", 0, 2, why=f"reduction {reduction!r} given for (B, T, C)")
    if rank in (3, 4) and reduction in MAP_REDUCTIONS and reduction != "mean":
        return Layout("map", 0, 1, why=f"reduction {reduction!r} given for (B, C, ...)")
    return None


def check_reduction(name: str, layout: Layout, reduction: str | TokenPooling) -> None:
    """Raise :class:`LayoutError` when ``reduction`` does not apply to ``layout`` (``"cls"`` of a conv map)."""
    if isinstance(reduction, TokenPooling):
        return
    allowed = {"map": MAP_REDUCTIONS, "sequence": SEQUENCE_REDUCTIONS, "vector": MAP_REDUCTIONS + SEQUENCE_REDUCTIONS}
    if reduction not in allowed[layout.kind]:
        raise LayoutError(
            f"Expected the reduction of layer {name!r} to be one of {list(allowed[layout.kind])} for its "
            f"{layout.kind} output, but got {reduction!r}."
        )
