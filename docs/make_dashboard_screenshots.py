"""Regenerate the FEATVIZ tab's screenshots in docs/images from two short fresh runs, as a person sees them.

    python docs/make_dashboard_screenshots.py [--logdir /tmp/featviz_dashboard_screens] [--epochs 3]
    python docs/make_dashboard_screenshots.py --trajectory [--logdir /tmp/featviz_dashboard_trajectory]

Trains ResNet-18 from scratch on the built-in digits twice with the callback, as ``featviz demo`` does (unless the
log dir has the runs already): ``full`` trains every layer, ``frozen`` keeps the stem, ``layer1`` and ``layer2`` at
their random initialisation (a frozen backbone); 400 kept validation samples, k = 10, layers ``input``, ``layer1``,
``layer2``, ``layer3``, ``avgpool`` (``layer4`` equals ``avgpool`` on 32 px images), 2-D maps only, no time budget
(``overhead=None``: the schedule's maps at the first and the last epoch however busy the machine is). Then starts
TensorBoard on a loopback port with the FEATVIZ plugin and drives Debian's Chromium headless (as the browser tests
do; see tests/browser.py), and saves, cropped and palette-compressed:

- ``screen_dashboard.png``: the tab as it opens: the layer × epoch heatmap, the last layer's map, by class, and the
  inspector's panel beside it;
- ``screen_dashboard_map.png``: the map coloured by wrong cluster, a hovered point's tooltip and a box selection;
- ``screen_dashboard_inspector.png``: the image inspector: one image's label probability per epoch and its trajectory
  in words, then its neighbours at every layer;
- ``screen_dashboard_review.png``: the wrong-cluster review (its first six rows), three of them ticked, the last
  column each row's dynamics score and trajectory in words (not shrunk: those words are small);
- ``screen_dashboard_compare.png``: the two runs at the same layer and epoch: this run's heatmap and map, the other
  run's numbers, map and heatmap below.

With ``--trajectory`` it makes only ``screen_dashboard_trajectory.png`` (docs/label_issues.md), from a run of its
own: TinyNet of tests/conftest.py, 8 epochs on 600 of the built-in coloured digits (400 to train, 200 validation
samples kept, k = 5, layers ``input``, ``conv2``, ``pool``); the inspector on the last epoch's sample that the
model consistently predicts as another class with the highest dynamics score: its label probability per epoch and
what its predictions did, in words.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import Subset

from lightning_featviz import MapOptions, OutputOptions, ResourceOptions

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
sys.path.insert(0, str(ROOT / "tests"))
from browser import browser, tensorboard, wait_for  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def train(log_dir: Path, frozen: bool, epochs: int) -> None:
    from lightning_featviz import FeatureVisualizer
    from lightning_featviz.demo.model import ClassificationData, ImageClassifier

    data = ClassificationData.digits()
    data.val = Subset(data.val, range(400))
    model = ImageClassifier(num_classes=10, arch="resnet18")
    if frozen:
        for name in ("conv1", "bn1", "layer1", "layer2"):
            getattr(model.model, name).requires_grad_(False)
    layers = {"input": "input", **{f"model.{name}": name for name in ("layer1", "layer2", "layer3", "avgpool")}}
    visualizer = FeatureVisualizer(
        layers,
        k=10,
        max_samples=400,
        overhead=None,  # the schedule alone: the time budget would leave the last epoch's maps out on a busy machine
        maps=MapOptions(dims=[2]),
        projector=False,
        outputs=OutputOptions(neighbour_grids=False),
        resources=ResourceOptions(background=False),
    )
    fit(model, data, visualizer, log_dir, epochs)


def train_tiny(log_dir: Path, epochs: int = 8) -> None:
    """TinyNet (tests/conftest.py) on 400 + 200 coloured digits with the callback, every epoch analysed."""
    from conftest import TinyNet

    from lightning_featviz import FeatureVisualizer
    from lightning_featviz.demo.datasets import ColouredDigits
    from lightning_featviz.demo.model import ClassificationData

    digits = ColouredDigits("val", seed=0)
    data = ClassificationData(Subset(digits, range(400)), Subset(digits, range(400, 600)), digits.classes)
    visualizer = FeatureVisualizer(
        ["input", "conv2", "pool"],
        k=5,
        max_samples=200,
        maps=MapOptions(dims=[2]),
        projector=False,
        outputs=OutputOptions(neighbour_grids=False),
        resources=ResourceOptions(background=False),
    )
    fit(TinyNet(), data, visualizer, log_dir, epochs, deterministic=True)


def fit(model: pl.LightningModule, data: Any, visualizer: Any, log_dir: Path, epochs: int, **trainer: Any) -> None:
    """``model`` trained on ``data`` for ``epochs`` with ``visualizer``, logging to ``log_dir`` (seed 0)."""
    torch.manual_seed(0)
    pl.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(log_dir, name="", version=""),
        callbacks=[visualizer],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer,
    ).fit(model, datamodule=data)


def consistently_wrong(folder: Path) -> tuple[int, str, str]:
    """The last epoch's sample predicted as another class for 3 or more epochs with the highest dynamics score
    (the tab's files, as the plugin reads them): its dataset index, its trajectory in words, and its label
    probability per epoch, written out."""
    from lightning_featviz.dashboard.data import read_epoch, read_index

    entry = read_index(folder)["epochs"][-1]
    arrays = read_epoch(folder, entry["file"])
    samples = json.loads((folder / f"samples_{entry['samples']}.json").read_text())
    i = next(i for i in range(len(entry["layers"])) if f"L{i}_words" in arrays)
    words = arrays[f"L{i}_phrases"][arrays[f"L{i}_words"]]
    scores = np.where(np.char.startswith(words, "consistently"), arrays[f"L{i}_dynamics"], -np.inf)
    row = int(np.argmax(scores))
    trajectory = zip(arrays[f"L{i}_trajepochs"].tolist(), arrays[f"L{i}_trajectory"][:, row].tolist(), strict=True)
    probability = ", ".join(f"epoch {e}: {p:.3f}" for e, p in trajectory)
    return samples["indices"][row], str(words[row]), f"label {samples['labels'][row]}; {probability}"


def trajectory_screenshot(log_dir: Path) -> None:
    if not (log_dir / "featviz_dashboard" / "index.json").exists():
        train_tiny(log_dir)
    index, words, probability = consistently_wrong(log_dir / "featviz_dashboard")
    with tensorboard(log_dir, featviz_tab=True) as url, browser(1400, 1400) as driver:
        driver.get(f"{url}/#featviz")
        driver.switch_to.frame(wait_for(lambda: driver.find_elements("css selector", "iframe"), "the frame")[0])
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")
        search = driver.find_element("id", "search")
        search.send_keys(str(index), Keys.ENTER)
        said = wait_for(lambda: driver.find_elements("css selector", "#inspector .trajectory-words"), "the words")[0]
        assert said.text == words, (said.text, words)
        time.sleep(1)
        save(driver, "screen_dashboard_trajectory.png", driver.find_element("id", "inspector-section"), width=440)
    print(f"#{index}: {words} ({probability})")


def save(driver: Any, name: str, element: Any, pad: int = 8, width: int = 1100) -> None:
    """Screenshot the page, crop to ``element`` of the tab's frame (and ``pad`` px), shrink to ``width``, save small."""
    left, top, right, bottom = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]", element
    )
    driver.switch_to.default_content()
    frame = driver.find_element("css selector", "iframe")
    dx, dy = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top]", frame)
    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.switch_to.frame(frame)
    ratio = picture.width / driver.execute_script("return window.top.innerWidth")
    box = [
        round((v + d) * ratio) for v, d in [(left - pad, dx), (top - pad, dy), (right + pad, dx), (bottom + pad, dy)]
    ]
    picture = picture.crop((max(0, box[0]), max(0, box[1]), min(box[2], picture.width), min(box[3], picture.height)))
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.Resampling.LANCZOS)
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(IMAGES / name, optimize=True)
    print(f"wrote docs/images/{name} ({(IMAGES / name).stat().st_size // 1024} KiB)")


