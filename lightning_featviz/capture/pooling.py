"""The model's own pooling of its tokens: how a transformer's head turns (B, T, C) tokens into the (B, C) vector
it classifies, read from the model (never from a rule of thumb), so that every token layer of the model is reduced
the same way.

Known from the libraries people fine-tune from:

- **timm** ViT-like models (``VisionTransformer``, ``Eva``, ``Beit``, ...): ``global_pool`` (``"token"``: the class
  token; ``"avg"``: the mean of the patch tokens, after ``num_prefix_tokens`` class / register tokens; ``"max"``,
  ``"avgmax"``), DeiT distilled (the mean of the class and distillation tokens).
- **HF transformers** ``*ForImageClassification`` / ``*ForSequenceClassification``: ViT and DeiT read token 0 after the
  final layernorm (DeiT with teacher: the mean of tokens 0 and 1), BEiT / Data2Vec-vision with
  ``use_mean_pooling`` the mean of the patch tokens, DINOv2 the class token beside the mean of the patch tokens
  (2C), CLIP the mean of the patch tokens, SigLIP the mean of every token, text encoders (BERT, DistilBERT,
  DeBERTa, ...) token 0 (CLS), decoders with a ``score`` head on every token (GPT-2, Llama, Mistral, Qwen2, ...)
  the last real token (the last one the attention mask keeps; HF finds it from ``pad_token_id``).

A model found nowhere here is identified on a probe forward (:mod:`lightning_featviz.capture.default_layers`).
Tokens carry the prefix only where their length says so: a layer of the model whose sequence is exactly the patch
grid (timm ``patch_embed``, HF ``patch_embeddings``) has no class token and is averaged whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

PoolKind = Literal["token", "avg", "max", "avgmax", "token_dist", "token_avg", "mean", "last", "last_real"]
_NAMES = {
    "token": "cls",
    "token_dist": "(cls+dist)/2",
    "token_avg": "[cls,mean[{p}:]]",
    "avg": "mean[{p}:]",
    "max": "max[{p}:]",
    "avgmax": "avgmax[{p}:]",
    "mean": "mean",
    "last": "last",
    "last_real": "last real",
}


@dataclass(frozen=True)
class TokenPooling:
    """How a model pools (B, T, C) tokens into (B, C).

    Attributes:
        kind: ``"token"`` (token 0), ``"token_dist"`` (the mean of tokens 0 and 1), ``"avg"`` / ``"max"`` /
            ``"avgmax"`` (of the tokens after the prefix), ``"token_avg"`` (token 0 and the mean of the tokens after
            the prefix, concatenated: (B, 2C)), ``"mean"`` (of every token; masked by the batch's attention mask
            where there is one), ``"last"`` (the last token: an RNN's last step), ``"last_real"`` (the last token
            the attention mask keeps, the last token without one: a decoder's sequence classifier).
        prefix: leading tokens that are not patches (class, distillation, register tokens).
        patches: patch tokens per image where the model has a fixed grid; None for text (every sequence carries the
            prefix).
        owner: the model this pooling is read from (class name), for messages and ``featviz layers``.
    """

    kind: PoolKind
    prefix: int = 0
    patches: int | None = None
    owner: str = ""

    @property
    def name(self) -> str:
        return _NAMES[self.kind].format(p=self.prefix)

    def carries_prefix(self, length: int) -> bool:
        """Whether a sequence of ``length`` tokens starts with the model's prefix tokens (not a patch embedding)."""
        if self.patches is None:
            return length > self.prefix
        return length == self.patches + self.prefix and self.prefix > 0

    def reduce(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, C) tokens -> (B, C) ((B, 2C) for ``"token_avg"``); ``mask``: (B, T), nonzero where a token is real
        (text padding), or None."""
        if self.kind == "last":
            return tokens[:, -1]
        if self.kind == "last_real":
            return last_real(tokens, mask)
        if self.kind == "mean" or not self.carries_prefix(tokens.shape[1]):
            return masked_mean(tokens, mask)
        if self.kind == "token":
            return tokens[:, 0]
        if self.kind == "token_dist":
            return (tokens[:, 0] + tokens[:, 1]) / 2
        patches = tokens[:, self.prefix :]
        if self.kind == "token_avg":
            return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=1)
        if self.kind == "avg":
            return patches.mean(dim=1)
        if self.kind == "max":
            return patches.amax(dim=1)
        return 0.5 * (patches.mean(dim=1) + patches.amax(dim=1))


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """(B, T, C) -> (B, C): the mean over the tokens where ``mask`` (B, T) is nonzero (every token without one)."""
    if mask is None or tuple(mask.shape) != tuple(tokens.shape[:2]):
        return tokens.mean(dim=1)
    weights = (mask != 0).to(device=tokens.device, dtype=tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def last_real(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """(B, T, C) -> (B, C): the rightmost token where ``mask`` (B, T) is nonzero, as HF's sequence classifiers pick
    the rightmost token that is not padding (left or right padding); the last token without a mask."""
    if mask is None or tuple(mask.shape) != tuple(tokens.shape[:2]):
        return tokens[:, -1]
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    last = (positions * (mask.to(tokens.device) != 0)).argmax(dim=-1)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]


@dataclass(frozen=True)
class KnownModel:
    """A model of a known library inside the analysed module, and what it tells.

    Attributes:
        path: its module path in the analysed module ('' for the module itself).
        library: ``"timm"`` or ``"transformers"``.
        pooling: how its head pools tokens, or None (a CNN: its maps are averaged as usual).
        stages: module paths of its encoder stages (``blocks.N``, ``encoder.layer.N``), in order.
        classifier: module path of its classifier head (the module whose input is the pre-logits feature), or None.
    """

    path: str
    library: str
    pooling: TokenPooling | None
    stages: tuple[str, ...]
    classifier: str | None

    def contains(self, path: str) -> bool:
        return not self.path or path == self.path or path.startswith(self.path + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _library(module: nn.Module) -> str | None:
    origin = type(module).__module__
    if origin.startswith("timm.models."):
        return "timm"
    if origin.startswith("transformers.models.") and hasattr(module, "config"):
        return "transformers"
    return None


def _block_list(module: nn.Module, prefix: str) -> tuple[str, ...]:
    """The items of the outermost ModuleList / Sequential of two or more same-class blocks in ``module`` (a
    transformer's ``blocks`` or ``encoder.layer``; HF Swin's, ConvNeXt's and ResNet's ``encoder.stages``, not the
    blocks inside one stage), else of the longest, as paths under ``prefix``."""
    best: tuple[str, ...] = ()
    best_key: tuple[bool, int, int] | None = None
    for path, child in module.named_modules():
        if not isinstance(child, (nn.ModuleList, nn.Sequential)) or len(child) < 1:
            continue
        kinds = {type(item) for item in child}
        if len(kinds) != 1 or not any(word in next(iter(kinds)).__name__ for word in ("Block", "Layer", "Stage")):
            continue
        key = (len(child) >= 2, -path.count("."), len(child))
        if best_key is None or key > best_key:
            best, best_key = tuple(_join(_join(prefix, path), name) for name, _ in child.named_children()), key
    return best


def _patches(module: nn.Module) -> int | None:
    """Patch tokens per image of a ViT-like model with a fixed grid (timm ``patch_embed.num_patches``, HF
    ``embeddings.patch_embeddings.num_patches``, CLIP's and SigLIP's ``embeddings.num_patches``), else None."""
    for path, child in module.named_modules():
        if path.endswith(("patch_embed", "patch_embeddings")) or hasattr(child, "patch_embedding"):  # CLIP, SigLIP
            count = getattr(child, "num_patches", None)
            if isinstance(count, int) and not getattr(child, "dynamic_img_size", False):
                return count
    return None


def _timm_pooling(model: nn.Module) -> TokenPooling | None:
    prefix = getattr(model, "num_prefix_tokens", None)
    pool = getattr(model, "global_pool", None)
    if not isinstance(prefix, int) or not isinstance(pool, str):
        return None  # a CNN: global_pool is a module there
    name, patches = type(model).__name__, _patches(model)
    if "Distilled" in name:
        return TokenPooling("token_dist", prefix, patches, name)
    if getattr(model, "attn_pool", None) is not None or pool in ("", "map"):
        return TokenPooling("avg", prefix, patches, name)  # the head reads an attention pool: its input is the patches
    kind: PoolKind = pool if pool in ("avg", "max", "avgmax") else "token"  # type: ignore[assignment]
    return TokenPooling(kind, prefix, patches, name)


def _hf_pooling(model: nn.Module) -> TokenPooling | None:
    name, config = type(model).__name__, getattr(model, "config", None)
    if not name.endswith(("ForImageClassification", "ForImageClassificationWithTeacher", "ForSequenceClassification")):
        return None
    if name.endswith("ForSequenceClassification") and isinstance(getattr(model, "score", None), nn.Linear):
        return TokenPooling("last_real", 0, None, name)  # a decoder: its `score` reads the last real token
    patches = _patches(model)
    if patches is None:
        return TokenPooling("token", 1, None, name)  # a text encoder: CLS at token 0
    if name.startswith("CLIP"):
        return TokenPooling("avg", 1, patches, name)  # the mean of the patch tokens, after the class embedding
    if name.startswith("Siglip"):
        return TokenPooling("mean", 0, patches, name)  # no class token: the mean of every token
    embeddings = next((m for p, m in model.named_modules() if hasattr(m, "cls_token")), None)
    prefix = sum(
        int(getattr(embeddings, attribute, None) is not None) for attribute in ("cls_token", "distillation_token")
    )
    registers = getattr(embeddings, "register_tokens", None)
    prefix += int(registers.shape[1]) if isinstance(registers, Tensor) else 0
    if getattr(config, "use_mean_pooling", False):
        return TokenPooling("avg", prefix, patches, name)
    if name.startswith("Dinov2"):
        return TokenPooling("token_avg", prefix, patches, name)  # the class token beside the patches' mean
    if name.endswith("WithTeacher"):
        return TokenPooling("token_dist", prefix, patches, name)
    return TokenPooling("token", prefix, patches, name)


def _hf_classifier(model: nn.Module, prefix: str) -> str | None:
    for attribute in ("classifier", "score"):  # `score`: a decoder's head, on every token
        if isinstance(getattr(model, attribute, None), nn.Linear):
            return _join(prefix, attribute)
    head = getattr(model, "classifier", None)
    inner = getattr(head, "out_proj", None)
    return _join(prefix, "classifier.out_proj") if isinstance(inner, nn.Linear) else None


def _timm_classifier(model: nn.Module, prefix: str) -> str | None:
    try:
        head = model.get_classifier()  # type: ignore[operator]
    except (AttributeError, TypeError):
        return None
    if not isinstance(head, nn.Module):
        return None  # DeiT distilled: two heads; its pre-logits feature is the pooled final norm
    return next((_join(prefix, path) for path, child in model.named_modules() if child is head), None)


def known_models(root: nn.Module) -> list[KnownModel]:
    """Every outermost timm / HF transformers model inside ``root`` (``root`` itself included), with its pooling.

    torch.compile's ``OptimizedModule`` holds the model as ``_orig_mod``: its path goes through it.
    """
    found: list[KnownModel] = []
    for path, module in root.named_modules():
        if any(model.contains(path) for model in found):
            continue
        library = _library(module)
        if library == "timm" and hasattr(module, "forward_head"):
            pooling, classifier = _timm_pooling(module), _timm_classifier(module, path)
        elif library == "transformers":
            pooling, classifier = _hf_pooling(module), _hf_classifier(module, path)
            if pooling is None:
                continue  # a bare encoder, or a head this module does not know: found inside its classifier
        else:
            continue
        stages = _block_list(module, path) if pooling is not None else ()
        found.append(KnownModel(path, library, pooling, stages, classifier))
    return found


def pooling_of(models: list[KnownModel], path: str) -> TokenPooling | None:
    """The token pooling of the known model that holds module ``path``, or None."""
    return next((model.pooling for model in models if model.contains(path) and model.pooling is not None), None)


def candidate_poolings(length: int, patches: int | None = None) -> Iterator[TokenPooling]:
    """The poolings tried when identifying an unknown model's (its last token layer vs its head's input):
    token 0, tokens 0 and 1, the mean after 1-4 prefix tokens, the mean of every token, the last token."""
    yield TokenPooling("token", 1, patches, "identified")
    yield TokenPooling("token_dist", 2, patches, "identified")
    for prefix in range(1, min(5, length)):
        yield TokenPooling("avg", prefix, patches, "identified")
    yield TokenPooling("mean", 0, patches, "identified")
    yield TokenPooling("last", 0, patches, "identified")


def identified(pooling: TokenPooling, length: int) -> TokenPooling:
    """``pooling`` found on a sequence of ``length`` tokens, applying to sequences of that length only."""
    return replace(pooling, patches=length - pooling.prefix)


def same_vectors(a: Tensor, b: Tensor) -> bool:
    """Equal (B, D) vectors up to float32 rounding."""
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5))
