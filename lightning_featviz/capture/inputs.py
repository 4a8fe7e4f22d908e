"""The ``"input"`` layer: what a classifier's raw input is, and how it becomes one vector per sample.

A classifier may see images, sequences, plain vectors or token ids. Each kind has its own raw-input
space (the baseline every learned layer is compared with) and only images have thumbnails:

============  ======================================  ==============================================  ==========
kind          batch                                   ``"input"`` vector                              thumbnails
============  ======================================  ==============================================  ==========
``image``     float (B, C, H, W)                      area-downsampled to ``size`` x ``size``: C*size²  yes
``sequence``  float (B, T, F)                         T area-resampled to ``size`` steps: size*F      no
``vector``    float (B, F) or (B,)                    the vector itself: F                            no
``tokens``    integer (B, T)                          bag of tokens: id counts in size² buckets / T   no
============  ======================================  ==============================================  ==========

A float (B, H, W) batch is a grey image for a model with 2-D convolutions, else a sequence.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

InputKind = Literal["image", "sequence", "vector", "tokens"]
INPUT_KINDS: tuple[InputKind, ...] = ("image", "sequence", "vector", "tokens")


def input_kind(inputs: Tensor, model: nn.Module | None = None) -> InputKind:
    """The kind of a batch of ``inputs`` (see the module's table); ``model`` settles (B, H, W) floats.

    Raises:
        TypeError: a shape or dtype that is none of the kinds.
    """
    if not inputs.is_floating_point():
        if inputs.dtype == torch.bool or inputs.is_complex() or inputs.ndim != 2:
            raise TypeError(
                f"Expected integer inputs to be token ids of shape (B, T), but got dtype {inputs.dtype} and shape "
                f"{tuple(inputs.shape)}."
            )
        return "tokens"
    if inputs.ndim == 4:
        return "image"
    if inputs.ndim == 3:
        convolves = model is not None and any(isinstance(m, nn.Conv2d) for m in model.modules())
        return "image" if convolves else "sequence"
    if inputs.ndim in (1, 2):
        return "vector"
    raise TypeError(
        f"Expected inputs of shape (B, C, H, W), (B, T, F), (B, F) or integer token ids (B, T), but got "
        f"{tuple(inputs.shape)}."
    )


def check_input_kind(inputs: Tensor, kind: InputKind) -> None:
    """Raise ``TypeError`` when a batch of ``inputs`` does not have the shape and dtype of ``kind``."""
    fits = {
        "image": inputs.is_floating_point() and inputs.ndim in (3, 4),
        "sequence": inputs.is_floating_point() and inputs.ndim == 3,
        "vector": inputs.is_floating_point() and inputs.ndim in (1, 2),
        "tokens": not inputs.is_floating_point() and not inputs.is_complex() and inputs.ndim == 2,
    }
    if not fits[kind]:
        raise TypeError(
            f"Expected {kind} inputs ({_SHAPES[kind]}), but got dtype {inputs.dtype} and shape {tuple(inputs.shape)}. "
            "Hint: pass `capture=CaptureOptions(input_kind=...)` to FeatureVisualizer (one of 'image', 'sequence', "
            "'vector', 'tokens')."
        )


_SHAPES = {
    "image": "float (B, C, H, W) or (B, H, W)",
    "sequence": "float (B, T, F)",
    "vector": "float (B, F) or (B,)",
    "tokens": "integer (B, T)",
}


def as_images(inputs: Tensor) -> Tensor:
    """(B, C, H, W) images from a batch of kind ``"image"`` ((B, H, W) gets one channel)."""
    return inputs[:, None] if inputs.ndim == 3 else inputs


def reduce_input(inputs: Tensor, kind: InputKind, size: int, mask: Tensor | None = None) -> Tensor:
    """One float32 vector per sample of a batch of ``kind``: (B, D) with D from :func:`input_width`. Token ids count
    only where ``mask`` (B, T) is nonzero (text padding is no token), when it is given."""
    if kind == "image":
        images = as_images(inputs).float()
        height, width = images.shape[-2:]
        if height % size == 0 and width % size == 0 and (height, width) != (size, size):
            images = area_downsample(images, height // size, width // size)  # the same windows, a cheaper kernel
        elif (height, width) != (size, size):
            images = F.adaptive_avg_pool2d(images, size)
        return images.flatten(1)
    if kind == "sequence":
        steps = inputs.float().transpose(1, 2)  # (B, F, T)
        if steps.shape[-1] != size:
            steps = F.adaptive_avg_pool1d(steps, size)
        return steps.transpose(1, 2).flatten(1)
    if kind == "vector":
        return inputs.float().reshape(inputs.shape[0], -1)
    buckets = size * size
    ids = inputs.long().remainder(buckets)
    real = torch.ones_like(ids, dtype=torch.float32)
    if mask is not None and tuple(mask.shape) == tuple(ids.shape):
        real = (mask.to(ids.device) != 0).float()
    counts = torch.zeros(inputs.shape[0], buckets, device=inputs.device).scatter_add_(1, ids, real)
    return counts / real.sum(dim=1, keepdim=True).clamp_min(1)


#: Windows of at most this many pixels are averaged by strided slices (:func:`area_downsample`).
SLICED_WINDOW = 4


def area_downsample(images: Tensor, rows: int, columns: int) -> Tensor:
    """(B, C, H, W) images averaged over ``rows`` x ``columns`` windows that tile them: (B, C, H / rows, W / columns).

    The values of ``F.avg_pool2d(images, (rows, columns))`` bit for bit (``tests/test_inputs.py``): its CPU kernel
    adds a window's pixels row by row and divides by their count; so does this for small windows on the CPU, adding
    the window's strided slices in that order, in half the kernel's time (2 x 2 windows, 32 x 32 images to 16 x 16:
    0.10 against 0.19 ms per batch of 32, one thread). Larger windows and other devices take the pooling kernel.
    """
    if rows * columns > SLICED_WINDOW or images.device.type != "cpu":
        return F.avg_pool2d(images, (rows, columns))
    total = images[..., 0::rows, 0::columns].clone()
    for position in range(1, rows * columns):
        total.add_(images[..., position // columns :: rows, position % columns :: columns])
    return total.div_(rows * columns)


def input_width(shape: tuple[int, ...], kind: InputKind, size: int) -> int:
    """D of :func:`reduce_input` for a batch of ``shape`` (B, ...)."""
    if kind == "image":
        return (shape[1] if len(shape) == 4 else 1) * size * size
    if kind == "sequence":
        return size * shape[2]
    if kind == "vector":
        return 1 if len(shape) == 1 else shape[1]
    return size * size
