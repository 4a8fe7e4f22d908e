"""torch.compile: `trainer.fit(torch.compile(module))` and `self.net = torch.compile(net)` give the eager numbers —
the hooks sit on the original modules and fire (the forward runs eagerly while a layer is captured). The compile
backend is dynamo's "eager" (the hooks' problem is dynamo's tracing; inductor would only add minutes of C++)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyNet, tiny_trainer
from pooling_data import sklearn_purity
from torch import nn

from lightning_featviz import FeatureVisualizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _visualizer(layers: Any = "auto") -> FeatureVisualizer:
    return FeatureVisualizer(
        layers, k=5, max_samples=200, overhead=None, maps=False, projector=False, wrong_cluster=False, dashboard=False
    )


def _eager_purity(features: Any, data: Any) -> float:
    """scikit-learn purity of ``features(x)`` (B, D) over the validation set, computed eagerly by the test."""
    vectors, labels = [], []
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        for x, y in data.val_dataloader():
            vectors.append(features(x).flatten(1))
            labels.append(y)
    return sklearn_purity(torch.cat(vectors).numpy(), torch.cat(labels).numpy(), k=5)


def test_fit_of_a_compiled_module_captures_every_layer_with_eager_numbers(tmp_path: Any, small_data: Any) -> None:
    """Why: after the sanity check no hook fired; every layer but `input` disappeared."""
    pl.seed_everything(0, verbose=False)
    module, visualizer = TinyNet(), _visualizer(["input", "conv2", "pool"])
    compiled = torch.compile(module, backend="eager")
    module.eval()
    with torch.no_grad():  # compiled as validation runs it, before any hook is added
        compiled(torch.rand(32, 3, 32, 32))
    trainer = tiny_trainer(tmp_path, callbacks=[visualizer])
    trainer.fit(compiled, datamodule=small_data)
    metrics = trainer.callback_metrics
    assert {"featviz/knn_purity@5/conv2", "featviz/knn_purity@5/pool"} <= set(metrics)
    assert len([row for row in visualizer.history if row["layer"] == "pool"]) == 2  # both epochs
    module.eval()
    expected = _eager_purity(
        lambda x: module.pool(module.relu2(module.conv2(module.relu1(module.bn1(module.conv1(x)))))), small_data
    )
    assert metrics["featviz/knn_purity@5/pool"].item() == pytest.approx(expected, abs=1e-6)


class CompiledInside(pl.LightningModule):
    """`self.net = torch.compile(net)`: the modules sit under `net._orig_mod`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        inner = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )  # fmt: skip
        self.net = torch.compile(inner, backend="eager")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_auto_layers_of_a_compiled_net_are_its_stages_named_without_orig_mod(tmp_path: Any, small_data: Any) -> None:
    """Why: with `self.net = torch.compile(net)` (compiled before), "auto" chose `input` and `net` (the logits)."""
    pl.seed_everything(0, verbose=False)
    module = CompiledInside().eval()
    with torch.no_grad():  # the architecture compiled in this process before fit, as validation runs it
        module(torch.rand(32, 3, 32, 32))
    module.train()
    visualizer = _visualizer()
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[visualizer])
    trainer.fit(module, datamodule=small_data)
    layers = list(visualizer._run.paths.values())
    assert layers == ["input", "1", "4"], layers  # a stage and the pooled feature, not `net` (its logits)
    inner = module.net._orig_mod.eval()
    expected = _eager_purity(lambda x: inner[4](inner[3](inner[2](inner[1](inner[0](x))))), small_data)
    assert trainer.callback_metrics["featviz/knn_purity@5/4"].item() == pytest.approx(expected, abs=1e-6)
    assert np.isfinite(trainer.callback_metrics["featviz/knn_purity@5/1"].item())