def open_tab(driver: Any, url: str) -> None:
    driver.switch_to.default_content()
    driver.get("about:blank")
    driver.get(f"{url}/?featvizRun=full#featviz")  # the tab opens on this run
    driver.switch_to.frame(wait_for(lambda: driver.find_elements("css selector", "iframe"), "the FEATVIZ frame")[0])
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")


def pick(driver: Any, select_id: str, value: str) -> None:
    driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];s.dispatchEvent(new Event('change'));",
        select_id,
        value,
    )
    time.sleep(1.5)


def point(driver: Any, row: int) -> tuple[int, int]:
    """Offsets from the map canvas's centre of a sample's point (what selenium's mouse moves take)."""
    canvas = driver.find_element("id", "map")
    x, y = driver.execute_script("return window.featviz.screenPosition(arguments[0])", row)
    left, top, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas
    )
    return round(x - left - width / 2), round(y - top - height / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, default=Path("/tmp/featviz_dashboard_screens"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trajectory", action="store_true", help="only screen_dashboard_trajectory.png")
    args = parser.parse_args()
    if args.trajectory:
        trajectory_screenshot(
            args.logdir if args.logdir != parser.get_default("logdir") else Path("/tmp/featviz_dashboard_trajectory")
        )
        return
    for name in ("full", "frozen"):
        if not (args.logdir / name / "featviz_dashboard" / "index.json").exists():
            train(args.logdir / name, name == "frozen", args.epochs)
    from selenium.webdriver.common.action_chains import ActionChains

    with tensorboard(args.logdir, featviz_tab=True) as url, browser(1400, 2800) as driver:
        open_tab(driver, url)
        save(driver, "screen_dashboard.png", driver.find_element("css selector", ".workspace"))

        pick(driver, "colour", "wrong")
        canvas = driver.find_element("id", "map")
        ActionChains(driver).move_to_element_with_offset(canvas, -200, -180).click_and_hold().move_by_offset(
            120, 110
        ).release().perform()
        time.sleep(1)
        flagged = driver.execute_script("return Array.from(document.querySelectorAll('#review tr[data-index]')).length")
        first = "const t = document.querySelector('#review .thumb'); return t ? Number(t.dataset.row) : 0"
        row = int(driver.execute_script(first))  # the strongest flagged image, else the first sample
        ActionChains(driver).move_to_element_with_offset(canvas, *point(driver, row)).perform()
        time.sleep(1)
        save(driver, "screen_dashboard_map.png", driver.find_element("id", "map-section"))
        print(f"{flagged} images flagged at the opened layer and epoch")

        ActionChains(driver).move_to_element_with_offset(canvas, *point(driver, row)).click().perform()
        wait_for(lambda: driver.find_elements("css selector", "#inspector .layer-row"), "the inspector")
        time.sleep(1)
        save(driver, "screen_dashboard_inspector.png", driver.find_element("id", "inspector-section"))

        for box in driver.find_elements("css selector", "#review .pick")[:3]:
            box.click()
        # the first six rows of the list are enough for a picture
        driver.execute_script("document.querySelectorAll('#review tr[data-index]').forEach((r, i) => {"
                              " if (i >= 6) r.style.display = 'none'; })")  # fmt: skip
        # not shrunk: the last column's trajectory words are small (11 px) already
        save(driver, "screen_dashboard_review.png", driver.find_element("id", "review-section"), width=1400)

        open_tab(driver, url)
        other = driver.execute_script("return Array.from(document.getElementById('compare').options).at(-1).value")
        pick(driver, "compare", other)
        save(driver, "screen_dashboard_compare.png", driver.find_element("id", "map-column"), width=800)


if __name__ == "__main__":
    main()
