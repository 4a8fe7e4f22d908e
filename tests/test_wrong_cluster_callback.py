"""Images in the wrong semantic cluster, found by real Trainer runs."""

import csv

import pytest
import torch
from conftest import TinyNet, read_events, tiny_trainer
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision import transforms
from torchvision.datasets import ImageFolder

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, WrongClusterOptions
from lightning_featviz.demo.model import ClassificationData

COLOURS = {"fries": (250, 200, 40), "salad": (40, 160, 60), "sushi": (235, 235, 235)}


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def misfiled_folder(root):
    """An ImageFolder of three colour-coded classes, twelve shades each, and two salad-green pictures filed
    under "fries"."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            shade = tuple(max(0, c - 6 * i) for c in colour)
            Image.new("RGB", (32, 32), shade).save(root / name / f"{name}_{i}.png")
    for i in range(2):
        Image.new("RGB", (32, 32), (10, 130 + i, 30)).save(root / "fries" / f"misfiled_{i}.png")
    return ImageFolder(str(root), transform=transforms.ToTensor())


def fit_on_misfiled_folder(tmp_path, logger, **options) -> ImageFolder:
    """One epoch of TinyNet trained and validated on :func:`misfiled_folder`, wrong cluster at the input layer, k = 5,
    every output (no maps); returns the folder."""
    folder = misfiled_folder(tmp_path / "data")
    data = ClassificationData(folder, folder, folder.classes, batch_size=8)
    visualizer = FeatureVisualizer(
        ["input", "pool"],
        overhead=None,
        k=5,
        wrong_cluster=WrongClusterOptions(layer="input"),
        maps=MapOptions(every_n_epochs=None),
        **options,
    )
    tiny_trainer(tmp_path, max_epochs=1, logger=logger, callbacks=[visualizer]).fit(
        TinyNet(num_classes=3), datamodule=data
    )
    return folder


def test_on_an_image_folder_the_export_names_the_files_of_misfiled_images(tmp_path):
    # Three colour-coded classes; two salad-green pictures were filed under "fries".
    folder = fit_on_misfiled_folder(tmp_path, TensorBoardLogger(tmp_path))

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
    issues = _read_csv(tmp_path / "lightning_logs" / "version_0" / "featviz_label_issues" / "epoch_000_input.csv")
    assert len(issues) == 38  # the relabelling list ranks every sample
    assert {row["path"].rsplit("/", 1)[-1] for row in issues[:2]} == {"misfiled_0.png", "misfiled_1.png"}
    assert all(row["given_label"] == "fries" and row["suggested_label"] == "salad" for row in issues[:2])
    text = events.Tensors("featviz/label_issues/input/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("| rank | index | given_label | suggested_label | score | category |")


def test_wrong_cluster_layer_must_be_a_captured_layer(tmp_path, small_data):
    visualizer = FeatureVisualizer(["input", "pool"], overhead=None, wrong_cluster=WrongClusterOptions(layer="conv2"))
    with pytest.raises(ValueError, match=r"`wrong_cluster.layer` to be one of the captured layers \['input', 'pool'\]"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=small_data)
    assert torch.is_grad_enabled()


def test_with_the_training_reference_training_labels_get_their_own_relabelling_list(tmp_path):
    # Training and validation are the same folder: two salad-green pictures filed under "fries".
    folder = fit_on_misfiled_folder(tmp_path, False, capture=CaptureOptions(reference="train"))

    output = tmp_path / "featviz_label_issues"
    assert len(_read_csv(output / "epoch_000_input.csv")) == len(folder)  # validation samples
    rows = _read_csv(output / "epoch_000_input_train.csv")  # training samples, leave-one-out among themselves
    assert len(rows) == len(folder)
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= float(row["model_probability"]) <= 1 for row in rows)  # TinyNet's in-sample softmax
    top = rows[:2]
    assert {folder.samples[int(row["index"])][0].rsplit("/", 1)[-1] for row in top} == {
        "misfiled_0.png",
        "misfiled_1.png",
    }
    assert all(row["given_label"] == "fries" and row["suggested_label"] == "salad" for row in top)
