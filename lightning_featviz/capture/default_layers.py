"""Default layers for any model: the input, the outputs of its main stages, and the last pooled feature
before the classifier head, found on the module tree during one forward (not from names like ``avgpool``).

- **Head**: the last module with weights that runs (the classifier's Linear, SqueezeNet's final conv).
- **Pooled feature**: the last global pooling module (output spatially 1 × 1) that runs before the head;
  without one, the last module before the head that outputs (B, F) vectors (an MLP's last hidden layer).
- **Stages**: the model's children, where a container whose children run through several resolutions
  one after another (the spatial size of a map, the length of a sequence; branches that interleave
  resolutions, as in an Inception block, do not count) is replaced by its children, recursively
  (EfficientNet's ``features`` by ``features.0`` ... ``features.8``; ResNet's ``layer2`` stays whole).
  These are grouped by resolution, and each group's last container (a module with submodules) is a
  stage. A model without containers uses its plain modules instead.
- A stage whose vectors equal a later default's on the probe batch (ResNet's ``layer4`` averaged is
  ``avgpool``) is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_featviz.capture.layouts import POOLING, Layout, LayoutError, LayoutResolver
from lightning_featviz.capture.reductions import reduce_output
from lightning_featviz.capture.trace import ForwardTrace, TraceEntry, first_tensor

INPUT_LAYER = "input"


@dataclass
class Candidate:
    """A module's first call in the probe forward.

    Attributes:
        path: its module path.
        kind: its class name.
        shape: its output's shape, or None (no tensor).
        layout: its output layout, or None with ``problem`` saying why.
        dims: the vector size per sample under the default reduction (0 when unknown).
        vectors: (B, dims) vectors of the probe batch, or None.
        order: its position in completion order.
        container: whether it has submodules.
    """

    path: str
    kind: str
    shape: tuple[int, ...] | None
    layout: Layout | None
    dims: int
    vectors: Tensor | None
    order: int
    container: bool
    problem: str = ""


@dataclass
class DefaultLayers:
    """The chosen layers (``{path: display name}``, ``"input"`` first) and every candidate of the probe."""

    layers: dict[str, str]
    candidates: list[Candidate]


def _resolution(candidate: Candidate) -> tuple[int, ...] | None:
    """A stage's grouping key: spatial size of a map, (length,) of a sequence; None for anything else."""
    layout, shape = candidate.layout, candidate.shape
    if layout is None or shape is None or layout.kind == "vector":
        return None
    if layout.kind == "sequence":
        return (-1, shape[1 - layout.batch_axis])
    axes = [i for i in range(len(shape)) if i not in (layout.batch_axis % len(shape), layout.feature_axis % len(shape))]
    return tuple(shape[i] for i in axes) or None


