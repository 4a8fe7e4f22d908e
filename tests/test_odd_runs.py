"""Runs that are not a plain fit: fast_dev_run, sanity checks of every length, intra-epoch validation,
several validation loaders, limited batches, mixed precision, models whose forward returns a tuple or a dict.
(``trainer.validate(ckpt_path=...)`` is in test_resume.py.)"""

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

import lightning_featviz
from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, OutputOptions

LAYERS = ["input", "conv2", "pool"]


def test_fast_dev_run_is_skipped_quietly(tmp_path, small_data, recwarn):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5)
    tiny_trainer(tmp_path, fast_dev_run=True, logger=False, callbacks=[visualizer]).fit(
        TinyNet(), datamodule=small_data
    )
    assert visualizer.history == []  # a smoke test of the user's code: nothing analysed, nothing written
    assert not list(tmp_path.rglob("featviz*"))
    package = Path(lightning_featviz.__file__).parent.resolve()  # (not a name in the path: a clone's may have it)
    ours = [
        str(w.message)
        for w in recwarn
        if Path(w.filename).resolve().is_relative_to(package) or "FeatureVisualizer" in str(w.message)
    ]
    assert ours == []  # and nothing said about it


@pytest.mark.parametrize("sanity_steps", [0, 2, -1])
def test_the_sanity_check_is_never_analysed_whatever_its_length(tmp_path, small_data, sanity_steps):
    visualizer = FeatureVisualizer(
        LAYERS, overhead=None, k=5, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    trainer = tiny_trainer(
        tmp_path, num_sanity_val_steps=sanity_steps, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer]
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    assert [row["epoch"] for row in visualizer.history] == [0, 0, 0, 1, 1, 1]
    assert len(read_events(tmp_path).Scalars("featviz/knn_purity@5/pool")) == 2


def test_validation_several_times_per_epoch_analyses_each_time_at_lightnings_steps(tmp_path, small_data):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, maps=MapOptions(every_n_epochs=None))
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
    visualizer = FeatureVisualizer(
        LAYERS, overhead=None, k=5, capture=CaptureOptions(dataloader_idx=1), maps=MapOptions(every_n_epochs=None)
    )
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer])
    trainer.fit(Net(), train_dataloaders=small_data.train_dataloader(), val_dataloaders=[first, second])
    assert len(visualizer.history) == len(LAYERS)
    assert (
        visualizer.wrong_cluster_indices
        and max(max(v, default=0) for v in visualizer.wrong_cluster_indices.values()) < 40
    )


def test_limited_validation_batches_analyse_what_was_seen(tmp_path, small_data):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, maps=MapOptions(every_n_epochs=None))
    tiny_trainer(tmp_path, max_epochs=1, limit_val_batches=2, logger=False, callbacks=[visualizer]).fit(
        TinyNet(), datamodule=small_data
    )
    assert len(visualizer.history) == len(LAYERS)
    flagged = [index for indices in visualizer.wrong_cluster_indices.values() for index in indices]
    assert flagged and max(flagged) < 2 * small_data.batch_size  # only the two batches validated


class CapturedDtypes(pl.Callback):
    """Listed before the visualizer: at each validation batch's end, before the visualizer takes its vectors,
    records the dtype ``conv2`` ran in and what the visualizer captured from it, against the layer's output
    pooled in float32 by a hook of its own (before the in-place ReLU that follows)."""

    def __init__(self, visualizer: FeatureVisualizer):
        self.visualizer, self.raw_dtypes, self.captured_dtypes, self.largest_error = visualizer, set(), set(), 0.0
        self.reference = None

    def on_validation_start(self, trainer, pl_module):
        def record(module, args, output):
            self.raw_dtypes.add(output.dtype)
            self.reference = output.detach().float().mean(dim=(2, 3)).cpu()

        pl_module.conv2.register_forward_hook(record)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        capture = self.visualizer._run.hooks
        if trainer.sanity_checking or capture is None or "conv2" not in capture.outputs:
            return
        captured = capture.outputs["conv2"]
        self.captured_dtypes.add(captured.dtype)
        self.largest_error = max(self.largest_error, float((captured - self.reference).abs().max()))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_activations_are_stored_as_float32(tmp_path, small_data, precision):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, maps=MapOptions(dims=[2]))
    probe = CapturedDtypes(visualizer)
    trainer = tiny_trainer(tmp_path, max_epochs=1, precision=precision, logger=False, callbacks=[probe, visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)
    assert probe.raw_dtypes and torch.float32 not in probe.raw_dtypes  # the layer really ran in half precision
    assert probe.captured_dtypes == {torch.float32}  # and its vectors were stored as float32
    assert probe.largest_error < 1e-2  # the same values (pooled in half precision, then widened)
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
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, maps=MapOptions(every_n_epochs=None))
    model = net()
    tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer]).fit(model, datamodule=small_data)
    assert len(visualizer.history) == len(LAYERS)
    assert all(0 <= row["knn_accuracy"] <= 1 for row in visualizer.history)
    exported = sorted(tmp_path.rglob("featviz_wrong_cluster/*.csv"))
    assert exported
    with open(exported[-1], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows  # an untrained net after one epoch: plenty of images in another class's cluster
    # Each row's prediction is the model's own class for that image (the weights did not change after validating).
    model.eval()
    with torch.no_grad():
        images = torch.stack([small_data.val[int(row["index"])][0] for row in rows])
        output = model(images)
        logits = output[0] if isinstance(output, tuple) else output["logits"]
    expected = [small_data.classes[int(c)] for c in logits.argmax(dim=1)]
    assert [row["prediction"] for row in rows] == expected  # an unknown prediction is written as ""
    correct = [str(prediction == row["label"]).lower() for prediction, row in zip(expected, rows, strict=True)]
    assert [row["correct"] for row in rows] == correct
