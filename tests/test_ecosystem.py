"""The callback at home in Lightning's ecosystem: both package namespaces, and LightningCLI configs."""

import lightning.pytorch as L
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from conftest import TinyNet, read_events
from lightning.pytorch.loggers import TensorBoardLogger as UnifiedTensorBoardLogger
from pytorch_lightning.cli import LightningCLI
from torch import nn
from torch.utils.data import DataLoader, Subset

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, ProjectorOptions
from lightning_featviz.demo.datasets import ColouredDigits
from lightning_featviz.demo.model import ClassificationData


class UnifiedNet(L.LightningModule):
    """A LightningModule of the unified ``lightning`` package (``lightning.pytorch``)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_the_callback_is_a_callback_of_both_namespaces():
    visualizer = FeatureVisualizer(overhead=None)
    assert isinstance(visualizer, pl.Callback) and isinstance(visualizer, L.Callback)


def test_a_lightning_pytorch_trainer_runs_the_callback(tmp_path, digits_val):
    visualizer = FeatureVisualizer(
        ["input", "features.1", "features"], overhead=None, k=5, max_samples=60, maps=MapOptions(dims=[2])
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        logger=UnifiedTensorBoardLogger(tmp_path),
        callbacks=[visualizer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train, val = Subset(digits_val, range(64)), Subset(digits_val, range(64, 160))
    trainer.fit(UnifiedNet(), DataLoader(train, batch_size=32), DataLoader(val, batch_size=32))
    assert "featviz/knn_purity@5/features" in trainer.callback_metrics
    events = read_events(tmp_path)
    assert len(events.Scalars("featviz/knn_purity@5/features.1")) == 2
    assert len(events.Images("featviz/tsne_2d/features")) == 2


class DigitsData(ClassificationData):
    """The built-in digits, sized from plain arguments (as a config file gives them)."""

    def __init__(self, train_size: int = 96, val_size: int = 96, batch_size: int = 32):
        digits = ColouredDigits("val", seed=0)
        train, val = Subset(digits, range(train_size)), Subset(digits, range(train_size, train_size + val_size))
        super().__init__(train, val, digits.classes, batch_size)


def test_lightning_cli_configures_the_callback_and_its_option_groups_from_yaml(tmp_path):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "default_root_dir": str(tmp_path),
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path)},
            },
            "callbacks": [
                {
                    "class_path": "lightning_featviz.FeatureVisualizer",
                    "init_args": {
                        "layers": {"input": "pixels", "pool": "pool"},
                        "k": 5,
                        "max_samples": 60,
                        "overhead": None,  # the schedule as written: the one epoch is the last, it has a map
                        "maps": {"perplexity": 20, "dims": [2]},
                        "projector": {"keep_every_n_epochs": 2},
                        "wrong_cluster": False,
                        "capture": {"input_size": 8, "metric": "cosine"},
                        "resources": {"background": False},
                    },
                }
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(TinyNet, DigitsData, args=["fit", "--config", str(path)], save_config_callback=None)
    visualizer = next(c for c in cli.trainer.callbacks if isinstance(c, FeatureVisualizer))
    assert (
        visualizer.layers == {"input": "pixels", "pool": "pool"} and visualizer.k == 5 and visualizer.overhead is None
    )
    assert visualizer.maps == MapOptions(perplexity=20, dims=[2]) and visualizer.projector == ProjectorOptions(2)
    assert visualizer.wrong_cluster is None and visualizer.resources.background is False
    assert visualizer.capture == CaptureOptions(input_size=8, metric="cosine")
    assert {"featviz/knn_purity@5/pixels", "featviz/knn_purity@5/pool"} <= set(cli.trainer.callback_metrics)
    assert len(read_events(tmp_path).Images("featviz/tsne_2d/pool")) == 1
