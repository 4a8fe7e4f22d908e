"""When the callback analyses (`every_n_epochs` with `check_val_every_n_epoch`) and which targets it takes: class ids
only — float, multi-hot and integer-valued regression targets get one clear message, nothing is logged as purity
and training goes on."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyNet, tiny_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_featviz import FeatureVisualizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _visualizer(**kwargs: Any) -> FeatureVisualizer:
    options = dict(k=5, overhead=None, maps=False, projector=False, wrong_cluster=False, dashboard=False)
    return FeatureVisualizer(["input", "hidden"], **{**options, **kwargs})


def test_every_n_epochs_counts_validation_runs_with_check_val_every_n_epoch(tmp_path: Any, small_data: Any) -> None:
    """Why: `every_n_epochs=2` with `check_val_every_n_epoch=2` validated at epochs 1, 3 and analysed none."""
    visualizer = FeatureVisualizer(["pool"], k=5, every_n_epochs=2, overhead=None, maps=False, dashboard=False)
    trainer = tiny_trainer(tmp_path, max_epochs=4, check_val_every_n_epoch=2, callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)
    assert sorted({row["epoch"] for row in visualizer.history}) == [1, 3]


def test_a_fit_that_never_validates_says_so_once(tmp_path: Any, small_data: Any) -> None:
    visualizer = FeatureVisualizer(["pool"], k=5, overhead=None, maps=False, dashboard=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1, check_val_every_n_epoch=2, callbacks=[visualizer])
    with pytest.warns(UserWarning, match=r"validates every 2 .*nothing will be analysed"):
        trainer.fit(TinyNet(), datamodule=small_data)
    assert visualizer.history == []


class Regressor(pl.LightningModule):
    """An MLP with ``outputs`` values per sample, trained with ``loss`` on whatever targets the data has."""

    def __init__(self, outputs: int, loss: Any):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(16, outputs)
        self.loss = loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.hidden(x))
        return out.squeeze(1) if out.shape[1] == 1 else out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _targets(kind: str) -> tuple[torch.Tensor, int, Any]:
    generator = torch.Generator().manual_seed(0)
    if kind == "float":
        return torch.rand(64, generator=generator), 1, F.mse_loss
    if kind == "integer":  # counts 0..20 regressed by one output
        return torch.randint(0, 21, (64,), generator=generator), 1, lambda out, y: F.mse_loss(out, y.float())
    return (torch.rand(64, 4, generator=generator) > 0.5).float(), 4, F.binary_cross_entropy_with_logits


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("float", r"float targets \(regression\).*single-label classifiers"),
        ("integer", r"integer-valued regression targets, not class ids.*single-label classifiers"),
        ("multi_hot", r"multi-hot labels .*multi-label.*single-label classifiers"),
    ],
)
def test_targets_that_are_not_class_ids_get_one_message_and_no_purity(tmp_path: Any, kind: str, match: str) -> None:
    """Why: integer regression targets got a purity logged; float and multi-hot ones a TypeError saying "argmax".
    Without a sanity check (where such labels fail before training) the run goes on and nothing is logged."""
    targets, outputs, loss = _targets(kind)
    data = TensorDataset(torch.rand(64, 6, generator=torch.Generator().manual_seed(1)), targets)
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[_visualizer()], num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=match) as caught:
        trainer.fit(Regressor(outputs, loss), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    assert trainer.current_epoch == 2  # training went on
    assert not [tag for tag in trainer.callback_metrics if tag.startswith("featviz/")]
    assert len([w for w in caught if "not class ids" in str(w.message) or "Expected labels" in str(w.message)]) == 1


@pytest.mark.parametrize(("kind", "match"), [("float", r"float targets \(regression\)"), ("multi_hot", "multi-hot")])
def test_the_sanity_check_refuses_float_and_multi_hot_targets_before_training(tmp_path: Any, kind: str, match: str):
    targets, outputs, loss = _targets(kind)
    data = TensorDataset(torch.rand(64, 6, generator=torch.Generator().manual_seed(1)), targets)
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[_visualizer()])
    with pytest.raises(TypeError, match=match + r".*single-label classifiers.*Hint: "):
        trainer.fit(Regressor(outputs, loss), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))


def test_named_layers_of_an_unknown_token_model_are_pooled_as_its_head_pools(tmp_path: Any) -> None:
    """Why: identification ran for `layers="auto"` only; a named token layer of a model no library describes, with a
    class-token-like prefix, got token 0 where the head reads the mean of the patch tokens after 2 prefix tokens."""
    from test_layouts import PrefixTokens

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = PrefixTokens("avg")
            self.net.cls_token = nn.Parameter(torch.zeros(1, 1, 16))  # unused: the old rule would read token 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    class BankSpy(FeatureVisualizer):
        bank: Any = None

        def _analyse(self, trainer: Any, pl_module: Any, bank: Any) -> Any:
            self.bank = bank
            return super()._analyse(trainer, pl_module, bank)

    torch.manual_seed(0)
    images, labels = torch.rand(24, 3, 16, 16), torch.arange(24) % 3
    module = Classifier().eval()
    visualizer = BankSpy(["net.encoder"], k=3, overhead=None, maps=False, projector=False, wrong_cluster=False)
    trainer = tiny_trainer(tmp_path, callbacks=[visualizer])
    trainer.validate(module, DataLoader(TensorDataset(images, labels), batch_size=8))
    net = module.net
    with torch.no_grad():
        tokens = net.encoder(
            torch.cat([net.prefix.expand(len(images), -1, -1), net.embed(images).flatten(2).transpose(1, 2)], 1)
        )
    rows = visualizer.bank.indices.long()
    torch.testing.assert_close(visualizer.bank.vectors["net.encoder"].float(), tokens[:, 2:].mean(dim=1)[rows])
