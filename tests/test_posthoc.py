"""Post-hoc analysis: `featviz analyse` on a generated ImageFolder and a freshly trained checkpoint."""

import json
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import read_events
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import Subset

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.cli import main
from lightning_featviz.dashboard.data import find_runs, read_index
from lightning_featviz.demo.datasets import ColouredDigits, save_image_folder
from lightning_featviz.demo.model import ClassificationData, ImageClassifier
from lightning_featviz.loading import image_folder
from lightning_featviz.posthoc import analyse_checkpoint

LAYERS = ["input", "layer4", "avgpool"]
in_training: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """150 digits written as an ImageFolder, and a ResNet-18 trained briefly on other digits (a Lightning
    checkpoint) with the callback watching those 150 as its validation set."""
    root = tmp_path_factory.mktemp("posthoc")
    digits = ColouredDigits("val", seed=0)
    folder = save_image_folder(Subset(digits, range(500, 650)), root / "images", digits.classes)
    # validated on the folder's own images, read as the analysis reads them with --no-normalize
    val = image_folder(folder, 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    data = ClassificationData(Subset(digits, range(300)), val, digits.classes, 32)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints")
    # dashboard=False: the switch is tested here, where a run is made anyway
    watching = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        dashboard=False,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    pl.Trainer(
        max_epochs=2,
        limit_train_batches=4,
        callbacks=[checkpoint, watching],
        logger=False,
        enable_progress_bar=False,
        default_root_dir=root,  # without a logger the callback writes its files there
    ).fit(ImageClassifier(num_classes=10, arch="resnet18"), datamodule=data)
    in_training["purity"] = {row["layer"]: row["knn_purity"] for row in watching.history if row["epoch"] == 1}
    in_training["dashboard_runs"] = find_runs(root)
    # the same images in a train/val tree, and a checkpoint that says it started from ImageNet weights
    save_image_folder(Subset(digits, range(650, 700)), root / "tree" / "train", digits.classes)
    save_image_folder(Subset(digits, range(500, 650)), root / "tree" / "val", digits.classes)
    pretrained = torch.load(checkpoint.best_model_path, weights_only=True)
    pretrained["hyper_parameters"]["weights"] = "DEFAULT"  # loading must not try to download them
    torch.save(pretrained, root / "pretrained.ckpt")
    return {"--arch": (checkpoint.best_model_path, folder), "--module": (root / "pretrained.ckpt", root / "tree")}


@pytest.mark.parametrize(
    "model", [["--arch", "resnet18"], ["--module", "lightning_featviz.demo.model.ImageClassifier"]]
)
def test_the_analyse_command_writes_a_tensorboard_log_dir_and_an_html_report(tmp_path, trained, model, capsys):
    checkpoint, folder = trained[model[0]]  # --module: a train/val tree, whose val folder is analysed
    out = tmp_path / "analysis"
    layers = LAYERS
    argv = ["analyse", "--data", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), *model]
    quiet = ["--quiet"] if "--arch" in model else []  # the other run shows its progress bar over the data
    options = ["--image-size", "32", "--no-normalize", "--layers", *layers, "--k", "5"]  # as the model trained
    assert main([*argv, *options, *quiet]) == 0
    printed = capsys.readouterr()
    assert "kNN purity@5 per layer" in printed.out
    # Lightning's progress bar (tqdm's, or rich's where rich is installed) prints its rate; --quiet has none
    assert (re.search(r"Validation.*it/s", printed.out) is not None) == (not quiet)

    events = read_events(out)  # TensorBoard's own reader opens the log dir
    for layer in layers:
        assert len(events.Scalars(f"featviz/knn_purity@5/{layer}")) == 1
    for layer, value in in_training["purity"].items():  # the same analysis as during training, same images
        assert events.Scalars(f"featviz/knn_purity@5/{layer}")[0].value == pytest.approx(value, abs=0.002)
    metadata = next((out / "featviz_projector" / "metadata").glob("*.tsv")).read_text().splitlines()
    classes = {line.split("\t")[0] for line in metadata[1:]}
    assert classes == {f"class {digit}" for digit in range(10)}  # the digit folders, never "train" or "val"
    assert events.Images("featviz/tsne_2d/avgpool") and (out / "projector_config.pbtxt").exists()

    page = (out / "report" / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    kinds = {source.split("/")[1] for source in images}
    assert {"neighbours", "tsne_2d", "tsne_3d", "neighbour_confusion", "purity_by_depth"} <= kinds
    assert "wrong_cluster_cartography" not in kinds  # one epoch: every sample's variability is 0, nothing to show
    assert all((out / "report" / source).is_file() for source in images)
    assert "featviz/knn_purity@5/avgpool" in page

    # the output is a run like any other for TensorBoard's FEATVIZ tab: every layer, each image's path
    dashboard = find_runs(out)
    assert list(dashboard) == ["."]
    index = read_index(dashboard["."])
    assert [layer["name"] for layer in index["epochs"][0]["layers"]] == layers
    samples = json.loads((dashboard["."] / f"samples_{index['epochs'][0]['samples']}.json").read_text())
    assert len(samples["paths"]) == 150 and all(Path(path).is_file() for path in samples["paths"])


def test_dashboard_false_writes_no_files_for_the_featviz_tab(trained):
    assert in_training["dashboard_runs"] == {}


def test_analyse_needs_exactly_one_way_to_build_the_model(trained):
    checkpoint, folder = trained["--arch"]
    with pytest.raises(SystemExit, match="either --arch .* or --module"):
        main(["analyse", "--data", str(folder), "--checkpoint", checkpoint])


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("data", r"expected `--data` to be an ImageFolder directory .*, but got '.*nothere'"),
        ("checkpoint", r"expected `--checkpoint` to be a checkpoint file, but got '.*missing.ckpt'"),
        (
            "module",
            r"Expected `module` to be an importable class, but got 'no_such_pkg.Net' \(ModuleNotFoundError[\s\S]*Hint",
        ),
    ],
)
def test_the_analyse_command_says_which_input_is_missing_before_loading_anything(tmp_path, what, message):
    checkpoint, folder = tmp_path / "model.ckpt", tmp_path / "images"
    checkpoint.touch()
    folder.mkdir()
    args = {
        "--data": str(folder),
        "--checkpoint": str(checkpoint),
        "--module": "lightning_featviz.demo.model.ImageClassifier",
    }
    args |= {
        "data": {"--data": str(tmp_path / "nothere")},
        "checkpoint": {"--checkpoint": str(tmp_path / "missing.ckpt")},
        "module": {"--module": "no_such_pkg.Net"},
    }[what]
    with pytest.raises(SystemExit, match=message):
        main(["analyse", *[part for pair in args.items() for part in pair]])


def test_analyse_checkpoint_needs_exactly_one_of_arch_and_module(trained, tmp_path):
    checkpoint, folder = trained["--arch"]
    for arch, module in [(None, None), ("resnet18", "lightning_featviz.demo.model.ImageClassifier")]:
        with pytest.raises(ValueError, match="exactly one of `arch` and `module`"):
            analyse_checkpoint(checkpoint, folder, tmp_path, arch=arch, module=module)
