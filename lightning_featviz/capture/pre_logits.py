"""The model's pre-logits feature on a probe forward — the reference the default pooled layer must reproduce — and,
for a token model no library tells about, the pooling that reproduces it.

- A timm model: ``forward_head(forward_features(x), pre_logits=True)`` on the input it received.
- An HF transformers ``*For...Classification``: what its ``classifier`` receives (a forward pre-hook); a decoder's
  ``score``, which reads every token, at the token HF picks: the rightmost one that is not ``pad_token_id`` in the
  ``input_ids`` the model received (the layers read the last token the attention mask keeps: where the two differ,
  nothing matches and the probe warns).
- Any other model: what the last Linear that runs receives, when that is (B, F) vectors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_featviz.capture.pooling import (
    KnownModel,
    TokenPooling,
    candidate_poolings,
    identified,
    last_real,
    same_vectors,
)
from lightning_featviz.capture.trace import first_tensor


class PreLogits:
    """Forward pre-hooks that record what a model's classifier reads during one forward.

    Args:
        model: the probed module.
        known: the timm / HF models inside it (:func:`~lightning_featviz.capture.pooling.known_models`).
        mask: the probe batch's (B, T) attention mask, or None.
    """

    def __init__(self, model: nn.Module, known: Sequence[KnownModel], mask: Tensor | None = None):
        self.model = model
        self.known = list(known)
        self.mask = mask
        self._timm_input: dict[str, Tensor] = {}
        self._token_ids: Tensor | None = None  # a decoder's input_ids, (B, T)
        self._head_input: Tensor | None = None
        self._handles: list[Any] = []

    def register(self) -> None:
        modules = dict(self.model.named_modules())
        classifiers = {model.classifier: model.pooling for model in self.known if model.classifier is not None}
        for model in self.known:
            if model.library == "timm":
                self._handles.append(modules[model.path].register_forward_pre_hook(self._timm(model.path)))
            if model.pooling is not None and model.pooling.kind == "last_real":
                hook = modules[model.path].register_forward_pre_hook(self._ids, with_kwargs=True)
                self._handles.append(hook)
        for path, module in modules.items():
            leaf = not any(True for _ in module.children())
            if path in classifiers or (not classifiers and leaf and isinstance(module, nn.Linear)):
                owner = next((m for m in self.known if m.classifier == path), None)
                pad = getattr(getattr(modules[owner.path], "config", None), "pad_token_id", None) if owner else None
                self._handles.append(module.register_forward_pre_hook(self._head(classifiers.get(path), pad)))

    def _ids(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, Tensor) and ids.ndim == 2 and self._token_ids is None:
            self._token_ids = ids

    def _timm(self, path: str):  # noqa: ANN202 - a hook closure
        def hook(module: nn.Module, args: Any) -> None:
            tensor = first_tensor(args)
            if tensor is not None and path not in self._timm_input:
                self._timm_input[path] = tensor

        return hook

    def _head(self, pooling: TokenPooling | None, pad: int | None):  # noqa: ANN202 - a hook closure
        def hook(module: nn.Module, args: Any) -> None:
            tensor = first_tensor(args)
            if tensor is not None and tensor.ndim == 3 and pooling is not None and pooling.kind == "last_real":
                ids = self._token_ids
                if isinstance(pad, int) and ids is not None and tuple(ids.shape) == tuple(tensor.shape[:2]):
                    tensor = last_real(tensor.detach(), ids != pad)  # as HF picks: the last non-pad id
                else:
                    tensor = pooling.reduce(tensor.detach(), self.mask)  # a decoder's score: (B, T, C) -> (B, C)
            if tensor is not None and tensor.ndim == 2:
                self._head_input = tensor.detach()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def reference(self) -> Tensor | None:
        """(B, F) float32 on the CPU: the pre-logits feature of the forward just run, or None when unknown."""
        for model in self.known:
            inputs = self._timm_input.get(model.path)
            if model.library == "timm" and inputs is not None:
                timm_model: Any = self.model.get_submodule(model.path) if model.path else self.model
                with torch.no_grad():
                    return timm_model.forward_head(timm_model.forward_features(inputs), pre_logits=True).float().cpu()
        return None if self._head_input is None else self._head_input.float().cpu()


def alternatives(tokens: Tensor, mask: Tensor | None) -> dict[TokenPooling, Tensor]:
    """(B, T, C) tokens pooled every way :func:`~lightning_featviz.capture.pooling.candidate_poolings` tries."""
    length = tokens.shape[1]
    return {identified(p, length): p.reduce(tokens, mask).float().cpu() for p in candidate_poolings(length)}


def identify(options: dict[TokenPooling, Tensor], reference: Tensor) -> TokenPooling | None:
    """The first pooling whose vectors equal ``reference`` (B, F), or None."""
    return next((pooling for pooling, vectors in options.items() if same_vectors(vectors, reference)), None)


def warn_unmatched(head: str, pooled: str | None, reference: Tensor, pooling: TokenPooling | None) -> None:
    """Warn that the head ``head`` (a module path) of a timm / HF model reads a vector that neither a module before
    it outputs nor a head activation of one reproduces (a function of several layers; a decoder whose pad token is
    also in the text): the default pooled layer ``pooled`` (or None) is not ``reference`` (B, F), what it reads."""
    layer = pooled if pooled is not None else "<layer>"
    chosen = f"the default pooled layer {layer!r} is not it" if pooled is not None else "no pooled layer is chosen"
    if pooling is not None and pooling.kind == "last_real":
        why = "the head reads the last token that is not `pad_token_id`, the layers the last token the batch's "
        why += "`attention_mask` keeps, and they differ in some sentence: a pad token inside the text, or no mask"
        hint = "give the batches an `attention_mask` and a pad token that is not in the text (GPT-2: not `eos`)"
    else:
        why = "the model computes it with functions, not modules"
        hint = f"pass capture=CaptureOptions(reduction={{{layer!r}: lambda out: ...}}) returning what the head reads"
    warnings.warn(
        f"FeatureVisualizer expected a module before the classifier head {head!r} to output what the head reads "
        f"(shape {tuple(reference.shape)}), but none does ({why}): {chosen}. Hint: {hint}, or name the layers to "
        "analyse in `layers=[...]`.",
        stacklevel=4,  # default_layers' caller
    )
