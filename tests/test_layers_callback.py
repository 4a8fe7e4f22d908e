"""Layer choice and layouts in real Trainer runs: default layers, per-layer reductions, the bank line's vector
sizes, and a layout that cannot be decided failing in the sanity check."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyNet, hooks_left, tiny_trainer
from torch import nn
from torchvision.models import VisionTransformer, efficientnet_b0

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


class Wrapped(pl.LightningModule):
    """Any torchvision classifier as ``self.model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))


def _bank_line(caplog) -> str:
    return next(r.getMessage() for r in caplog.records if "FeatureVisualizer bank" in r.getMessage())


def test_efficientnet_default_layers_are_found_and_analysed(tmp_path, small_data, caplog):
    torch.manual_seed(0)
    visualizer = FeatureVisualizer(
        overhead=None, k=5, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], limit_val_batches=2)
    # At initialisation, in eval mode, EfficientNet-B0's last stage is dead: avgpool's vectors are ~1e-14
    # everywhere, so their neighbours are ties of rounding noise and purity is undefined, with a warning.
    with caplog.at_level("INFO"), pytest.warns(UserWarning, match="Layer 'avgpool'.*undefined"):
        trainer.validate(Wrapped(efficientnet_b0(num_classes=10)), datamodule=small_data)
    layers = ["input", "features.1", "features.2", "features.3", "features.5", "avgpool"]
    assert [row["layer"] for row in visualizer.history] == layers
    purity = {row["layer"]: row["knn_purity"] for row in visualizer.history}
    assert all(0 <= purity[layer] <= 1 for layer in layers[:-1]) and math.isnan(purity["avgpool"])
    assert "16 (features.1)" in _bank_line(caplog) and "1280 (avgpool)" in _bank_line(caplog)


def test_default_layers_of_a_plain_cnn_drop_a_stage_identical_to_the_pooled_feature(tmp_path, small_data):
    visualizer = FeatureVisualizer(
        overhead=None, k=5, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], limit_val_batches=2)
    trainer.validate(TinyNet(), datamodule=small_data)
    # relu2 averaged over H, W is exactly `pool`: only `pool` is kept
    assert [row["layer"] for row in visualizer.history] == ["input", "relu1", "pool"]


def test_a_vit_layer_is_stored_as_its_class_token_and_the_bank_line_says_so(tmp_path, small_data, caplog):
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    model = Wrapped(nn.Sequential())  # layers under model.vit: the class token is found on an ancestor
    model.model = vit
    visualizer = FeatureVisualizer(
        ["input", "encoder.ln", "encoder.layers.encoder_layer_0"],
        overhead=None,
        k=5,
        capture=CaptureOptions(reduction={"encoder_layer_0": "mean"}),
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    with caplog.at_level("INFO"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], limit_val_batches=2).validate(
            model, datamodule=small_data
        )
    assert "32 (encoder.ln) + 32 (encoder.layers.encoder_layer_0)" in _bank_line(caplog)


class Tokens(pl.LightningModule):
    """A conv whose map is turned into (B, HW, C) tokens by functional ops: nothing tells their layout, and
    with as many tokens as samples per batch (32) neither does the batch size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (4, 8), stride=(4, 8))  # 32 x 32 images -> 8 x 4 = 32 tokens
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.head(tokens).mean(dim=1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_an_undecidable_layout_fails_the_sanity_check_naming_the_override(tmp_path, small_data):
    visualizer = FeatureVisualizer(["input", "head"], overhead=None, k=5, maps=MapOptions(every_n_epochs=None))
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], limit_train_batches=1)
    model = Tokens()
    with pytest.raises(ValueError, match=r"layer 'head'.*\(32, 32, 10\).*reduction=\{'head': 'mean'\}"):
        trainer.fit(model, datamodule=small_data)
    assert trainer.global_step == 0
    assert hooks_left(model) == 0


def test_the_same_layer_with_an_override_is_analysed(tmp_path, small_data):
    visualizer = FeatureVisualizer(
        ["input", "head"],
        overhead=None,
        k=5,
        capture=CaptureOptions(reduction={"head": "mean"}),
        maps=MapOptions(every_n_epochs=None),
    )
    tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], limit_val_batches=2).validate(
        Tokens(), datamodule=small_data
    )
    assert [row["layer"] for row in visualizer.history] == ["input", "head"]


def test_a_reduction_key_that_names_no_captured_layer_fails_at_setup(tmp_path, small_data):
    visualizer = FeatureVisualizer(
        ["input", "conv2"],
        overhead=None,
        capture=CaptureOptions(reduction={"pool": "avg"}),
        maps=MapOptions(every_n_epochs=None),
    )
    with pytest.raises(ValueError, match=r"every key of `reduction` to name a captured layer.*'pool'"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).validate(TinyNet(), datamodule=small_data)


def test_featviz_layers_prints_the_defaults_and_every_candidate_with_its_size(capsys):
    assert main(["layers", "--arch", "resnet18", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "default layers: input, layer1, layer2, layer3, avgpool" in out
    row = next(line for line in out.splitlines() if line.lstrip("* ").startswith("layer4 "))
    assert "(B, C, H, W)" in row and " 512 dims" in row and "2x512x2x2" in row
    assert main(["layers", "--module", "conftest.TinyNet", "--image-size", "32"]) == 0
    assert "default layers: input, relu1, pool" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "why"),
    [
        ("lightning_featviz.demo.model.ImageClassifier", "TypeError: .*num_classes"),
        ("no_such_pkg.Net", "ModuleNotFoundError"),
    ],
)
def test_featviz_layers_says_why_a_module_cannot_be_built_instead_of_a_traceback(module, why):
    with pytest.raises(SystemExit, match=rf"featviz layers: [Ee]xpected `(--)?module` to be .*{why}.*\n.*Hint"):
        main(["layers", "--module", module])
