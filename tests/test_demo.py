"""The quick start, run as a user runs it: the console command on the built-in data."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_events
from PIL import Image

from lightning_featviz.demo import DEMO_LAYERS


def _run(*args, timeout=600):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_featviz", *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_quick_start_default_run_separates_classes_at_avgpool_but_not_in_pixel_space(tmp_path):
    stdout = _run("demo", "--logdir", str(tmp_path), "--quiet")
    assert f"tensorboard --logdir {tmp_path}" in stdout
    assert "avgpool" in stdout.split("kNN purity@10 per layer")[1]

    events = read_events(tmp_path)
    purity = {layer: events.Scalars(f"featviz/knn_purity@10/{layer}") for layer in DEMO_LAYERS}
    assert len(purity["avgpool"]) == 8  # one value per epoch
    print({layer: round(values[-1].value, 3) for layer, values in purity.items()})
    assert purity["avgpool"][-1].value >= 0.80
    assert purity["input"][-1].value <= 0.35
    for layer in DEMO_LAYERS:
        grids = events.Images(f"featviz/neighbours/{layer}")
        assert len(grids) == 8 and grids[-1].width > 500
    assert events.Images("featviz/neighbours/input_vs_avgpool")

    # openTSNE's own correctness check, on the trained network: kNN label agreement in the 2-D map
    # is high where the layer separates classes, low in pixel space.
    map_purity = {layer: events.Scalars(f"featviz/tsne_purity@10/{layer}/2d")[-1].value for layer in DEMO_LAYERS}
    print("2-D map purity", {layer: round(value, 3) for layer, value in map_purity.items()})
    assert map_purity["avgpool"] >= 0.85
    assert map_purity["input"] <= 0.35
    for tag in ("tsne_2d/avgpool", "tsne_3d/avgpool", "tsne_2d/input_vs_avgpool", "tsne_2d/all_layers"):
        assert len(events.Images(f"featviz/{tag}")) == 8


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


def test_console_command_lists_layer_names():
    beside_python = Path(sys.executable).parent / "featviz"
    featviz = str(beside_python) if beside_python.exists() else shutil.which("featviz")
    assert featviz, "the `featviz` console command is not installed"
    result = subprocess.run([featviz, "layers", "--arch", "resnet18"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "avgpool" in result.stdout and "layer4.1.conv2" in result.stdout
