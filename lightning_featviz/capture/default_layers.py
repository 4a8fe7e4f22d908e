"""Default layers for any model: the input, the outputs of its main stages, and the last pooled feature
before the classifier head, found on the module tree during one forward (not from names like ``avgpool``).

- **Head**: a timm / HF model's classifier, else the last module with weights that runs (the classifier's Linear,
  SqueezeNet's final conv).
- **Pooled feature**: the model's pre-logits feature (:mod:`lightning_featviz.capture.pre_logits`): the last module
  before the head whose vectors (a token layer pooled as the model pools it) equal what the head reads — after a
  head norm (timm ConvNeXt's ``head.norm``), never a head's logits; else the last module whose (B, F) vectors
  through an activation function (:data:`HEAD_ACTIVATIONS`) are it: RoBERTa's head reads ``tanh`` of
  ``classifier.dense``, a plain MLP ``F.relu`` of its hidden Linear. Where nothing reproduces it, the last global
  pooling module (output spatially 1 × 1) before the head, else the last module before it that outputs (B, F)
  vectors (an MLP's last hidden layer); for a timm / HF model that is a warning.
- **Token models** (timm, HF transformers): the stages are the encoder's blocks (``blocks.N``, ``encoder.layer.N``)
  and every token layer is reduced as the model's head pools tokens (:mod:`lightning_featviz.capture.pooling`); an
  unknown token model's pooling is identified on the probe: the pooling of its last token layer that reproduces the
  head's input.
- **Stages**: the model's children, where a container whose children run through several resolutions
  one after another (the spatial size of a map, the length of a sequence; branches that interleave
  resolutions, as in an Inception block, do not count) is replaced by its children, recursively
  (EfficientNet's ``features`` by ``features.0`` ... ``features.8``; ResNet's ``layer2`` stays whole).
  These are grouped by resolution, and each group's last container (a module with submodules) is a
  stage. A model without containers uses its plain modules instead.
- A stage whose vectors equal a later default's on the probe batch (ResNet's ``layer4`` averaged is
  ``avgpool``) is left out.

Over 300 lines: the probe forward, the stages, the pre-logits feature and an unknown token model's pooling are
all decided on one list of :class:`Candidate` records, read top to bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_featviz.capture.compiled import COMPILED_ATTRIBUTE
from lightning_featviz.capture.layouts import POOLING, Layout, LayoutError, LayoutResolver
from lightning_featviz.capture.pooling import KnownModel, TokenPooling, known_models, pooling_of, same_vectors
from lightning_featviz.capture.pre_logits import PreLogits, alternatives, identify, warn_unmatched
from lightning_featviz.capture.reductions import (
    HEAD_ACTIVATIONS,
    layer_reduction,
    reduce_output,
    reduction_name,
    to_standard,
    token_layout,
)
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
        reduction: how its output became ``vectors`` (for ``featviz layers``).
        options: a token layer of a model of unknown pooling: its vectors under each candidate pooling.
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
    reduction: str = ""
    options: dict[TokenPooling, Tensor] | None = None


@dataclass
class Probe:
    """One probe forward: every module's first call, the model's pre-logits feature (B, F) (None when unknown)
    and the timm / HF models found."""

    candidates: list[Candidate]
    reference: Tensor | None
    known: list[KnownModel] = field(default_factory=list)


@dataclass
class DefaultLayers:
    """The chosen layers (``{path: display name}``, ``"input"`` first), every candidate of the probe, the models
    whose token pooling was identified on it, and the pooled layer's activation when the head reads one
    (``{path: name in HEAD_ACTIVATIONS}``; pass both on to the capture)."""

    layers: dict[str, str]
    candidates: list[Candidate]
    identified: list[KnownModel] = field(default_factory=list)
    activations: dict[str, str] = field(default_factory=dict)


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
    model: nn.Module,
    example: Tensor | Mapping[str, Any],
    map_reduction: str = "avg",
    pool_size: int = 2,
    batch_size: int | None = None,
    mask: Tensor | None = None,
) -> Probe:
    """Run ``model(example)`` once (eval mode, no grad; every module's training flag is restored) and describe each
    module's first call. ``example`` is a (B, ...) input batch, or a dict batch for a module whose ``forward`` takes
    the batch (then give ``batch_size``); ``mask``: its (B, T) attention mask, or None. Each output is reduced as it
    is made, so the probe holds (B, D) vectors, never a forward's worth of activations."""
    trace = ForwardTrace(model)
    size = batch_size if batch_size is not None else int(example.shape[0])  # type: ignore[union-attr]
    resolver = LayoutResolver(model, size)
    known = known_models(model)
    candidates: dict[str, Candidate] = {}
    latest: list[Candidate] = []  # the token layer whose candidate poolings are kept

    def describe(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not path or path in candidates:
                return
            tensor = first_tensor(output)
            entry = TraceEntry.of(path, module, args, output)
            layout, vectors, problem, name, options = None, None, "", "", None
            try:  # the trace holds every call completed before this one: this call's entry comes after
                layout = resolver.resolve(path, entry, trace.entries)
                assert tensor is not None
                pooling = pooling_of(known, path)
                layout = token_layout(layout, pooling, tensor.ndim)
                reduction = layer_reduction(layout, None, pooling, map_reduction)
                vectors = reduce_output(tensor.detach(), layout, reduction, pool_size, mask).float().cpu()
                name = reduction_name(reduction, tensor.shape[1 - layout.batch_axis] if tensor.ndim == 3 else None)
                if layout.kind == "sequence" and pooling is None and tensor.ndim == 3:
                    options = alternatives(to_standard(tensor.detach(), layout), mask)
            except LayoutError as error:
                problem = str(error).split(". Hint")[0]
            container = any(True for _ in module.children())
            dims = int(vectors.shape[1]) if vectors is not None and vectors.ndim == 2 else 0
            order = len(trace.entries)
            kind = type(module).__name__
            candidates[path] = Candidate(
                path, kind, entry.shape, layout, dims, vectors, order, container, problem, name, options
            )
            if options is not None:  # only the latest token layer's options are kept (memory)
                for earlier in latest:
                    earlier.options = None
                latest[:] = [candidates[path]]

        return hook

    modes = [(module, module.training) for module in model.modules()]  # each restored: a wrapper may differ
    handles = [module.register_forward_hook(describe(path)) for path, module in model.named_modules()]
    head = PreLogits(model, known, mask)
    try:
        model.eval()
        trace.register()  # after the describing hooks: a call is described before it joins the trace
        head.register()
        with torch.no_grad():
            model(example)
        reference = head.reference()
    finally:
        trace.remove()
        head.remove()
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return Probe(sorted(candidates.values(), key=lambda c: c.order), reference, known)


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
        if child.kind == "OptimizedModule" or child.path.rsplit(".", 1)[-1] == COMPILED_ATTRIBUTE:
            items.extend(_trunk(model, child.path, by_path))  # torch.compile's wrapper: the model inside
            continue
        inner = _children(model, child.path, by_path) if child.container else []
        if _is_trunk([_resolution(c) for c in inner]):
            items.extend(_trunk(model, child.path, by_path))
        else:
            items.append(child)
    return items


def choose_default_layers(model: nn.Module, probe: Probe) -> tuple[dict[str, str], list[KnownModel], dict[str, str]]:
    """Pick ``"input"``, the main stages and the pooled feature out of the probe's candidates (see the module doc);
    also the models whose token pooling was identified on the probe, and the pooled layer's activation
    (``{path: name}``, empty when the head reads a module's output as it is).

    Raises:
        LayoutError: a token model of unknown pooling whose head reads no pooling of its last token layer.
    """
    candidates = probe.candidates
    weighted = [c for c in candidates if not c.container and c.layout is not None and _has_weights(c)]
    classifiers = [c for c in candidates if any(c.path == known.classifier for known in probe.known)]
    heads = classifiers or weighted  # a library's classifier, even an Identity (num_classes=0)
    head = heads[-1] if heads else None
    before = [c for c in candidates if head is None or c.order < head.order]
    if head is not None:
        before = [c for c in before if not head.path.startswith(c.path + ".")]  # not the head's ancestors
    found = _identified(probe, before)
    pooled = _pre_logits(before, probe.reference)
    activations: dict[str, str] = {}
    if pooled is None:
        pooled, activation = _activated(before, probe.reference)
        if pooled is not None:
            activations[pooled.path] = activation
            assert pooled.vectors is not None
            pooled.vectors, pooled.reduction = HEAD_ACTIVATIONS[activation](pooled.vectors), activation
    unmatched = pooled is None and probe.reference is not None and bool(probe.known)  # warned below
    if pooled is None:
        pooled = next(
            (c for c in reversed(before) if c.kind.startswith("Adaptive") and c.kind in _POOL_NAMES and _global(c)),
            None,
        ) or next((c for c in reversed(before) if c.layout is not None and c.layout.kind == "vector" and c.dims), None)
    by_path = {c.path: c for c in candidates}
    allowed = {c.path for c in before}
    stages = [path for known in probe.known for path in known.stages]
    if stages:
        trunk = [by_path[path] for path in stages if path in by_path and path in allowed and by_path[path].dims]
    else:
        trunk = [c for c in _trunk(model, "", by_path) if c.path in allowed and _resolution(c) is not None and c.dims]
    for known in probe.known:  # a library's head block (timm's `head`: pool, norm, fc) holds no stage
        block = (known.classifier or "").rpartition(".")[0]
        if block and block != known.path:
            trunk = [c for c in trunk if not c.path.startswith(block + ".")]
    groups: dict[Any, list[Candidate]] = {}
    for candidate in trunk:
        key = candidate.path if stages else (_resolution(candidate) or ())  # a transformer: every block
        groups.setdefault(key, []).append(candidate)
    use_containers = any(c.container for c in trunk)
    chosen: list[Candidate] = []
    for members in sorted(groups.values(), key=lambda members: members[-1].order):
        eligible = [c for c in members if c.container == use_containers]
        if eligible:
            chosen.append(eligible[-1])
    if unmatched and head is not None and probe.reference is not None:  # a library model: its head reads no module
        owner = next((known for known in probe.known if known.classifier == head.path), None)
        warn_unmatched(head.path, pooled.path if pooled else None, probe.reference, owner.pooling if owner else None)
    if pooled is not None and pooled not in chosen:
        chosen.append(pooled)
    chosen.sort(key=lambda c: c.order)
    kept = [c for i, c in enumerate(chosen) if not any(_same_vectors(c, later) for later in chosen[i + 1 :])]
    return {INPUT_LAYER: INPUT_LAYER, **{c.path: c.path for c in kept}}, found, activations


_PASS_THROUGH = ("Dropout", "Identity", "Flatten")
_RECURRENT = ("RNN", "LSTM", "GRU")


def _pre_logits(before: list[Candidate], reference: Tensor | None) -> Candidate | None:
    """The last module before the head whose vectors are the pre-logits ``reference`` (B, F), preferring one that
    computes something over a dropout, identity or flatten that passes it on; None when none is."""
    if reference is None:
        return None
    matches = [c for c in before if c.vectors is not None and same_vectors(c.vectors, reference)]
    working = [c for c in matches if not c.kind.startswith(_PASS_THROUGH)]
    found = working or matches
    return found[-1] if found else None


def _activated(before: list[Candidate], reference: Tensor | None) -> tuple[Candidate | None, str]:
    """The last module before the head whose (B, F) vectors through one of :data:`HEAD_ACTIVATIONS` are the
    pre-logits ``reference``, and that function's name; (None, "") when none is."""
    if reference is None:
        return None, ""
    for candidate in reversed(before):
        vectors, layout = candidate.vectors, candidate.layout
        if vectors is None or layout is None or layout.kind != "vector" or vectors.shape != reference.shape:
            continue
        for name, function in HEAD_ACTIVATIONS.items():
            if same_vectors(function(vectors), reference):
                return candidate, name
    return None, ""


def _identified(probe: Probe, before: list[Candidate]) -> list[KnownModel]:
    """A token model no library tells about: the pooling of its last token layer that reproduces the pre-logits
    feature, applied to every token layer of that length (the candidates' vectors are updated)."""
    if probe.reference is None or any(known.pooling is not None for known in probe.known):
        return []
    last = next((c for c in reversed(before) if c.options), None)
    if last is None or _pre_logits(before, probe.reference) is not None:
        return []
    if _activated(before, probe.reference)[0] is not None:
        return []  # the head reads a function of a vector layer after the tokens: its pooling is not the question
    assert last.options is not None and last.shape is not None
    pooling = identify(last.options, probe.reference)
    if pooling is None and last.kind in _RECURRENT:
        return []  # an RNN's head may read its state (h_n of a bidirectional LSTM): the old default stands
    if pooling is None:
        raise LayoutError(
            f"Expected one pooling of the last token layer {last.path!r} (shape {last.shape}) to reproduce what the "
            f"classifier head reads (shape {tuple(probe.reference.shape)}), but none does (tried the class token, "
            "class and distillation tokens, the mean after 1-4 prefix tokens, the mean, the last token). Hint: pass "
            f"reduction={{{last.path!r}: lambda out: ...}} returning (B, D) as the head pools, or name the module "
            "whose output the head reads (inside `capture=CaptureOptions(...)`)."
        )
    for candidate in probe.candidates:
        if candidate.options and pooling in candidate.options:
            candidate.vectors, candidate.reduction = candidate.options[pooling], pooling.name
    return [KnownModel("", "identified", pooling, (), None)]


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


def default_layers(
    model: nn.Module,
    example: Tensor | Mapping[str, Any],
    map_reduction: str = "avg",
    pool_size: int = 2,
    batch_size: int | None = None,
    mask: Tensor | None = None,
) -> DefaultLayers:
    """The default layers of ``model`` for inputs like ``example`` (B, ...) (or a dict batch, see
    :func:`probe_candidates`), and every candidate.

    Example:
        >>> from torchvision.models import resnet18
        >>> list(default_layers(resnet18(), torch.rand(2, 3, 64, 64)).layers)
        ['input', 'layer1', 'layer2', 'layer3', 'avgpool']
    """
    probe = probe_candidates(model, example, map_reduction, pool_size, batch_size, mask)
    layers, identified, activations = choose_default_layers(model, probe)
    return DefaultLayers(layers, probe.candidates, identified, activations)


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
            what = f"{c.layout.describe(len(c.shape)):<12} {c.reduction:<12} {c.dims:>7} dims"
        else:
            what = f"?  {c.problem}"
        lines.append(f"{mark} {c.path:<{width}} {c.kind:<{kinds}} {shape:<16} {what}")
    return lines
