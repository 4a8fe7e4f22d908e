"""Which axis of a layer's output is the batch and which the features: its layout (how a layout becomes
(B, D) vectors is :mod:`lightning_featviz.capture.reductions`').

A layer's output layout is decided from *what the module is*, never from its shape alone:

- ``"map"``: convolution, batch/instance/group norm, pooling, ... give channels at axis 1,
  (B, C, *spatial); a Linear/LayerNorm applied to a 4-D tensor gives channels last, (B, H, W, C)
  (Swin stages, ConvNeXt block internals). Reduced like conv maps: ``"avg"`` | ``"adaptive"`` | ``"flatten"``.
- ``"sequence"``: RNN/LSTM/GRU, ``nn.MultiheadAttention`` and ``nn.Transformer*`` outputs, (B, T, C) with
  ``batch_first`` or (T, B, C) without; and (B, N, C) token sequences from Linear/LayerNorm layers (a
  ViT's encoder). Reduced to the class token (``"cls"``, the default where an ancestor module has a
  ``class_token`` / ``cls_token``), the mean over tokens or time (``"mean"``, the default otherwise),
  the last step (``"last"``) or everything (``"flatten"``).
- ``"vector"``: (B, F), kept as it is.

A container (a ResNet stage, a ViT encoder block) or a shape-preserving module (ReLU, GELU, Dropout)
has the layout of the module that produced its output, found on a :class:`ForwardTrace` of the
first forward: the descendant whose output *is* the container's output (the same tensor, alive),
else the last descendant with the same shape, else the producer of its input when the shape did not
change, else a descendant whose output differs only along its feature axis (a concatenation, as in
DenseNet's blocks). Where none of this decides, :class:`LayoutError` names the layer, its shape and
the ``reduction`` entry that settles it.

Over 300 lines (one module, one job): the layout rules of every module family (convolutions, ViT/DeiT tokens,
Swin and ConvNeXt channels-last, RNNs, attention) are one decision table, read top to bottom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from lightning_featviz.capture.trace import TraceEntry, same_tensor

_CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,  # batch and instance norm
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
_FEATURES_LAST: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.RMSNorm)
_SEQUENCE_MODULES: tuple[type[nn.Module], ...] = (
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)
POOLING: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._MaxPoolNd,
)


def _trusted(module: nn.Module, classes: tuple[type[nn.Module], ...]) -> bool:
    """``module`` is one of ``classes`` and runs PyTorch's own ``forward`` (torchvision's ``LayerNorm2d``
    subclasses ``nn.LayerNorm`` but normalises channels-first maps: its type says nothing)."""
    return isinstance(module, classes) and type(module).forward.__module__.startswith("torch.nn.")


class LayoutError(ValueError):
    """A layer's output cannot be turned into (B, D) vectors without a guess; the message says what to pass."""


class UndecidedLayout(LayoutError):
    """Neither the module's type nor the module that produced its output tells the layout."""


@dataclass(frozen=True)
class Layout:
    """Where the batch and feature axes of an output are.

    Attributes:
        kind: ``"map"`` (B, C, *spatial) or channels-last, ``"sequence"`` (tokens or time steps) or ``"vector"``.
        batch_axis: the batch axis (1 for sequence-first (T, B, C) outputs, else 0).
        feature_axis: the channel/feature axis (1 for channels-first maps, else the last).
        class_token: a sequence whose first token is a class token (ViT/DeiT): reduced to it by default.
        why: what decided it, for messages and ``featviz layers``.
    """

    kind: Literal["map", "sequence", "vector"]
    batch_axis: int
    feature_axis: int
    class_token: bool = False
    why: str = ""

    def describe(self, rank: int) -> str:
        """The axes as letters, e.g. ``(B, C, H, W)``, ``(B, H, W, C)``, ``(T, B, C)``, ``(B, N, C)``."""
        if self.kind == "vector":
            return "(B, F)"
        if self.kind == "sequence":
            return "(T, B, C)" if self.batch_axis == 1 else ("(B, N, C)" if self.class_token else "(B, T, C)")
        spatial = ["L"] if rank == 3 else (["H", "W"] if rank == 4 else [f"S{i}" for i in range(rank - 2)])
        axes = ["C", *spatial] if self.feature_axis == 1 else [*spatial, "C"]
        return "(" + ", ".join(["B", *axes]) + ")"

    def default_reduction(self, map_reduction: str) -> str:
        if self.kind == "sequence":
            return "cls" if self.class_token else "mean"
        return map_reduction if self.kind == "map" else "flatten"


