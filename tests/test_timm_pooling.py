"""timm conformance: every default layer of a timm model gives the vectors the model itself makes — the pooled layer
``forward_head(forward_features(x), pre_logits=True)``, each encoder block the model's own pooling of its tokens.
Random init, tiny configs (no download)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pooling_data import coloured_squares, fit_six_epochs, sklearn_purity
from torch import Tensor, nn

from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture

timm = pytest.importorskip("timm")

VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}
#: name -> (timm model name, create_model kwargs, image side)
FAMILIES: dict[str, tuple[str, dict[str, Any], int]] = {
    "vit_token": ("vit_tiny_patch16_224", VIT, 32),
    "vit_avg": ("vit_tiny_patch16_224", {**VIT, "global_pool": "avg"}, 32),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", VIT, 32),
    "vit_registers": ("vit_tiny_patch16_224", {**VIT, "reg_tokens": 4, "global_pool": "avg"}, 32),
    "vit_max": ("vit_tiny_patch16_224", {**VIT, "global_pool": "max"}, 32),
    "vit_avgmax": ("vit_tiny_patch16_224", {**VIT, "global_pool": "avgmax"}, 32),
    "vit_map": ("vit_tiny_patch16_224", {**VIT, "global_pool": "map"}, 32),  # attention pooling: blocks as "avg"
    "vit_no_class_token": ("vit_tiny_patch16_224", {**VIT, "class_token": False, "global_pool": "avg"}, 32),
    "vit_avg_without_fc_norm": ("vit_tiny_patch16_224", {**VIT, "global_pool": "avg", "fc_norm": False}, 32),
    "vit_token_with_fc_norm": ("vit_tiny_patch16_224", {**VIT, "fc_norm": True}, 32),
    "eva02": ("eva02_tiny_patch14_224", {**VIT, "patch_size": 8}, 32),
    "beit": ("beit_base_patch16_224", VIT, 32),
    "convnext": ("convnext_atto", {}, 32),
    "efficientnet": ("efficientnet_b0", {}, 32),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": 32, "window_size": 2, "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
        32,
    ),
    "maxvit": ("maxvit_nano_rw_256", {"img_size": 64}, 64),
    "mobilevit": ("mobilevit_xxs", {}, 64),
    "regnet": ("regnetx_002", {}, 32),
    "resnet": ("resnet18", {}, 32),
    "convnext_max": ("convnext_atto", {"global_pool": "max"}, 32),
    "resnet_avgmax": ("resnet18", {"global_pool": "avgmax"}, 64),  # 64: layer4 is 2 x 2, its max is not its mean
    "resnet_catavgmax": ("resnet18", {"global_pool": "catavgmax"}, 32),
}


def _build(family: str) -> tuple[nn.Module, Tensor]:
    name, kwargs, side = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3, **kwargs).eval()
    return model, torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(1))


def _captured(model: nn.Module, x: Tensor, layers: list[str]) -> dict[str, Tensor]:
    capture = ActivationCapture(model, layers, batch_size=len(x))
    with capture.attach(), torch.no_grad():
        model(x)
    return capture.pop()


def _raw_outputs(model: nn.Module, x: Tensor, paths: list[str]) -> dict[str, Tensor]:
    """Each module's output as it is (plain forward hooks, nothing of ours)."""
    raw: dict[str, Tensor] = {}
    handles = [
        model.get_submodule(path).register_forward_hook(lambda m, a, out, p=path: raw.setdefault(p, out))
        for path in paths
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return raw


def model_pooling(model: Any, tokens: Tensor) -> Tensor:
    """The model's own pooling of (B, T, C) tokens, as its ``forward_head`` does it."""
    if type(model).__name__ == "VisionTransformerDistilled":
        return (tokens[:, 0] + tokens[:, 1]) / 2
    if hasattr(model, "pool"):
        return model.pool(tokens)
    prefix = model.num_prefix_tokens
    return tokens[:, prefix:].mean(dim=1) if model.global_pool == "avg" else tokens[:, 0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_default_pooled_layer_is_the_models_pre_logits_feature(family: str) -> None:
    model, x = _build(family)
    layers = [path for path in default_layers(model, x).layers if path != "input"]
    with torch.no_grad():
        reference = model.forward_head(model.forward_features(x), pre_logits=True)
    pooled = _captured(model, x, layers[-1:])[layers[-1]]
    assert pooled.shape == reference.shape, (family, layers)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "family", [f for f in FAMILIES if f.startswith(("vit", "deit", "eva", "beit")) and f != "vit_map"]
)
def test_every_default_token_layer_is_pooled_as_the_model_pools(family: str) -> None:
    model, x = _build(family)
    layers = [path for path in default_layers(model, x).layers if path != "input"]
    blocks = [path for path in layers if path.startswith("blocks.")]
    assert blocks == [f"blocks.{i}" for i in range(len(model.blocks))], layers  # "auto" finds the encoder stages
    captured, raw = _captured(model, x, blocks), _raw_outputs(model, x, blocks)
    for path in blocks:
        torch.testing.assert_close(captured[path], model_pooling(model, raw[path]), rtol=1e-5, atol=1e-6)


def test_patch_embeddings_are_averaged_not_read_at_token_0() -> None:
    """Why: a timm ViT's `patch_embed` holds patches only; token 0 there is the top-left patch."""
    model, x = _build("vit_token")
    vectors = _captured(model, x, ["patch_embed"])["patch_embed"]
    raw = _raw_outputs(model, x, ["patch_embed"])["patch_embed"]
    assert raw.shape[1] == model.patch_embed.num_patches
    torch.testing.assert_close(vectors, raw.mean(dim=1))


def test_mean_pooled_vit_blocks_are_the_mean_of_their_patch_tokens() -> None:
    """Why: `global_pool="avg"` (and register tokens): the class and register tokens are not what the head reads."""
    model, x = _build("vit_registers")
    assert model.num_prefix_tokens == 5
    vectors = _captured(model, x, ["blocks.1"])["blocks.1"]
    raw = _raw_outputs(model, x, ["blocks.1"])["blocks.1"]
    torch.testing.assert_close(vectors, raw[:, 5:].mean(dim=1))
    assert not torch.allclose(vectors, raw[:, 0])


def test_distilled_deit_pooled_feature_is_not_a_heads_logits() -> None:
    """Why: DeiT distilled's auto pooled feature was `head` (one head's logits)."""
    model, x = _build("deit_distilled")
    found = default_layers(model, x).layers
    assert "head" not in found and "head_dist" not in found
    assert list(found)[-1] == "norm"


def test_convnext_pooled_feature_is_after_the_head_norm() -> None:
    """Why: ConvNeXt's auto pooled feature was `head.global_pool`, before `head.norm`."""
    model, x = _build("convnext")
    assert list(default_layers(model, x).layers)[-1] == "head.norm"


def test_a_trained_mean_pooled_vit_logs_the_purity_of_its_pre_logits_feature(tmp_path: Any) -> None:
    """Why: a mean-pooled timm ViT trained to accuracy 1.00 logged 0.76-0.79 (its class token, which the head never
    reads) where its own pooled feature gives 0.996-0.999."""
    import pytorch_lightning as pl
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    class TimmClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = timm.create_model(
                "vit_tiny_patch16_224", pretrained=False, num_classes=3, **{**VIT, "img_size": 16, "patch_size": 4},
                global_pool="avg",
            )  # fmt: skip

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            return F.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    def tensors(samples: list[dict[str, Tensor]]) -> TensorDataset:
        return TensorDataset(
            torch.stack([s["pixel_values"] for s in samples]), torch.stack([s["labels"] for s in samples])
        )

    pl.seed_everything(0, verbose=False)
    module, val = TimmClassifier(), tensors(coloured_squares(60, seed=1))
    trainer, visualizer = fit_six_epochs(
        tmp_path, module, DataLoader(tensors(coloured_squares(150, seed=0)), 15, shuffle=True), DataLoader(val, 20)
    )
    layers = list(visualizer._run.paths.values())
    assert layers[-1] == "fc_norm" and "blocks.0" in layers, layers
    assert trainer.callback_metrics["val_acc"].item() > 0.9
    module.eval()
    with torch.no_grad():
        pooled = module.net.forward_head(module.net.forward_features(val.tensors[0]), pre_logits=True)
    expected = sklearn_purity(pooled.numpy(), val.tensors[1].numpy(), k=5)
    assert trainer.callback_metrics["featviz/knn_purity@5/fc_norm"].item() == pytest.approx(expected, abs=1e-6)


def test_featviz_layers_shows_the_reduction_of_every_layer(capsys: Any) -> None:
    from lightning_featviz.cli import main

    assert main(["layers", "--timm", "deit_tiny_distilled_patch16_224", "--image-size", "64"]) == 0
    printed = capsys.readouterr().out
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in printed.splitlines()[2:]}
    assert "(cls+dist)/2" in lines["blocks.0"] and lines["blocks.0"].startswith("*")
    assert " mean " in lines["patch_embed"]  # patches only: no class token to read
    assert printed.splitlines()[0].endswith("blocks.11, norm")
