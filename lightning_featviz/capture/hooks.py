"""Capture layer activations with forward hooks and reduce them to one vector per sample.

Layers are named by module path (``"layer3"``, ``"layer3.1.conv2"``), as in
``model.named_modules()``. The special name ``"input"`` is the batch itself (pixel space); it
has no hook and is reduced with :func:`lightning_featviz.capture.inputs.reduce_input`.

Over 300 lines because resolving layer names and the hook class that captures them share the errors that
name real layers.
"""

from __future__ import annotations

import difflib
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_featviz.capture.compiled import COMPILED_ATTRIBUTE, without_compiled
from lightning_featviz.capture.host_copy import HostCopies
from lightning_featviz.capture.layouts import Layout, LayoutError, LayoutResolver, UndecidedLayout
from lightning_featviz.capture.pooling import TokenPooling, known_models, pooling_of
from lightning_featviz.capture.reductions import (
    HEAD_ACTIVATIONS,
    MAP_REDUCTIONS,
    SEQUENCE_REDUCTIONS,
    LayerReduction,
    assumed_layout,
    check_reduction,
    layer_reduction,
    reduce_map,
    reduce_output,
    token_layout,
)
from lightning_featviz.capture.trace import ForwardTrace, TraceEntry

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
    modules = dict(model.named_modules())
    known = [name for name in modules if name]
    compiled = {without_compiled(name): name for name in known if COMPILED_ATTRIBUTE in name.split(".")}
    resolved = {}
    for name, display in mapping.items():
        if name == INPUT_LAYER or name in known:
            resolved[name] = display
            continue
        if name in compiled:  # a module inside torch.compile's OptimizedModule: hooked on the original
            resolved[compiled[name]] = display
            continue
        name = without_compiled(name)
        searched = [without_compiled(path) for path in known] if compiled else known
        endings = [path for path in searched if path.endswith("." + name)]
        if len(endings) == 1:
            resolved[compiled.get(endings[0], endings[0])] = display
            continue
        if endings:
            raise ValueError(
                f"Expected every entry of `layers` to name one module, but {name!r} ends several paths: "
                f"{endings[:5]}. Hint: give the full path."
            )
        close = _close_matches(name, searched)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(
            f"Expected every entry of `layers` to be {INPUT_LAYER!r} or a module path of the model, "
            f"but got {name!r}.{hint} Hint: list every path with "
            "`[name for name, _ in model.named_modules()]`, or `featviz layers --arch resnet18`."
        )
    for path in resolved:
        module = modules.get(path)
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            items = [f"{path}.{child}" for child, _ in module.named_children()]
            raise ValueError(
                f"Expected every entry of `layers` to name a module that runs, but {path!r} is a "
                f"{type(module).__name__}, a container that is never called and has no output of its own. "
                f"Hint: name one of its items, e.g. {items[-1:] or items}."
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
    """Reduce a channels-first activation of shape (B, C, *spatial) to vectors of shape (B, D).

    ``"avg"`` averages over every dimension after the channel one (D = C), ``"adaptive"``
    average-pools the spatial dimensions to ``pool_size`` per side (D = C * pool_size**ndim),
    ``"flatten"`` keeps everything (D = C * prod(spatial)). (B, C) inputs are returned as they are.
    Only for conv maps: :class:`ActivationCapture` decides each layer's layout first (see
    :mod:`lightning_featviz.capture.layouts`).
    """
    return reduce_map(activation, reduction, pool_size)


def resolve_reductions(
    model: nn.Module, paths: Mapping[str, str], reduction: str | Mapping[str, LayerReduction]
) -> str | dict[str, LayerReduction]:
    """``reduction`` with its keys (module paths, unique path endings or display names of ``paths``)
    turned into the module paths of ``paths`` (path -> display name); a string is returned as it is.

    Raises:
        ValueError: a key names no captured layer, or a value is neither a known reduction nor callable.
    """
    if isinstance(reduction, str):
        return reduction
    by_display = {display: path for path, display in paths.items()}
    resolved: dict[str, LayerReduction] = {}
    for key, value in reduction.items():
        if not (callable(value) or isinstance(value, TokenPooling) or value in (*MAP_REDUCTIONS, *SEQUENCE_REDUCTIONS)):
            raise ValueError(
                f"Expected `reduction[{key!r}]` to be one of {sorted({*MAP_REDUCTIONS, *SEQUENCE_REDUCTIONS})} "
                f"or a callable (output -> (B, D)), but got {value!r}."
            )
        if key in paths or key in by_display:
            path = key if key in paths else by_display[key]
        else:
            path = next(iter(resolve_layers(model, [key])), key)
            if path not in paths:
                raise ValueError(
                    f"Expected every key of `reduction` to name a captured layer {list(paths.values())}, but got "
                    f"{key!r}. Hint: add it to `layers`, or drop its entry."
                )
        if path == INPUT_LAYER:
            raise ValueError(f"Expected `reduction` to name module layers, but got {key!r} (the input is downsampled).")
        resolved[path] = value
    return resolved


def short_display_names(model: nn.Module, paths: Mapping[str, str]) -> dict[str, str]:
    """Display names without torch.compile's ``_orig_mod`` and the attribute that holds the network (``model.layer1``
    -> ``layer1``) when every module path starts with it and the shortened names stay distinct."""
    paths = {path: without_compiled(display) for path, display in paths.items()}
    modules = [without_compiled(path) for path in paths if path != INPUT_LAYER]
    heads = {path.split(".", 1)[0] for path in modules}
    if len(heads) != 1 or not all("." in path for path in modules):
        return dict(paths)
    short = {path: display.split(".", 1)[1] if path != INPUT_LAYER else path for path, display in paths.items()}
    return short if len(set(short.values())) == len(short) else dict(paths)


def _library_layer(module: nn.Module) -> bool:
    """A layer of timm or HF transformers: a tuple it returns starts with its hidden states (an HF layer's
    ``(hidden_states, attention_weights)``)."""
    return type(module).__module__.startswith(("transformers.models.", "timm."))


class ActivationCapture:
    """Forward hooks that keep, per named layer, the (B, D) vectors of the latest forward.

    Each layer's output layout (conv map, channels-last map, token or time sequence, tuple, vector) is
    decided at its first call from what the module is (see :mod:`lightning_featviz.capture.layouts`), then
    reduced: conv maps as ``reduction`` says, the tokens of a timm or HF transformers model as the model's own head
    pools them (:mod:`lightning_featviz.capture.pooling`), other sequences to their class token (where the model has
    one) or their mean (over the real tokens only, where :attr:`attention_mask` (B, T) is set). ``reduction`` may
    also map layer paths to ``"avg"``, ``"adaptive"``, ``"flatten"``,
    ``"mean"``, ``"cls"``, ``"last"``, or a callable ``output -> (B, D)`` that gets the module's output
    as it is. A layer whose layout cannot be decided without a guess raises :class:`LayoutError` from
    :meth:`pop` (the forward itself is never interrupted), naming the layer, its shape and the entry to add.

    The hook reduces right away and copies to CPU float32, so an in-place operation later in the
    forward (``ReLU(inplace=True)``) cannot change what was taken, and no autograd graph is kept. From a
    CUDA layer the copy goes to pinned host memory without blocking the forward
    (:mod:`~lightning_featviz.capture.host_copy`); :meth:`pop` waits for it.
    A module called several times per forward (ResNet's shared ``relu``) keeps its first call.

    Use :meth:`attach` as a context manager (hooks removed on exit, outputs kept for :meth:`pop`), or
    :meth:`register` / :meth:`remove`. Set :attr:`batch_size` before a forward where it is known: it
    checks the batch axis and settles (B, T, C) vs (T, B, C) for Linear layers outside any RNN or transformer.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        reduction: str | Mapping[str, LayerReduction] = "avg",
        pool_size: int = 2,
        batch_size: int | None = None,
    ):
        self.model = model
        self.layers = [name for name in layers if name != INPUT_LAYER]
        self.reduction = reduction if isinstance(reduction, str) else "avg"
        self.reductions: dict[str, LayerReduction] = {} if isinstance(reduction, str) else dict(reduction)
        self.pool_size = pool_size
        self.batch_size = batch_size
        self.attention_mask: Tensor | None = None  # (B, T) of the batch being run, nonzero at real tokens
        self.known = known_models(model)
        #: {path: name in HEAD_ACTIVATIONS}: applied to that vector layer's vectors (what a head reads of it)
        self.activations: dict[str, str] = {}
        self.outputs: dict[str, Tensor] = {}
        self.layouts: dict[str, Layout] = {}
        self._ranks: dict[str, int] = {}
        self.failures: dict[str, LayoutError] = {}
        self._trace = ForwardTrace(model)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._warned_reuse: set[str] = set()
        self._host = HostCopies()
        self.seconds = 0.0  # the hooks' own time since the last take_seconds(): the time budget counts it

    def _hook(self, name: str):  # noqa: ANN202 - returns a hook closure
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in self.outputs or name in self.failures:
                if name not in self._warned_reuse:
                    self._warned_reuse.add(name)
                    warnings.warn(
                        f"Layer {name!r} runs more than once per forward; its first call is captured. "
                        "Hint: name a module that runs once (e.g. 'layer1.0.relu' is shared too in "
                        "torchvision's ResNet; 'layer1.0.bn2' is not).",
                        stacklevel=2,
                    )
                return
            started = time.perf_counter()
            try:
                with torch.no_grad():
                    self.outputs[name] = self._vectors(name, module, args, output)
            except LayoutError as error:
                self.failures[name] = error
            finally:
                self.seconds += time.perf_counter() - started

        return hook

    def _vectors(self, name: str, module: nn.Module, args: Any, output: Any) -> Tensor:
        given = self.reductions.get(name)
        if callable(given) and not isinstance(given, TokenPooling):
            vectors = given(output)
            if not isinstance(vectors, Tensor) or vectors.ndim != 2:
                shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
                raise LayoutError(
                    f"Expected the reduction callable of layer {name!r} to return (B, D), but got {shape}."
                )
            if self.batch_size is not None and vectors.shape[0] != self.batch_size:
                raise LayoutError(
                    f"Expected the reduction callable of layer {name!r} to return one row per sample "
                    f"({self.batch_size}), but got shape {tuple(vectors.shape)}."
                )
            return self._stored(vectors.detach(), vectors)
        tensor = self._output_tensor(name, module, output)
        layout = self.layouts.get(name)
        reduction = given if isinstance(given, (str, TokenPooling)) else None
        if layout is None:
            entry = TraceEntry.of(name, module, args, tensor)
            try:
                layout = LayoutResolver(self.model, self.batch_size).resolve(name, entry, self._trace.entries)
            except UndecidedLayout:
                assumed = assumed_layout(tensor.ndim, reduction) if isinstance(reduction, str) else None
                if assumed is None:
                    raise
                layout = assumed
            layout = token_layout(layout, pooling_of(self.known, name), tensor.ndim)
            check_reduction(name, layout, layer_reduction(layout, reduction, None, self.reduction))
            self.layouts[name], self._ranks[name] = layout, tensor.ndim
        elif tensor.ndim != self._ranks[name]:
            raise LayoutError(
                f"Expected layer {name!r} to keep the rank of its first output ({self._ranks[name]} dimensions), "
                f"but got shape {tuple(tensor.shape)}."
            )
        chosen = layer_reduction(layout, reduction, pooling_of(self.known, name), self.reduction)
        vectors = reduce_output(tensor.detach(), layout, chosen, self.pool_size, self.attention_mask)
        activation = self.activations.get(name)
        if activation is not None and layout.kind == "vector":
            vectors = HEAD_ACTIVATIONS[activation](vectors)
        return self._stored(vectors, tensor)

    def _stored(self, vectors: Tensor, source: Tensor) -> Tensor:
        # A view of the output would change under a later in-place op: copy it. A pooled result is
        # fresh memory already, and copying it again costs a kernel per layer.
        aliased = vectors.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
        return self._host.to_host(vectors, copy=aliased)

    @staticmethod
    def _output_tensor(name: str, module: nn.Module, output: Any) -> Tensor:
        """The tensor of ``output``: itself, the first element of an RNN's or attention's tuple, a 1-tuple's element."""
        if isinstance(output, Tensor):
            return output
        known_tuple = isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) or _library_layer(module)
        if isinstance(output, (tuple, list)) and output and (known_tuple or len(output) == 1):
            if isinstance(output[0], Tensor):
                return output[0]
        if isinstance(output, (tuple, list)) and output and type(output[0]).__name__ == "PackedSequence":
            raise LayoutError(
                f"Expected layer {name!r} ({type(module).__name__}) to output a tensor, but it returns a "
                f"PackedSequence. Hint: pass reduction={{{name!r}: lambda out: out[1][0][-1]}} (an LSTM's last-layer "
                "final hidden state; `out[1][-1]` for an RNN or GRU; inside `capture=CaptureOptions(...)`), or name a "
                "module that runs after unpacking."
            )
        what = f"a {type(output).__name__}" + (f" of {len(output)} items" if isinstance(output, (tuple, list)) else "")
        raise LayoutError(
            f"Expected layer {name!r} ({type(module).__name__}) to output one tensor, but it returns {what}. "
            f"Hint: name the submodule that produces the tensor you want, or pass "
            f"reduction={{{name!r}: lambda out: ...}} mapping its output to (B, D) "
            "(inside `capture=CaptureOptions(...)`)."
        )

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def register(self) -> None:
        """Register one forward hook per layer (idempotent); until every layer's layout is known, also a
        :class:`ForwardTrace` of the whole model (the layouts of containers follow from their submodules)."""
        if self._handles:
            return
        modules = dict(self.model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]
        if any(name not in self.layouts and not callable(self.reductions.get(name)) for name in self.layers):
            self._trace.register()  # after the layer hooks: a layer's own call is not yet in the trace

    def _unhook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._trace.remove()

    def remove(self) -> None:
        """Remove every hook this object registered and forget captured outputs."""
        self._unhook()
        self._host.wait()
        self.outputs = {}
        self.failures = {}

    def take_seconds(self) -> float:
        """Seconds the hooks took (reducing, copying) since the last call, and start counting anew."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def clear(self) -> None:
        """Forget what was captured since the last :meth:`pop` (no error raised)."""
        self._host.wait()
        self.outputs, self.failures = {}, {}
        self._trace.entries = []

    def pop(self) -> dict[str, Tensor]:
        """Return the outputs captured since the last call, ``{layer: (B, D)}``, and clear them.

        Raises:
            LayoutError: a layer's output layout could not be decided (the message says what to pass).
        """
        self._host.wait()  # copies from a CUDA layer have landed
        outputs, failures = self.outputs, self.failures
        self.clear()
        if all(name in self.layouts or callable(self.reductions.get(name)) for name in self.layers):
            self._trace.remove()  # every layout is known: the trace has done its job
        if failures:
            raise next(iter(failures.values()))
        return outputs

    @contextmanager
    def attach(self) -> Iterator[ActivationCapture]:
        """Hooks registered inside the block and removed when it ends; what they captured stays for :meth:`pop`."""
        self.register()
        try:
            yield self
        finally:
            self._unhook()
