"""The quick start, run as a user runs it: the console command on the built-in data."""

import csv
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_events
from PIL import Image
from torch.utils.data import Dataset

from lightning_featviz import MapOptions, OutputOptions
from lightning_featviz.cli import main
from lightning_featviz.demo.datasets import ColouredDigits
from lightning_featviz.demo.model import DEMO_LAYERS
from lightning_featviz.posthoc import analyse, load_module


def _run(*args, timeout=600):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_featviz", *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """The README's first command, run once (8 epochs): its log dir and what it printed."""
    logdir = tmp_path_factory.mktemp("quick_start")
    return logdir, _run("demo", "--logdir", str(logdir), "--quiet")


@pytest.mark.slow
def test_quick_start_default_run_separates_classes_at_avgpool_but_not_in_pixel_space(quick_start):
    tmp_path, stdout = quick_start
    assert f"tensorboard --logdir {tmp_path}" in stdout
    report = Path(stdout.split("static report (no server needed):\n")[1].split()[0])
    assert report.is_file() and report.parent.parent == next(tmp_path.glob("featviz_demo/version_*"))
    assert "avgpool" in stdout.split("kNN purity@10 per layer")[1]

    events = read_events(tmp_path)
    purity = {layer: events.Scalars(f"featviz/knn_purity@10/{layer}") for layer in DEMO_LAYERS}
    assert len(purity["avgpool"]) == 8  # one value per epoch
    print({layer: round(values[-1].value, 3) for layer, values in purity.items()})
    assert purity["avgpool"][-1].value >= 0.80
    assert purity["input"][-1].value <= 0.35
    # the demo's schedule (no time budget): figures every 5th epoch and maps every 10th, both at the last
    last_step = purity["avgpool"][-1].step
    for layer in DEMO_LAYERS:
        grids = events.Images(f"featviz/neighbours/{layer}")
        assert 1 <= len(grids) <= 8 and grids[-1].step == last_step and grids[-1].width > 500
    assert events.Images("featviz/neighbours/input_vs_avgpool")

    # openTSNE's own correctness check, on the trained network: kNN label agreement in the 2-D map
    # is high where the layer separates classes, low in pixel space.
    map_purity = {layer: events.Scalars(f"featviz/tsne_purity@10/{layer}/2d")[-1].value for layer in DEMO_LAYERS}
    print("2-D map purity", {layer: round(value, 3) for layer, value in map_purity.items()})
    assert map_purity["avgpool"] >= 0.85
    assert map_purity["input"] <= 0.35
    for tag in ("tsne_2d/avgpool", "tsne_3d/avgpool", "tsne_2d/input_vs_avgpool", "tsne_2d/all_layers"):
        maps = events.Images(f"featviz/{tag}")
        assert 1 <= len(maps) <= 8 and maps[-1].step == last_step, tag


