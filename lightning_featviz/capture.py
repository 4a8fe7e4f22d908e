"""Capture layer activations with forward hooks and reduce them to one vector per sample.

Layers are named by module path (``"layer3"``, ``"layer3.1.conv2"``), as in
``model.named_modules()``. The special name ``"input"`` is the batch itself (pixel space); it
has no hook and is reduced with :func:`reduce_input`.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_LAYER = "input"
Reduction = Literal["avg", "flatten", "adaptive"]


def resolve_layers(model: nn.Module, layers: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Check layer names against ``model`` and return ``{module path: display name}``.

    A name is a module path of ``model`` or, when that is unique, the end of one: ``"layer3"``
    finds ``"model.layer3"`` in a LightningModule that wraps a ResNet as ``self.model``.

    Raises:
        ValueError: a name matches no module, or the ends of several; the message lists candidates.
    """
    mapping = dict(layers) if isinstance(layers, Mapping) else {name: name for name in layers}
    known = [name for name, _ in model.named_modules() if name]
    resolved = {}
    for name, display in mapping.items():
        if name == INPUT_LAYER or name in known:
            resolved[name] = display
            continue
        endings = [path for path in known if path.endswith("." + name)]
        if len(endings) == 1:
            resolved[endings[0]] = display
            continue
        if endings:
            raise ValueError(
                f"Expected every entry of `layers` to name one module, but {name!r} ends several paths: "
                f"{endings[:5]}. Hint: give the full path."
            )
        close = _close_matches(name, known)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(
            f"Expected every entry of `layers` to be {INPUT_LAYER!r} or a module path of the model, "
            f"but got {name!r}.{hint} Hint: list every path with "
            "`[name for name, _ in model.named_modules()]`, or `featviz layers --arch resnet18`."
        )
    return resolved


def _close_matches(name: str, known: list[str]) -> list[str]:
    """Paths whose last ``len(name.split('.'))`` parts look like ``name``, best first."""
    depth = name.count(".") + 1
    tails: dict[str, str] = {}
    for path in known:
        tails.setdefault(".".join(path.split(".")[-depth:]), path)
    return [tails[tail] for tail in difflib.get_close_matches(name, list(tails), n=5, cutoff=0.6)]


def reduce_activation(activation: Tensor, reduction: Reduction = "avg", pool_size: int = 2) -> Tensor:
    """Reduce an activation of shape (B, C, *spatial) to vectors of shape (B, D).

    ``"avg"`` averages over every dimension after the channel one (D = C), ``"adaptive"``
    average-pools the spatial dimensions to ``pool_size`` per side (D = C * pool_size**ndim),
    ``"flatten"`` keeps everything (D = C * prod(spatial)). (B, C) inputs are returned as they are.
    """
    if activation.ndim <= 2:
        return activation.reshape(activation.shape[0], -1)
    if reduction == "avg":
        return activation.flatten(2).mean(dim=2)
    if reduction == "adaptive":
        spatial = activation.ndim - 2
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[spatial]
        return pool(activation, pool_size).flatten(1)
    return activation.flatten(1)


def reduce_input(images: Tensor, size: int) -> Tensor:
    """Downsample images (B, C, H, W) to (B, C, size, size) by area averaging and flatten to (B, C*size*size)."""
    images = images.float()
    if images.shape[-2:] != (size, size):
        images = F.adaptive_avg_pool2d(images, size)
    return images.flatten(1)


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


class ActivationCapture:
    """Forward hooks that keep, per named layer, the reduced activation of the latest forward.

    The hook reduces right away and copies to CPU float32, so an in-place operation later in the
    forward (``ReLU(inplace=True)``) cannot change what was taken, and no autograd graph is kept.
    A module called several times per forward (ResNet's shared ``relu``) keeps its first call.

    Use :meth:`attach` as a context manager, or :meth:`register` / :meth:`remove`.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reduction: Reduction = "avg", pool_size: int = 2):
        self.model = model
        self.layers = [name for name in layers if name != INPUT_LAYER]
        self.reduction: Reduction = reduction
        self.pool_size = pool_size
        self.outputs: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._warned_reuse: set[str] = set()

    def _hook(self, name: str):  # noqa: ANN202 - returns a hook closure
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in self.outputs:
                if name not in self._warned_reuse:
                    self._warned_reuse.add(name)
                    warnings.warn(
                        f"Layer {name!r} runs more than once per forward; its first call is captured. "
                        "Hint: name a module that runs once (e.g. 'layer1.0.relu' is shared too in "
                        "torchvision's ResNet; 'layer1.0.bn2' is not).",
                        stacklevel=2,
                    )
                return
            tensor = _first_tensor(output)
            if tensor is None:
                return
            with torch.no_grad():
                vectors = reduce_activation(tensor.detach(), self.reduction, self.pool_size)
                # A view of the output would change under a later in-place op: copy it. A pooled
                # result is fresh memory already, and copying it again costs a kernel per layer.
                aliased = vectors.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
                self.outputs[name] = vectors.to(device="cpu", dtype=torch.float32, copy=aliased)

        return hook

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def register(self) -> None:
        """Register one forward hook per layer (idempotent)."""
        if self._handles:
            return
        modules = dict(self.model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]

    def remove(self) -> None:
        """Remove every hook this object registered and forget captured outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.outputs = {}

    def pop(self) -> dict[str, Tensor]:
        """Return the outputs captured since the last call, ``{layer: (B, D)}``, and clear them."""
        outputs, self.outputs = self.outputs, {}
        return outputs

    @contextmanager
    def attach(self) -> Iterator[ActivationCapture]:
        self.register()
        try:
            yield self
        finally:
            self.remove()
