"""Regenerate the browser screenshots in docs/images from a fresh short demo run, as a person sees them.

    python docs/make_screenshots.py [--logdir /tmp/featviz_screens] [--epochs 3]

Runs ``featviz demo --epochs N`` (unless the log dir has a run already), starts TensorBoard on a
loopback port and drives Debian's Chromium headless (selenium, as the browser tests do; see
tests/browser.py), then saves, cropped and palette-compressed:

- ``screen_time_series.png``: Time Series filtered on ``featviz`` (the headline purity cards first);
- ``screen_images.png``: the Images tab;
- ``screen_projector.png``: the projector on the latest epoch's 2-D map of a layer, coloured by class;
- ``screen_projector_flagged.png``: the projector search that selects the images in the wrong cluster;
- ``screen_report.png``: the top of the static report ``report/index.html``.
"""

from __future__ import annotations

import argparse
import glob
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
sys.path.insert(0, str(ROOT / "tests"))
from browser import browser, deep, tensorboard, wait_for  # noqa: E402


def save(driver: Any, name: str, box: tuple[int, int, int, int] | None = None, width: int = 1200) -> None:
    """Screenshot the page, crop to ``box`` (left, top, right, bottom), shrink to ``width`` px, save small."""
    driver.switch_to.default_content()
    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    if box is not None:
        picture = picture.crop((box[0], box[1], min(box[2], picture.width), min(box[3], picture.height)))
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.Resampling.LANCZOS)
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(IMAGES / name, optimize=True)
    print(f"wrote docs/images/{name} ({(IMAGES / name).stat().st_size // 1024} KiB)")


def projector(driver: Any, url: str) -> Any:
    """Open the projector, step into its frame; returns the inspector panel once the canvas is there."""
    driver.get(f"{url}/#projector")
    for _ in range(2):
        driver.switch_to.frame(wait_for(lambda: driver.find_elements("css selector", "iframe"), "a frame")[0])
    wait_for(lambda: deep(driver, "canvas"), "the projector canvas")
    return wait_for(lambda: deep(driver, "vz-projector-inspector-panel"), "the inspector panel")[0]


def choose(driver: Any, menu: Any, item: str, root: Any) -> None:
    """Pick ``item`` in a projector drop-down ``menu``."""
    menu.click()

    def items() -> list[Any]:  # an item's text is its name, then details such as "10 colors"
        texts = [(e, (e.get_attribute("textContent") or "").split()) for e in deep(driver, "paper-item", root)]
        return [e for e, words in texts if words[:1] == [item]]

    found = wait_for(items, item)
    driver.execute_script("arguments[0].click()", found[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", default="/tmp/featviz_screens")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not glob.glob(f"{args.logdir}/**/events.out.tfevents.*", recursive=True):
        command = ["demo", "--logdir", args.logdir, "--epochs", str(args.epochs), "--quiet"]
        subprocess.run([sys.executable, "-m", "lightning_featviz", *command], check=True)
    run_dir = Path(sorted(glob.glob(f"{args.logdir}/**/events.out.tfevents.*", recursive=True))[-1]).parent
    IMAGES.mkdir(exist_ok=True)
    with tensorboard(args.logdir) as url, browser(1600, 1150) as driver:
        driver.get(f"{url}/?tagFilter=featviz#timeseries")
        wait_for(lambda: len(driver.find_elements("css selector", "tb-truncated-path")) >= 2, "the cards", 300)
        time.sleep(4)  # the charts draw
        save(driver, "screen_time_series.png", (0, 0, 1600, 1000))

        driver.get(f"{url}/#images")
        wait_for(lambda: deep(driver, "img"), "the images")
        time.sleep(4)
        save(driver, "screen_images.png", (0, 0, 1600, 1000))

        panel = projector(driver, url)
        menus = {e.get_attribute("label"): e for e in deep(driver, "paper-dropdown-menu")}
        choose(driver, menus["Color by"], "class", menus["Color by"])
        time.sleep(3)
        save(driver, "screen_projector.png", (0, 0, 1600, 900))

        panel = projector(driver, url)
        choose(driver, deep(driver, "paper-dropdown-menu", panel)[0], "wrong_cluster", panel)
        driver.execute_script("arguments[0].click()", deep(driver, "paper-button#regex", panel)[0])
        [e for e in deep(driver, "input", panel) if e.get_attribute("type") != "file"][0].send_keys("^[^-]")
        time.sleep(3)
        save(driver, "screen_projector_flagged.png", (0, 0, 1600, 900))

        report = run_dir / "report" / "index.html"
        driver.get(report.as_uri())
        wait_for(lambda: driver.execute_script("return [...document.images].every(i => i.complete)"), "the report")
        save(driver, "screen_report.png", (0, 0, 1600, 1000))


if __name__ == "__main__":
    main()
