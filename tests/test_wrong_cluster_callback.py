"""Images in the wrong semantic cluster, found by real Trainer runs."""

import csv

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, read_events, tiny_trainer
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from lightning_featviz import FeatureVisualizer
from lightning_featviz.demo import ClassificationData, ImageClassifier

COLOURS = {"fries": (250, 200, 40), "salad": (40, 160, 60), "sushi": (235, 235, 235)}


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_on_an_image_folder_the_export_names_the_files_of_misfiled_images(tmp_path):
    # Three colour-coded classes; two salad-green pictures were filed under "fries".
    for name, colour in COLOURS.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(12):
            shade = tuple(max(0, c - 6 * i) for c in colour)
            Image.new("RGB", (32, 32), shade).save(tmp_path / "data" / name / f"{name}_{i}.png")
    for i in range(2):
        Image.new("RGB", (32, 32), (10, 130 + i, 30)).save(tmp_path / "data" / "fries" / f"misfiled_{i}.png")
    folder = ImageFolder(str(tmp_path / "data"), transform=transforms.ToTensor())
    data = ClassificationData(folder, folder, folder.classes, batch_size=8)
    visualizer = FeatureVisualizer(["input", "pool"], k=5, wrong_cluster_layer="input", tsne_every_n_epochs=None)
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    trainer.fit(TinyNet(num_classes=3), datamodule=data)

    rows = _read_csv(tmp_path / "lightning_logs" / "version_0" / "featviz_wrong_cluster" / "epoch_000_input.csv")
    assert {row["path"].rsplit("/", 1)[-1] for row in rows} == {"misfiled_0.png", "misfiled_1.png"}
    for row in rows:
        assert row["label"] == "fries" and row["cluster"] == "salad" and row["neighbours_in_cluster"] == "4"
        assert folder.samples[int(row["index"])][0] == row["path"]  # the index points at the same file
    events = read_events(tmp_path)
    assert events.Images("featviz/wrong_cluster/input")[0].width > 300
    text = events.Tensors("featviz/wrong_cluster_table/input/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.count("misfiled_") == 2 and text.startswith("| rank | index | path |")  # the text table
    share = events.Scalars("featviz/wrong_cluster_share@5/input")[0].value
    assert share == pytest.approx(2 / 38)


class Relabelled(Dataset):
    """A dataset with some labels replaced (label noise)."""

    def __init__(self, dataset, new_labels: dict[int, int]):
        self.dataset, self.new_labels, self.classes = dataset, new_labels, dataset.classes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        return image, self.new_labels.get(i, label)


@pytest.mark.slow
def test_flipped_labels_are_recovered_at_avgpool_and_not_in_pixel_space(tmp_path):
    data = ClassificationData.digits(batch_size=32)
    rng = np.random.default_rng(0)
    flipped = sorted(rng.choice(len(data.val), size=len(data.val) // 20, replace=False).tolist())  # 5%
    true_labels = {i: int(data.val[i][1]) for i in flipped}
    data.val = Relabelled(data.val, {i: (label + int(rng.integers(1, 10))) % 10 for i, label in true_labels.items()})

    pl.seed_everything(0)
    visualizer = FeatureVisualizer(
        ["input", "avgpool"], k=10, tsne_every_n_epochs=None, log_neighbour_grids=False, log_confusion=False
    )
    trainer = pl.Trainer(
        max_epochs=6,
        logger=TensorBoardLogger(tmp_path),
        callbacks=[visualizer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(ImageClassifier(num_classes=10), datamodule=data)

    found = {}
    for layer, indices in visualizer.wrong_cluster_indices.items():
        hits = len(set(indices) & set(flipped))
        found[layer] = (hits / len(flipped), hits / max(len(indices), 1))
    print("recall, precision:", found)
    recall, precision = found["avgpool"]
    assert recall >= 0.70 and precision >= 0.50
    assert found["input"][0] <= recall / 2  # pixel space finds far fewer of them

    # The exported list is the same set, and its rows point at the flipped images with their noisy labels.
    rows = _read_csv(tmp_path / "lightning_logs" / "version_0" / "featviz_wrong_cluster" / "epoch_005_avgpool.csv")
    assert [int(row["index"]) for row in rows] == visualizer.wrong_cluster_indices["avgpool"]
    assert all(int(row["label"]) == data.val[int(row["index"])][1] for row in rows)
    # a flipped image sits, nearly always, in the cluster of the class it really shows
    home = [int(row["cluster"]) == true_labels[int(row["index"])] for row in rows if int(row["index"]) in true_labels]
    assert sum(home) >= 0.9 * len(home)


def test_wrong_cluster_layer_must_be_a_captured_layer(tmp_path, small_data):
    visualizer = FeatureVisualizer(["input", "pool"], wrong_cluster_layer="conv2")
    with pytest.raises(ValueError, match=r"`wrong_cluster_layer` to be one of the captured layers \['input', 'pool'\]"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=small_data)
    assert torch.is_grad_enabled()
