"""Runs that are not a plain fit: fast_dev_run, sanity checks of every length, intra-epoch validation,
several validation loaders, limited batches, mixed precision, models whose forward returns a tuple or a dict.
(``trainer.validate(ckpt_path=...)`` is in test_resume.py.)"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_featviz import FeatureVisualizer

LAYERS = ["input", "conv2", "pool"]


def test_fast_dev_run_is_skipped_quietly(tmp_path, small_data):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5)
    tiny_trainer(tmp_path, fast_dev_run=True, logger=False, callbacks=[visualizer]).fit(
        TinyNet(), datamodule=small_data
    )
    assert visualizer.history == []  # a smoke test of the user's code: nothing analysed, nothing written


@pytest.mark.parametrize("sanity_steps", [0, 2, -1])
def test_the_sanity_check_is_never_analysed_whatever_its_length(tmp_path, small_data, sanity_steps):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, tsne_every_n_epochs=None, log_confusion=False)
    trainer = tiny_trainer(
        tmp_path, num_sanity_val_steps=sanity_steps, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer]
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    assert [row["epoch"] for row in visualizer.history] == [0, 0, 0, 1, 1, 1]
    assert len(read_events(tmp_path).Scalars("featviz/knn_purity@5/pool")) == 2


def test_validation_several_times_per_epoch_analyses_each_time_at_lightnings_steps(tmp_path, small_data):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, tsne_every_n_epochs=None)
    trainer = tiny_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=6,
        val_check_interval=3,
        logger=TensorBoardLogger(tmp_path),
        callbacks=[visualizer],
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    assert len(visualizer.history) == 2 * len(LAYERS)
    events = read_events(tmp_path)
    steps = [v.step for v in events.Scalars("featviz/knn_purity@5/pool")]
    assert len(steps) == 2 and steps == [v.step for v in events.Scalars("val_loss")]  # aligned with Lightning's


def test_the_chosen_of_several_validation_loaders_is_analysed(tmp_path, small_data):
    class Net(TinyNet):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x), y))

    small_data.setup("fit")
    first = small_data.val_dataloader()
    second = DataLoader(torch.utils.data.Subset(small_data.val, range(40)), batch_size=8)
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, dataloader_idx=1, tsne_every_n_epochs=None)
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer])
    trainer.fit(Net(), train_dataloaders=small_data.train_dataloader(), val_dataloaders=[first, second])
    assert len(visualizer.history) == len(LAYERS)
    assert (
        visualizer.wrong_cluster_indices
        and max(max(v, default=0) for v in visualizer.wrong_cluster_indices.values()) < 40
    )


def test_limited_validation_batches_analyse_what_was_seen(tmp_path, small_data):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, tsne_every_n_epochs=None)
    tiny_trainer(tmp_path, max_epochs=1, limit_val_batches=2, logger=False, callbacks=[visualizer]).fit(
        TinyNet(), datamodule=small_data
    )
    assert len(visualizer.history) == len(LAYERS)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_activations_are_stored_as_float32(tmp_path, small_data, precision):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, tsne_dims=[2])
    trainer = tiny_trainer(tmp_path, max_epochs=1, precision=precision, logger=False, callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)
    assert len(visualizer.history) == len(LAYERS)
    assert all(0 <= row["knn_purity"] <= 1 for row in visualizer.history)


class TupleNet(TinyNet):
    def forward(self, x):
        return super().forward(x), x.mean()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x)[0], y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x)[0], y))


class DictNet(TinyNet):
    def forward(self, x):
        return {"logits": super().forward(x)}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)["logits"]
        self.log("val_loss", F.cross_entropy(logits, y))
        return {"logits": logits}


@pytest.mark.parametrize("net", [TupleNet, DictNet])
def test_models_returning_a_tuple_or_a_dict_get_predictions_in_the_export(tmp_path, small_data, net):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, tsne_every_n_epochs=None)
    tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer]).fit(net(), datamodule=small_data)
    assert len(visualizer.history) == len(LAYERS)
    assert all(0 <= row["knn_accuracy"] <= 1 for row in visualizer.history)
