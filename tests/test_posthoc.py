"""Post-hoc analysis: `featviz analyse` on a generated ImageFolder and a freshly trained checkpoint."""

import re

import pytest
import pytorch_lightning as pl
import torch
from conftest import read_events
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import Subset

from lightning_featviz.cli import main
from lightning_featviz.datasets import ColouredDigits, save_image_folder
from lightning_featviz.demo import ClassificationData, ImageClassifier
from lightning_featviz.posthoc import analyse_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-18 trained briefly on the digits (a Lightning checkpoint), and 150 other digits as an ImageFolder."""
    root = tmp_path_factory.mktemp("posthoc")
    digits = ColouredDigits("val", seed=0)
    data = ClassificationData(Subset(digits, range(300)), Subset(digits, range(300, 364)), digits.classes, 32)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints")
    pl.Trainer(
        max_epochs=1, limit_train_batches=4, callbacks=[checkpoint], logger=False, enable_progress_bar=False
    ).fit(ImageClassifier(num_classes=10, arch="resnet18"), datamodule=data)
    folder = save_image_folder(Subset(digits, range(500, 650)), root / "images", digits.classes)
    # the same images in a train/val tree, and a checkpoint that says it started from ImageNet weights
    save_image_folder(Subset(digits, range(650, 700)), root / "tree" / "train", digits.classes)
    save_image_folder(Subset(digits, range(500, 650)), root / "tree" / "val", digits.classes)
    pretrained = torch.load(checkpoint.best_model_path, weights_only=True)
    pretrained["hyper_parameters"]["weights"] = "DEFAULT"  # loading must not try to download them
    torch.save(pretrained, root / "pretrained.ckpt")
    return {"--arch": (checkpoint.best_model_path, folder), "--module": (root / "pretrained.ckpt", root / "tree")}


@pytest.mark.parametrize("model", [["--arch", "resnet18"], ["--module", "lightning_featviz.demo.ImageClassifier"]])
def test_the_analyse_command_writes_a_tensorboard_log_dir_and_an_html_report(tmp_path, trained, model, capsys):
    checkpoint, folder = trained[model[0]]  # --module: a train/val tree, whose val folder is analysed
    out = tmp_path / "analysis"
    layers = ["input", "layer4", "avgpool"]
    argv = ["analyse", "--data", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), *model]
    quiet = ["--quiet"] if "--arch" in model else []  # the other run shows its progress bar over the data
    assert main([*argv, "--image-size", "32", "--layers", *layers, "--k", "5", *quiet]) == 0
    printed = capsys.readouterr()
    assert "kNN purity@5 per layer" in printed.out
    assert ("Validation DataLoader 0: 100%" in printed.out) == (not quiet)

    events = read_events(out)  # TensorBoard's own reader opens the log dir
    for layer in layers:
        assert len(events.Scalars(f"featviz/knn_purity@5/{layer}")) == 1
    classes = {tag.rsplit("/", 1)[1] for tag in events.Tags()["scalars"] if "class_purity@5/avgpool" in tag}
    assert classes == {str(digit) for digit in range(10)}  # the digit folders, never "train" or "val"
    assert events.Images("featviz/tsne_2d/avgpool") and (out / "projector_config.pbtxt").exists()

    page = (out / "report" / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    kinds = {source.split("/")[1] for source in images}
    assert {"neighbours", "tsne_2d", "tsne_3d", "confusion", "purity_by_depth"} <= kinds
    assert all((out / "report" / source).is_file() for source in images)
    assert "featviz/knn_purity@5/avgpool" in page


def test_analyse_needs_exactly_one_way_to_build_the_model(trained):
    checkpoint, folder = trained["--arch"]
    with pytest.raises(SystemExit, match="either --arch .* or --module"):
        main(["analyse", "--data", str(folder), "--checkpoint", checkpoint])


def test_analyse_checkpoint_needs_exactly_one_of_arch_and_module(trained, tmp_path):
    checkpoint, folder = trained["--arch"]
    for arch, module in [(None, None), ("resnet18", "lightning_featviz.demo.ImageClassifier")]:
        with pytest.raises(ValueError, match="exactly one of `arch` and `module`"):
            analyse_checkpoint(checkpoint, folder, tmp_path, arch=arch, module=module)