def probe_candidates(
    model: nn.Module, example: Tensor, map_reduction: str = "avg", pool_size: int = 2
) -> tuple[list[Candidate], list[TraceEntry]]:
    """Run ``model(example)`` once (eval mode, no grad; the training flag is restored) and describe each
    module's first call. ``example`` is a (B, ...) input batch. Each output is reduced as it is made, so
    the probe holds (B, D) vectors, never a forward's worth of activations."""
    trace = ForwardTrace(model)
    resolver = LayoutResolver(model, int(example.shape[0]))
    candidates: dict[str, Candidate] = {}

    def describe(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not path or path in candidates:
                return
            tensor = first_tensor(output)
            entry = TraceEntry.of(path, module, args, output)
            layout, vectors, problem = None, None, ""
            try:  # the trace holds every call completed before this one: this call's entry comes after
                layout = resolver.resolve(path, entry, trace.entries)
                assert tensor is not None
                reduction = layout.default_reduction(map_reduction)
                vectors = reduce_output(tensor.detach(), layout, reduction, pool_size).float().cpu()
            except LayoutError as error:
                problem = str(error).split(". Hint")[0]
            container = any(True for _ in module.children())
            dims = int(vectors.shape[1]) if vectors is not None and vectors.ndim == 2 else 0
            order = len(trace.entries)
            kind = type(module).__name__
            candidates[path] = Candidate(path, kind, entry.shape, layout, dims, vectors, order, container, problem)

        return hook

    was_training = model.training
    handles = [module.register_forward_hook(describe(path)) for path, module in model.named_modules()]
    try:
        model.eval()
        trace.register()  # after the describing hooks: a call is described before it joins the trace
        with torch.no_grad():
            model(example)
        entries = list(trace.entries)
    finally:
        trace.remove()
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sorted(candidates.values(), key=lambda c: c.order), entries


def _children(model: nn.Module, path: str, by_path: dict[str, Candidate]) -> list[Candidate]:
    """The submodules of ``path`` that ran, in the order they finished; a ModuleList/ModuleDict that
    is never called itself stands for its own children."""
    module = model.get_submodule(path) if path else model
    found: list[Candidate] = []
    for name, _ in module.named_children():
        child = f"{path}.{name}" if path else name
        found.extend([by_path[child]] if child in by_path else _children(model, child, by_path))
    return sorted(found, key=lambda c: c.order)


def _is_trunk(resolutions: list[tuple[int, ...] | None]) -> bool:
    """Children that run through several resolutions one after another (a backbone's stages), not
    branches that interleave them (an Inception block's strided and unstrided branches)."""
    runs = [r for i, r in enumerate(resolutions) if i == 0 or r != resolutions[i - 1]]
    return len(runs) > 1 and len(runs) == len(set(runs))


def _trunk(model: nn.Module, path: str, by_path: dict[str, Candidate]) -> list[Candidate]:
    """The model's modules at stage granularity: a container whose children run through several resolutions
    one after another is replaced by its children (recursively), others are kept whole."""
    items: list[Candidate] = []
    for child in _children(model, path, by_path):
        inner = _children(model, child.path, by_path) if child.container else []
        if _is_trunk([_resolution(c) for c in inner]):
            items.extend(_trunk(model, child.path, by_path))
        else:
            items.append(child)
    return items


def choose_default_layers(model: nn.Module, candidates: Sequence[Candidate]) -> dict[str, str]:
    """Pick ``"input"``, the main stages and the pooled feature out of ``candidates`` (see the module doc)."""
    weighted = [c for c in candidates if not c.container and c.layout is not None and _has_weights(c)]
    head = weighted[-1] if weighted else None
    before = [c for c in candidates if head is None or c.order < head.order]
    if head is not None:
        before = [c for c in before if not head.path.startswith(c.path + ".")]  # not the head's ancestors
    pooled = next(
        (c for c in reversed(before) if c.kind.startswith("Adaptive") and c.kind in _POOL_NAMES and _global(c)),
        None,
    ) or next((c for c in reversed(before) if c.layout is not None and c.layout.kind == "vector" and c.dims), None)
    by_path = {c.path: c for c in candidates}
    allowed = {c.path for c in before}
    trunk = [c for c in _trunk(model, "", by_path) if c.path in allowed and _resolution(c) is not None and c.dims]
    groups: dict[tuple[int, ...], list[Candidate]] = {}
    for candidate in trunk:
        groups.setdefault(_resolution(candidate) or (), []).append(candidate)
    use_containers = any(c.container for c in trunk)
    chosen: list[Candidate] = []
    for members in sorted(groups.values(), key=lambda members: members[-1].order):
        eligible = [c for c in members if c.container == use_containers]
        if eligible:
            chosen.append(eligible[-1])
    if pooled is not None and pooled not in chosen:
        chosen.append(pooled)
    chosen.sort(key=lambda c: c.order)
    kept = [c for i, c in enumerate(chosen) if not any(_same_vectors(c, later) for later in chosen[i + 1 :])]
    return {INPUT_LAYER: INPUT_LAYER, **{c.path: c.path for c in kept}}


_POOL_NAMES = {cls.__name__ for cls in POOLING} | {
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
}


def _global(candidate: Candidate) -> bool:
    """A pooled output: (B, C) or a map whose every spatial side is 1."""
    key = _resolution(candidate)
    return candidate.layout is not None and (key is None or all(side == 1 for side in key))


def _has_weights(candidate: Candidate) -> bool:
    return candidate.kind.startswith(("Linear", "Conv", "LazyLinear", "LazyConv"))


def _same_vectors(a: Candidate, b: Candidate) -> bool:
    if a.vectors is None or b.vectors is None or a.vectors.shape != b.vectors.shape:
        return False
    return bool(torch.allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6))


def default_layers(model: nn.Module, example: Tensor, map_reduction: str = "avg", pool_size: int = 2) -> DefaultLayers:
    """The default layers of ``model`` for inputs like ``example`` (B, ...), and every candidate.

    Example:
        >>> from torchvision.models import resnet18
        >>> list(default_layers(resnet18(), torch.rand(2, 3, 64, 64)).layers)
        ['input', 'layer1', 'layer2', 'layer3', 'avgpool']
    """
    candidates, _ = probe_candidates(model, example, map_reduction, pool_size)
    return DefaultLayers(choose_default_layers(model, candidates), candidates)


def describe_candidates(found: DefaultLayers, map_reduction: str = "avg") -> list[str]:
    """Text lines for ``featviz layers``: every module with its output shape, layout, default reduction and
    vector size; the default layers marked ``*``."""
    width = max([len(c.path) for c in found.candidates] + [10])
    kinds = max([len(c.kind) for c in found.candidates] + [10])
    lines = []
    for c in found.candidates:
        mark = "*" if c.path in found.layers else " "
        shape = "-" if c.shape is None else "x".join(str(side) for side in c.shape)
        if c.layout is not None and c.shape is not None:
            reduction = c.layout.default_reduction(map_reduction)
            what = f"{c.layout.describe(len(c.shape)):<12} {reduction:<8} {c.dims:>7} dims"
        else:
            what = f"?  {c.problem}"
        lines.append(f"{mark} {c.path:<{width}} {c.kind:<{kinds}} {shape:<16} {what}")
    return lines
