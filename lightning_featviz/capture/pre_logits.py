"""The model's pre-logits feature on a probe forward — the reference the default pooled layer must reproduce — and,
for a token model no library tells about, the pooling that reproduces it.

- A timm model: ``forward_head(forward_features(x), pre_logits=True)`` on the input it received.
- An HF transformers ``*For...Classification``: what its ``classifier`` receives (a forward pre-hook); a decoder's
  ``score``, which reads every token, at the token the model's pooling picks (the last real one).
- Any other model: what the last Linear that runs receives, when that is (B, F) vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_featviz.capture.pooling import KnownModel, TokenPooling, candidate_poolings, identified, same_vectors
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
        self._head_input: Tensor | None = None
        self._handles: list[Any] = []

    def register(self) -> None:
        modules = dict(self.model.named_modules())
        classifiers = {model.classifier: model.pooling for model in self.known if model.classifier is not None}
        for model in self.known:
            if model.library == "timm":
                self._handles.append(modules[model.path].register_forward_pre_hook(self._timm(model.path)))
        for path, module in modules.items():
            leaf = not any(True for _ in module.children())
            if path in classifiers or (not classifiers and leaf and isinstance(module, nn.Linear)):
                self._handles.append(module.register_forward_pre_hook(self._head(classifiers.get(path))))

    def _timm(self, path: str):  # noqa: ANN202 - a hook closure
        def hook(module: nn.Module, args: Any) -> None:
            tensor = first_tensor(args)
            if tensor is not None and path not in self._timm_input:
                self._timm_input[path] = tensor

        return hook

    def _head(self, pooling: TokenPooling | None):  # noqa: ANN202 - a hook closure
        def hook(module: nn.Module, args: Any) -> None:
            tensor = first_tensor(args)
            if tensor is not None and tensor.ndim == 3 and pooling is not None and pooling.kind == "last_real":
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
