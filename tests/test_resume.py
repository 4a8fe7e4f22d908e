"""Resuming from a checkpoint continues the callback's series, maps and projector without duplicates or gaps;
``trainer.validate(ckpt_path=...)`` analyses the checkpoint's weights; old checkpoints still load."""

import csv
import glob
from pathlib import Path

import torch
from conftest import TinyNet, tiny_trainer
from google.protobuf import text_format
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch.utils.data import DataLoader

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.analysis.dynamics import SampleHistory, dynamics_words
from lightning_featviz.analysis.history import DYNAMICS_CSV_COLUMNS
from lightning_featviz.demo.model import ClassificationData

LAYERS = ["input", "pool"]


def _visualizer() -> FeatureVisualizer:
    return FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=80,
        maps=MapOptions(dims=[2], every_n_epochs=1),
        outputs=OutputOptions(confusion=False),
    )


class _InOrder(ClassificationData):
    """The training batches in the same order every epoch and every run (the shuffle's RNG is not in a
    checkpoint): a resumed fit trains exactly as an uninterrupted one."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size)


def _fit(tmp_path, data, max_epochs, ckpt_path=None, visualizer=None):
    visualizer = visualizer or _visualizer()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0)
    logger = TensorBoardLogger(tmp_path, version=0)  # the same run directory, as a resumed run would use
    trainer = tiny_trainer(
        tmp_path, max_epochs=max_epochs, logger=logger, callbacks=[visualizer, checkpoint], enable_checkpointing=True
    )
    torch.manual_seed(0)
    trainer.fit(TinyNet(), datamodule=data, ckpt_path=ckpt_path)
    return trainer, visualizer


def _all_events(log_dir) -> EventAccumulator:
    """Every event file of the run directory (a resumed run adds the logger's and the callback's), read in order by
    TensorBoard's reader."""
    assert len(glob.glob(f"{log_dir}/events.out.tfevents.*")) == 4
    assert len(glob.glob(f"{log_dir}/events.out.tfevents.*.featviz")) == 2
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_a_resumed_run_continues_its_series_projector_and_sample_history_without_duplicates(tmp_path, small_data):
    small_data = _InOrder(small_data.train, small_data.val, small_data.classes, batch_size=32)
    _fit(tmp_path, small_data, max_epochs=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["callbacks"]
    state = next(value for key, value in saved.items() if key.startswith("FeatureVisualizer"))
    assert len(state["history"]) == 2 * len(LAYERS) and state["maps"]  # history and maps for warm starts
    assert state["dynamics"]["pool"]["epochs"] == [0, 1]  # the label-issue layer's per-sample history

    trainer, visualizer = _fit(tmp_path, small_data, max_epochs=4, ckpt_path=last)
    assert [row["epoch"] for row in visualizer.history] == [0, 0, 1, 1, 2, 2, 3, 3]  # restored, then continued
    events = _all_events(trainer.log_dir)
    for tag in ("featviz/knn_purity@5/pool", "featviz/tsne_displacement/pool/2d"):
        steps = [event.step for event in events.Scalars(tag)]
        assert steps == sorted(set(steps)), f"{tag} has a duplicate step: {steps}"
        assert len(steps) == (4 if "purity" in tag else 3)  # displacement exists from the second map on
    map_steps = [event.step for event in events.Images("featviz/tsne_2d/pool")]
    assert len(map_steps) == 4 == len(set(map_steps))
    config = ProjectorConfig()
    text_format.Parse((tmp_path / "lightning_logs" / "version_0" / "projector_config.pbtxt").read_text(), config)
    names = [embedding.tensor_name for embedding in config.embeddings]
    assert len(names) == len(set(names))  # each entry once ...
    # ... the latest epoch's, and epoch 0's kept from before the resume (projector.keep_every_n_epochs=5)
    pool = {name for name in names if name.endswith("/pool/vectors")}
    assert pool == {"latest/epoch_003/pool/vectors", "previous/epoch_000/pool/vectors"}

    # the per-sample history continued: the same as an uninterrupted 4-epoch fit's (no maps there: they do not
    # change the history)
    uninterrupted = FeatureVisualizer(LAYERS, overhead=None, k=5, max_samples=80, maps=False, projector=False)
    _fit(tmp_path / "uninterrupted", small_data, max_epochs=4, visualizer=uninterrupted)
    resumed, whole = visualizer.state_dict()["dynamics"], uninterrupted.state_dict()["dynamics"]
    assert resumed.keys() == whole.keys() == {"pool"} and resumed["pool"]["epochs"] == [0, 1, 2, 3]
    for name, value in whole["pool"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed["pool"][name].nan_to_num(-9), value.nan_to_num(-9)), name
        else:
            assert resumed["pool"][name] == value, name
    # the label-issue CSV has the history's columns, its words those of the history; a cartography figure each
    # epoch from the second
    history = SampleHistory(10)
    history.load_state_dict(resumed["pool"])
    with open(Path(trainer.log_dir) / "featviz_label_issues" / "epoch_003_pool.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 80 and tuple(rows[0])[-len(DYNAMICS_CSV_COLUMNS) :] == DYNAMICS_CSV_COLUMNS
    position = {int(index): i for i, index in enumerate(history.indices.tolist())}
    for row in rows:
        assert row["epochs_seen"] == "4" and 0 <= float(row["mean_label_probability"]) <= 1
        assert row["dynamics"] == dynamics_words(history, position[int(row["index"])], small_data.classes)
    assert {row["dynamics"].split(" ")[0] for row in rows} <= {"learnt:", "consistently", "unstable:", "predicted"}
    assert len(events.Images("featviz/wrong_cluster_cartography/pool")) == 3  # not at epoch 0: one epoch, no spread


def test_a_checkpoint_without_the_callback_state_still_resumes(tmp_path, small_data):
    _fit(tmp_path, small_data, max_epochs=1)
    old = tmp_path / "checkpoints" / "old.ckpt"
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["callbacks"] = {
        k: v for k, v in checkpoint["callbacks"].items() if not k.startswith("FeatureVisualizer")
    }
    torch.save(checkpoint, old)
    _, visualizer = _fit(tmp_path, small_data, max_epochs=2, ckpt_path=old)
    assert [row["epoch"] for row in visualizer.history] == [1, 1]


def test_validate_from_a_checkpoint_analyses_its_weights(tmp_path, small_data):
    trainer, fitted = _fit(tmp_path, small_data, max_epochs=1)
    visualizer = _visualizer()
    validator = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path, version=1), callbacks=[visualizer])
    validator.validate(TinyNet(), datamodule=small_data, ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    purity = validator.callback_metrics["featviz/knn_purity@5/pool"].item()
    # the fresh TinyNet's own weights would give another value: the checkpoint's were analysed
    assert purity == fitted.history[-1]["knn_purity"]