def batch_first_of(module: nn.Module) -> bool | None:
    """``batch_first`` of an RNN, attention or transformer module (or of the layers inside one), else None."""
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return bool(module.self_attn.batch_first)
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)):
        return batch_first_of(module.layers[0]) if len(module.layers) else None
    if isinstance(module, _SEQUENCE_MODULES):
        return bool(getattr(module, "batch_first", False))
    return None


def has_class_token(modules: Sequence[nn.Module]) -> bool:
    """Whether one of ``modules`` (a layer's ancestors) holds a class token: torchvision's ViT
    ``class_token`` or timm's ``cls_token``, a (1, 1, C) tensor prepended to the patch tokens."""
    return any(isinstance(getattr(m, name, None), Tensor) for m in modules for name in ("class_token", "cls_token"))


def _ancestors(root: nn.Module, path: str) -> list[nn.Module]:
    """``root`` and every module on the way down to ``path``, the module itself last."""
    chain, module = [root], root
    for part in path.split(".") if path else []:
        module = getattr(module, part)
        chain.append(module)
    return chain


def _hint(name: str, shape: tuple[int, ...]) -> str:
    rank = len(shape)
    if rank == 3:
        options = (
            f"reduction={{{name!r}: 'mean'}} (or 'cls', 'last') if it is (B, T, C), or a callable such as "
            f"reduction={{{name!r}: lambda out: out.mean(dim=0)}} if it is (T, B, C)"
        )
    elif rank == 4:
        options = (
            f"reduction={{{name!r}: 'avg'}} if it is (B, C, H, W), or a callable such as "
            f"reduction={{{name!r}: lambda out: out.mean(dim=(1, 2))}} if it is channels-last (B, H, W, C)"
        )
    else:
        options = f"a callable reduction={{{name!r}: lambda out: ...}} returning (B, D)"
    return (
        f"Hint: pass {options} (to FeatureVisualizer inside `capture=CaptureOptions(...)`), or name a submodule "
        "of known type."
    )


