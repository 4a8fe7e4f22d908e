"""Model-zoo conformance: every torchvision classification family that runs at a small input on the CPU, at
random init (nothing downloaded), with its default layers. Each captured vector equals an independent
reference: torchvision's FX ``create_feature_extractor`` for the same node, reduced by hand as written here
(mean over H, W of a (B, C, H, W) map; mean over H, W of Swin's channels-last (B, H, W, C); the class token of
a ViT's encoder output). The expected default layers are written out per model too; the last is the model's
pre-logits feature (what its last Linear reads: after ConvNeXt's head norm, MobileNetV3's and MaxViT's head MLP)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models.feature_extraction import create_feature_extractor

from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture


def channels_first(out: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C)
    return out.mean(dim=(2, 3))


def channels_last(out: Tensor) -> Tensor:  # (B, H, W, C) -> (B, C)
    return out.mean(dim=(1, 2))


def class_token(out: Tensor) -> Tensor:  # (B, N, C) -> (B, C)
    return out[:, 0]


def vector(out: Tensor) -> Tensor:  # (B, F)
    return out.flatten(1)


CF, CL = channels_first, channels_last
RESNET = {"layer1": CF, "layer2": CF, "layer3": CF, "avgpool": CF}
EFFICIENT = {"features.1": CF, "features.2": CF, "features.3": CF, "features.5": CF, "avgpool": CF}

# name: (constructor, input side, {default layer: hand reduction of its FX output})
ZOO: dict[str, tuple[Callable[[], nn.Module], int, dict[str, Callable[[Tensor], Tensor]]]] = {
    "resnet18": (models.resnet18, 32, RESNET),
    "resnext50_32x4d": (models.resnext50_32x4d, 32, RESNET),
    "wide_resnet50_2": (models.wide_resnet50_2, 32, RESNET),
    "densenet121": (
        models.densenet121,
        32,
        {f"features.denseblock{i}": CF for i in (1, 2, 3, 4)},
    ),
    "mobilenet_v2": (
        models.mobilenet_v2,
        32,
        {"features.1": CF, "features.3": CF, "features.6": CF, "features.13": CF, "features": CF},
    ),
    "mobilenet_v3_small": (
        models.mobilenet_v3_small,
        32,
        # the pre-logits feature is the head MLP's hidden layer (what the last Linear reads), after Hardswish
        {
            "features.0": CF,
            "features.1": CF,
            "features.3": CF,
            "features.8": CF,
            "features.12": CF,
            "classifier.1": vector,
        },
    ),
    "efficientnet_b0": (models.efficientnet_b0, 32, EFFICIENT),
    "efficientnet_v2_s": (models.efficientnet_v2_s, 32, EFFICIENT),
    "regnet_y_400mf": (
        models.regnet_y_400mf,
        32,
        {"stem": CF, "trunk_output.block1": CF, "trunk_output.block2": CF, "trunk_output.block3": CF, "avgpool": CF},
    ),
    "shufflenet_v2_x0_5": (
        models.shufflenet_v2_x0_5,
        32,
        {"conv1": CF, "stage2": CF, "stage3": CF, "conv5": CF},
    ),
    "squeezenet1_1": (models.squeezenet1_1, 64, {"features.4": CF, "features.7": CF, "features.12": CF}),
    "convnext_tiny": (  # the pre-logits feature is after the head's LayerNorm2d
        models.convnext_tiny,
        32,
        {"features.1": CF, "features.3": CF, "features.5": CF, "features.7": CF, "classifier.0": CF},
    ),
    "vit": (
        lambda: models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
        ),
        32,
        {"encoder": class_token},
    ),
    "swin": (
        lambda: models.SwinTransformer([4, 4], 16, [1, 1, 2, 1], [1, 1, 2, 2], [2, 2]),
        64,
        {"features.1": CL, "features.3": CL, "features.5": CL, "features.7": CL, "avgpool": CF},
    ),
    "maxvit": (
        lambda: models.MaxVit(
            input_size=(32, 32),
            stem_channels=8,
            partition_size=2,
            block_channels=[12, 24],
            block_layers=[1, 1],
            head_dim=4,
            stochastic_depth_prob=0.0,
        ),
        32,
        {"stem": CF, "blocks.0": CF, "blocks.1": CF, "classifier.4": vector},  # after the head's Tanh
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(ZOO))
def test_default_layers_and_their_vectors_match_an_fx_reference(name):
    build, side, expected = ZOO[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(2, 3, side, side)
    found = default_layers(model, x)
    assert list(found.layers) == ["input", *expected]
    capture = ActivationCapture(model, list(found.layers), batch_size=2)
    with torch.no_grad(), capture.attach():
        model(x)
    vectors = capture.pop()
    extractor = create_feature_extractor(model, return_nodes=list(expected)).eval()
    with torch.no_grad():
        reference = extractor(x)
    for layer, reduce in expected.items():
        assert vectors[layer].shape == (2, reduce(reference[layer]).shape[1]), layer
        torch.testing.assert_close(vectors[layer], reduce(reference[layer]), rtol=1e-5, atol=1e-5, msg=layer)