@pytest.mark.slow
def test_the_demos_printed_analyse_recipe_writes_its_validation_digits_as_the_folder_it_names(quick_start, tmp_path):
    """The demo ends with how to analyse its model post hoc: for the built-in digits, a line that writes them as an
    ImageFolder, then ``featviz analyse`` on that folder (not a placeholder the user cannot fill)."""
    recipe = quick_start[1].split("Analyse the trained model again later")[1].splitlines()[1:3]
    assert recipe[0].startswith("  python -c ") and recipe[1].startswith("  featviz analyse --module ")
    write_folder = [sys.executable, *shlex.split(recipe[0])[1:]]  # the python that runs the tests, not PATH's
    subprocess.run(write_folder, cwd=tmp_path, check=True, timeout=300)
    analyse_args = shlex.split(recipe[1])
    folder = tmp_path / analyse_args[analyse_args.index("--data") + 1]
    assert "--no-normalize" in analyse_args and analyse_args[analyse_args.index("--image-size") + 1] == "32"
    val = ColouredDigits("val", seed=0)
    assert sorted(p.name for p in folder.iterdir()) == val.classes
    counts = {name: len(list((folder / name).glob("*.png"))) for name in val.classes}
    assert counts == {name: int((val.targets == int(name)).sum()) for name in val.classes}
    pixels = np.asarray(Image.open(folder / str(val[0][1]) / "00000.png"), dtype=np.float32) / 255
    assert np.abs(pixels - val[0][0].permute(1, 2, 0).numpy()).max() <= 1 / 255  # the demo's own image 0


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
def test_flipped_labels_are_recovered_at_avgpool_and_not_in_pixel_space(quick_start, tmp_path):
    # The quick start's trained model, analysed post hoc on its validation digits with 5% of the labels flipped.
    val = ColouredDigits("val", seed=0)
    rng = np.random.default_rng(0)
    flipped = sorted(rng.choice(len(val), size=len(val) // 20, replace=False).tolist())
    true_labels = {i: int(val[i][1]) for i in flipped}
    noisy = Relabelled(val, {i: (label + int(rng.integers(1, 10))) % 10 for i, label in true_labels.items()})
    checkpoint = next(quick_start[0].glob("featviz_demo/version_0/checkpoints/last.ckpt"))
    assert f"--checkpoint {checkpoint}" in quick_start[1]  # the demo tells the user how to do this
    model = load_module("lightning_featviz.demo.model.ImageClassifier", checkpoint)
    options = dict(
        progress=False,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(neighbour_grids=False, confusion=False),
    )
    analysis = analyse(model, noisy, tmp_path, layers=["input", "avgpool"], k=10, **options)

    found = {}
    for layer, indices in analysis.wrong_cluster.items():
        hits = len(set(indices) & set(flipped))
        found[layer] = (hits / len(flipped), hits / max(len(indices), 1))
    print("recall, precision:", found)
    recall, precision = found["avgpool"]
    assert recall >= 0.70 and precision >= 0.50
    assert found["input"][0] <= recall / 2  # pixel space finds far fewer of them

    # The exported list is the same set, and its rows point at the flipped images with their noisy labels.
    with open(tmp_path / "featviz_wrong_cluster" / "epoch_000_avgpool.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["index"]) for row in rows] == analysis.wrong_cluster["avgpool"]
    assert all(int(row["label"]) == noisy[int(row["index"])][1] for row in rows)
    # a flipped image sits, nearly always, in the cluster of the class it really shows
    home = [int(row["cluster"]) == true_labels[int(row["index"])] for row in rows if int(row["index"]) in true_labels]
    assert sum(home) >= 0.9 * len(home)


def test_demo_on_an_image_folder_writes_logs(tmp_path):
    for name, colour in [("fries", (250, 200, 40)), ("sushi", (240, 240, 240)), ("salad", (40, 160, 60))]:
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(12):
            shade = tuple(max(0, c - 8 * i) for c in colour)
            Image.new("RGB", (48, 40), shade).save(tmp_path / "data" / name / f"{i}.png")
    stdout = _run(
        "demo",
        "--data",
        str(tmp_path / "data"),
        "--logdir",
        str(tmp_path / "logs"),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--k",
        "3",
        "--layers",
        "input",
        "layer4",
        "avgpool",
        "--quiet",
    )
    assert "avgpool" in stdout
    events = read_events(tmp_path / "logs")
    assert "featviz/knn_purity@3/avgpool" in events.Tags()["scalars"]
    assert "featviz/neighbours/input_vs_avgpool" in events.Tags()["images"]


def test_demo_on_a_folder_that_is_not_there_says_so_before_training(tmp_path):
    with pytest.raises(SystemExit, match=r"expected `--data` to be an ImageFolder directory .* but got '.*nothere'"):
        main(["demo", "--data", str(tmp_path / "nothere"), "--logdir", str(tmp_path / "logs")])
    assert not (tmp_path / "logs").exists()


def test_console_command_lists_layer_names():
    beside_python = Path(sys.executable).parent / "featviz"
    featviz = str(beside_python) if beside_python.exists() else shutil.which("featviz")
    assert featviz, "the `featviz` console command is not installed"
    result = subprocess.run([featviz, "layers", "--arch", "resnet18"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "avgpool" in result.stdout and "layer4.1.conv2" in result.stdout