class LayoutResolver:
    """Decide the :class:`Layout` of module calls of ``root``'s forward, given the :class:`ForwardTrace` so far.

    Args:
        root: the model whose module paths the entries name.
        batch_size: the batch's size, to check the batch axis; None when unknown.
    """

    def __init__(self, root: nn.Module, batch_size: int | None = None):
        self.root = root
        self.batch_size = batch_size
        # by the TraceEntry itself (compared by identity), which the dict keeps alive: keyed by id(), an entry freed
        # after its call (the probe's describing hook makes one per call) left its id to a later entry, which then
        # read the freed one's layout (HF Swin's second stage: undecided, about one probe in 60)
        self._decided: dict[TraceEntry, Layout | None] = {}

    def resolve(self, name: str, entry: TraceEntry, earlier: Sequence[TraceEntry]) -> Layout:
        """The layout of ``entry``'s output; ``earlier`` are the calls completed before it (oldest first).

        Raises:
            LayoutError: rank 5 or more, no tensor output, or nothing decides the layout without a guess.
        """
        if entry.shape is None:
            raise LayoutError(
                f"Expected layer {name!r} to return a tensor (or a tuple starting with one), but "
                f"{type(entry.module).__name__} returned something else. Hint: name the submodule that "
                f"produces the tensor you want, or pass reduction={{{name!r}: callable}} mapping its output to (B, D) "
                "(inside `capture=CaptureOptions(...)`)."
            )
        shape = entry.shape
        if len(shape) >= 5:
            raise LayoutError(
                f"Expected layer {name!r} to output at most 4 dimensions, but got shape {shape}. "
                f"Hint: pass a callable reduction={{{name!r}: lambda out: ...}} returning (B, D), e.g. "
                "`lambda out: out.mean(dim=(2, 3, 4))` for a (B, C, D, H, W) map."
            )
        earlier = list(earlier)
        for position, call in enumerate(earlier):  # oldest first: every lookup below finds its answer cached
            if call not in self._decided and call.shape is not None:
                self._decide(call.path, call, earlier[:position], depth=0)
        layout = self._decide(name, entry, earlier, depth=0)
        if layout is None:
            raise UndecidedLayout(
                f"Expected the output layout of layer {name!r} ({type(entry.module).__name__}, shape {shape}) to "
                "follow from its module type or from the module that produced it, but neither decides which axis "
                f"is the batch and which the features. {_hint(name, shape)}"
            )
        self._check_batch(name, shape, layout)
        return layout

    def _check_batch(self, name: str, shape: tuple[int, ...], layout: Layout) -> None:
        batch = self.batch_size
        if batch is None or shape[layout.batch_axis] == batch:
            return
        raise LayoutError(
            f"Expected the batch axis {layout.batch_axis} of layer {name!r}'s {layout.describe(len(shape))} output "
            f"({layout.why}) to hold the batch of {batch}, but its shape is {shape}. {_hint(name, shape)}"
        )

    def _decide(self, name: str, entry: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        if entry in self._decided:
            return self._decided[entry]
        if depth > 100:
            return None  # not cached: a shallower call may still decide it
        self._decided[entry] = self._decide_once(name, entry, earlier, depth)
        return self._decided[entry]

    def _before(self, name: str, pick: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        position = next(i for i in range(len(earlier) - 1, -1, -1) if earlier[i] is pick)
        return self._decide(name, pick, earlier[:position], depth + 1)

    def _decide_once(self, name: str, entry: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        assert entry.shape is not None
        module, rank = entry.module, len(entry.shape)
        kind = type(module).__name__
        if _trusted(module, _SEQUENCE_MODULES):
            first = batch_first_of(module)
            if rank == 2:
                return Layout("vector", 0, 1, why=f"{kind} output")
            token = has_class_token(_ancestors(self.root, entry.path))
            return Layout("sequence", 0 if first else 1, 2, token, why=f"{kind} with batch_first={bool(first)}")
        if rank == 2 and _trusted(module, (*_CHANNELS_FIRST, *_FEATURES_LAST, nn.Flatten)):
            return Layout("vector", 0, 1, why=f"{kind} output")
        if _trusted(module, _CHANNELS_FIRST):
            return Layout("map", 0, 1, why=f"{kind}: channels at axis 1")
        if _trusted(module, _FEATURES_LAST):
            return self._features_last(name, entry, earlier, depth)
        if kind == "Permute" and isinstance(getattr(module, "dims", None), (list, tuple)):
            return self._permuted(name, entry, earlier, depth)
        produced = self._producer(name, entry, earlier, depth)
        if produced is not None:
            return produced
        if rank == 2:
            return Layout("vector", 0, 1, why="a 2-D output")
        if rank == 3 and has_class_token(_ancestors(self.root, entry.path)):
            return Layout("sequence", 0, 2, class_token=True, why="tokens of a model with a class token")
        return None

    def _features_last(self, name: str, entry: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        assert entry.shape is not None
        shape, kind, rank = entry.shape, type(entry.module).__name__, len(entry.shape)
        if rank >= 4:
            return Layout("map", 0, -1, why=f"{kind}: channels last")
        chain = _ancestors(self.root, entry.path)
        for ancestor in reversed(chain[:-1]):
            first = batch_first_of(ancestor)
            if first is not None:
                owner = type(ancestor).__name__
                return Layout("sequence", 0 if first else 1, 2, why=f"{kind} inside {owner} with batch_first={first}")
        source = self._input_producer(entry, earlier, same_shape=False)
        if source is not None and source.shape is not None and len(source.shape) == 3:
            before = self._before(name, source, earlier, depth)  # a Linear or LayerNorm keeps the leading axes
            if before is not None and before.kind == "sequence":
                return Layout("sequence", before.batch_axis, 2, before.class_token, why=f"{kind} of {before.why}")
        if has_class_token(chain):
            return Layout("sequence", 0, 2, class_token=True, why=f"{kind} on the tokens of a model with a class token")
        batch = self.batch_size
        if batch is not None and shape[0] == batch and shape[1] != batch:
            return Layout("sequence", 0, 2, why=f"{kind}: features last, batch at axis 0")
        return None

    def _permuted(self, name: str, entry: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        dims = [int(d) for d in entry.module.dims]  # type: ignore[union-attr]
        source = self._input_producer(entry, earlier, same_shape=False)
        if source is None or source.shape is None:
            return None
        before = self._before(name, source, earlier, depth)
        if before is None or before.kind == "vector":
            return before
        rank = len(source.shape)
        if sorted(dims) != list(range(rank)):
            return None
        feature = dims.index(before.feature_axis % rank)
        batch = dims.index(before.batch_axis % rank)
        return Layout(before.kind, batch, feature, before.class_token, why=f"Permute{tuple(dims)} of {before.why}")

    @staticmethod
    def _input_producer(entry: TraceEntry, earlier: list[TraceEntry], same_shape: bool = True) -> TraceEntry | None:
        for candidate in reversed(earlier):
            if same_tensor(candidate.output, entry.input):
                if not same_shape or candidate.shape == entry.shape:
                    return candidate
        return None

    def _producer(self, name: str, entry: TraceEntry, earlier: list[TraceEntry], depth: int) -> Layout | None:
        """The layout of the module call that produced ``entry``'s output (or its input, shape unchanged)."""
        prefix = entry.path + "." if entry.path else ""
        inside = [e for e in earlier if e.path.startswith(prefix) and e.shape is not None]
        outside_same = [e for e in earlier if same_tensor(e.output, entry.output)]
        same = [e for e in reversed(inside) if e.shape == entry.shape]
        picks: list[TraceEntry | None] = [
            *(e for e in same if same_tensor(e.output, entry.output)),
            *same,
            outside_same[-1] if outside_same else None,
        ]
        if entry.shape == entry.input_shape:
            picks.append(self._input_producer(entry, earlier))
        for pick in picks:
            if pick is not None:
                layout = self._before(name, pick, earlier, depth)
                if layout is not None:
                    return layout
        traced_input = any(same_tensor(e.output, entry.input) for e in earlier)
        elementwise = not inside and not any(True for _ in entry.module.parameters(recurse=False))
        if elementwise and entry.shape == entry.input_shape and not traced_input:
            # An activation of a functional result (RegNet's `activation(proj(x) + f(x))`): the last module
            # output of the same shape before it is what the functional op combined.
            for candidate in reversed(earlier):
                if candidate.shape == entry.shape:
                    layout = self._before(name, candidate, earlier, depth)
                    if layout is not None:
                        return layout
        # A concatenation along the feature axis (DenseNet's blocks): a descendant equal on every other axis.
        assert entry.shape is not None
        for candidate in reversed(inside):
            assert candidate.shape is not None
            if len(candidate.shape) != len(entry.shape) or len(entry.shape) < 3:
                continue
            differing = [i for i, (a, b) in enumerate(zip(candidate.shape, entry.shape, strict=True)) if a != b]
            if len(differing) != 1:
                continue
            layout = self._before(name, candidate, earlier, depth)
            if layout is not None and layout.kind == "map" and layout.feature_axis % len(entry.shape) == differing[0]:
                return Layout("map", layout.batch_axis, layout.feature_axis, why=f"concatenated {layout.why}")
        return None
