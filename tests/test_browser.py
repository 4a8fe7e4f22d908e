"""What a person sees: TensorBoard's views and the static report of a real run, in headless Chromium.

One short real Trainer run (a session fixture) and one browser and server (this module's) serve every test here; see
``tests/browser.py`` for the browser, the TensorBoard server and when these tests skip.
"""

import csv
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
import torch
from browser import browser, coloured_pixels, deep, deep_text, need_browser, tensorboard, wait_for
from conftest import TinyNet, tiny_trainer
from google.protobuf import text_format
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch.utils.data import Subset

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions, __version__
from lightning_featviz.capture.bank import to_thumbnails
from lightning_featviz.demo.model import ClassificationData

LAYERS = ["input", "conv2", "pool"]


@pytest.fixture(scope="session")
def viewed_run(tmp_path_factory, digits_val) -> Path:
    """Two epochs of TinyNet on 120 validation digits: TensorBoard logs under ``lightning_logs``, a report."""
    need_browser()
    root = tmp_path_factory.mktemp("viewed")
    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 360)), digits_val.classes)
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=120,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=False),
        outputs=OutputOptions(report_dir=root / "report"),
    )
    torch.manual_seed(0)
    tiny_trainer(root, logger=TensorBoardLogger(root), callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
    return root


# The server and the browser live for this module only: a projector page left open keeps rotating its 3-D
# view in software WebGL, which took a core from every test that ran after it.
@pytest.fixture(scope="module")
def board(viewed_run):
    with tensorboard(viewed_run / "lightning_logs") as url:
        yield url


@pytest.fixture(scope="module")
def driver(viewed_run):
    with browser() as chrome:
        yield chrome


def test_time_series_filtered_on_featviz_shows_the_headline_purity_cards_first(board, driver):
    driver.set_window_size(1600, 6000)  # every card of the first page in view, so each draws its title
    try:
        driver.get(f"{board}/?tagFilter=featviz#timeseries")
        titles = wait_for(
            lambda: [e.get_attribute("title") for e in driver.find_elements("css selector", "tb-truncated-path")],
            "the time series cards",
        )
    finally:
        driver.set_window_size(1600, 1000)
    headline = {f"featviz/{kind}@5/{layer}" for kind in ("knn_accuracy", "knn_purity") for layer in LAYERS}
    assert set(titles[: len(headline)]) == headline, titles
    assert not any("purity_of_class" in title for title in titles)


def _projector(driver, board):
    """Open the projector and step into the frame that holds it."""
    driver.get(f"{board}/#projector")
    for _ in range(2):  # TensorBoard's plugin frame, then the projector's own
        frame = wait_for(lambda: driver.find_elements("css selector", "iframe"), "the projector frame")[0]
        driver.switch_to.frame(frame)


def test_the_projector_opens_on_the_latest_2d_map_and_draws_its_points(board, driver):
    _projector(driver, board)
    try:
        chosen = wait_for(
            lambda: [v for e in deep(driver, "input") if (v := e.get_attribute("value")).startswith("latest/")],
            "the projector's tensor menu",
        )
        assert chosen[0] == "latest/epoch_001/conv2/tsne_2d"  # the latest epoch first; its 2-D map first
        canvas = wait_for(lambda: deep(driver, "canvas"), "the projector canvas")[0]
        # Thumbnails are drawn at each point: thousands of coloured pixels (an empty canvas has only
        # its three thin axes, under 2,000).
        drawn = wait_for(lambda: (n := coloured_pixels(canvas.screenshot_as_png)) > 10_000 and n, "points drawn")
        assert drawn > 10_000
        labels = {e.get_attribute("label"): e for e in deep(driver, "paper-dropdown-menu")}
        assert labels["Label by"].get_attribute("value") == "class"
        assert labels["Edit by"].get_attribute("value") == "class"
    finally:
        driver.switch_to.default_content()


def test_searching_the_projector_selects_points_and_lists_their_class(board, driver):
    _projector(driver, board)
    try:
        panel = wait_for(lambda: deep(driver, "vz-projector-inspector-panel"), "the inspector panel")[0]
        search = wait_for(
            lambda: [e for e in deep(driver, "input", panel) if e.get_attribute("type") != "file"],
            "the search box",
        )[0]
        wait_for(lambda: deep(driver, "canvas"), "the projector canvas")
        assert "class 3" not in deep_text(driver, panel)
        search.send_keys("class 3")

        def matches() -> str:
            text = deep_text(driver, panel)
            return text if "class 3" in text else ""

        text = wait_for(matches, "the matching points")
        assert "class 3" in text, text
    finally:
        driver.switch_to.default_content()


#: A pixel of the projector's canvas where a point is drawn, found in its picking texture (what the
#: projector itself reads under the mouse) by halving a box that holds one: [x, y, point index], or null.
FIND_POINT = """
const plot = arguments[0].projectorScatterPlotAdapter.scatterPlot;
const under = box => plot.getPointIndicesFromPickingTexture(box) || [];
function find(box) {
  if (!under(box).length) return null;
  if (box.width === 1 && box.height === 1) return [box.x, box.y, under(box)[0]];
  const w = Math.ceil(box.width / 2), h = Math.ceil(box.height / 2);
  for (const [dx, dy] of [[0, 0], [w, 0], [0, h], [w, h]]) {
    const part = {x: box.x + dx, y: box.y + dy, width: Math.min(w, box.width - dx)};
    part.height = Math.min(h, box.height - dy);
    const found = part.width > 0 && part.height > 0 ? find(part) : null;
    if (found) return found;
  }
  return null;
}
return find({x: arguments[1], y: arguments[2], width: arguments[3], height: arguments[4]});
"""


def test_hovering_a_point_in_the_projector_shows_its_class(viewed_run, board, driver):
    from selenium.webdriver.common.action_chains import ActionChains

    log_dir = viewed_run / "lightning_logs" / "version_0"
    _projector(driver, board)
    try:
        canvas = wait_for(lambda: deep(driver, "canvas"), "the projector canvas")[0]
        wait_for(lambda: coloured_pixels(canvas.screenshot_as_png) > 10_000, "points drawn")
        projector = deep(driver, "vz-projector")[0]
        width, height = canvas.size["width"], canvas.size["height"]

        def move(x: int, y: int) -> ActionChains:
            return ActionChains(driver).move_to_element_with_offset(canvas, x - width // 2, y - height // 2)

        # The projector opens turning its 3-D view round; a click where no point is stops it.
        empty = next(
            (x, y)
            for x, y in ((8, height - 8), (width - 8, height - 8), (8, 8), (width - 8, 8))
            if not driver.execute_script(FIND_POINT, projector, x - 6, y - 6, 12, 12)
        )
        move(*empty).click().perform()

        def still() -> list[int] | None:  # the same point at the same pixel a second apart
            first = driver.execute_script(FIND_POINT, projector, width // 4, height // 4, width // 2, height // 2)
            time.sleep(1)
            again = driver.execute_script(FIND_POINT, projector, width // 4, height // 4, width // 2, height // 2)
            return first if first and first == again else None

        x, y, index = wait_for(still, "a point standing still")
        move(x, y).perform()
        shown = wait_for(
            lambda: driver.execute_script("return arguments[0].statusBar.innerText", projector), "the hover label"
        )
    finally:
        driver.switch_to.default_content()
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    entry = next(e for e in config.embeddings if e.tensor_name == "latest/epoch_001/conv2/tsne_2d")
    rows = [row.split("\t") for row in (log_dir / entry.metadata_path).read_text().splitlines()]
    assert shown == rows[1 + index][rows[0].index("class")]  # the class of that sample, as written


def test_the_images_tab_lists_the_figure_tags(board, driver):
    driver.get(f"{board}/#images")
    wanted = [  # on its first page (of 12 cards, in name order)
        "featviz/neighbours/pool",
        "featviz/purity_by_class/pool",
        "featviz/purity_by_depth/all_layers",
        "featviz/tsne_2d/all_layers",
    ]

    def listed() -> str:
        text = deep_text(driver)
        return text if all(tag in text for tag in wanted) else ""

    assert wait_for(listed, "the image tags")


def test_the_static_report_loads_every_image_and_its_tables(viewed_run, driver):
    page = viewed_run / "report" / "index.html"
    driver.get(page.as_uri())
    images = wait_for(lambda: driver.find_elements("css selector", "img"), "the report's images")
    loaded = wait_for(
        lambda: driver.execute_script(
            "const all = [...document.images]; return all.every(i => i.complete) && all.map(i => i.naturalWidth);"
        ),
        "every image loaded",
    )
    assert len(loaded) == len(images) >= 5 and all(width > 0 for width in loaded)
    rows = driver.find_elements("css selector", "table tr")
    assert len(rows) > len(LAYERS)
    assert "step=" not in driver.find_element("css selector", "body").text


def test_the_static_reports_wrong_cluster_table_shows_each_rows_image(viewed_run, digits_val, driver):
    """Each row of the list has its thumbnail, loaded in the browser, and it is that sample's image."""
    driver.get((viewed_run / "report" / "index.html").as_uri())
    table = wait_for(
        lambda: next((t for t in driver.find_elements("css selector", "table") if "sits among" in t.text), None),
        "the wrong-cluster table",
    )
    header = [cell.text for cell in table.find_elements("css selector", "tr th")]
    rows = [
        [cell.text for cell in row.find_elements("css selector", "td")]
        for row in table.find_elements("css selector", "tr")[1:]
    ]
    assert header[0] == "image" and rows, header
    sizes = wait_for(
        lambda: driver.execute_script(
            "const all = [...arguments[0].querySelectorAll('img.thumb')];"
            "return all.every(i => i.complete) && all.map(i => [i.naturalWidth, i.naturalHeight]);",
            table,
        ),
        "every thumbnail loaded",
    )
    assert sizes == [[32, 32]] * len(rows)  # the default thumbnail_size, one per row
    sources = [img.get_attribute("src") for img in table.find_elements("css selector", "img.thumb")]
    index = header.index("index")
    for source, row in zip(sources, rows, strict=True):
        shown = np.asarray(Image.open(Path(url2pathname(urlparse(source).path))).convert("RGB"))
        image = digits_val[240 + int(row[index])][0]  # the validation set is digits 240 to 359
        expected = to_thumbnails(image[None], 32)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(shown, expected), row


def _report_tables(driver) -> dict[str, Any]:
    """The report's tables by the words of their header row."""
    tables = driver.find_elements("css selector", "table")
    return {" | ".join(th.text for th in t.find_elements("css selector", "tr:first-child th")): t for t in tables}


def test_the_static_report_names_the_run_and_says_what_it_found_in_words(viewed_run, driver):
    """A page to send: the run's identity and a headline at the top, epochs ascending, figures side by side in a grid,
    the label-issue table with each row's image, and no logged tag or CSV column name in what a person reads."""
    driver.get((viewed_run / "report" / "index.html").as_uri())
    identity = wait_for(lambda: driver.find_element("css selector", ".identity").text, "the run's identity")
    assert re.fullmatch(
        rf"model TinyNet · data ClassificationData · samples analysed 120 · classes 10 · "
        rf"written \d{{4}}-\d\d-\d\d \d\d:\d\d UTC · lightning_featviz {re.escape(__version__)}",
        identity,
    ), identity
    # the headline: the best layer's purity at the last epoch, and the callback's count of flagged images
    metrics = list(csv.DictReader((viewed_run / "report" / "metrics.csv").open()))
    purity = {
        r["tag"].split("/")[-1]: float(r["value"]) for r in metrics if "/knn_purity@" in r["tag"] and r["epoch"] == "1"
    }
    flagged = list(
        csv.DictReader(
            (viewed_run / "lightning_logs" / "version_0" / "featviz_wrong_cluster" / "epoch_001_pool.csv").open()
        )
    )
    words = driver.find_element("css selector", ".headline").text
    assert f"{max(purity.values()):.2f}" in words, words
    assert words.endswith(f"{len(flagged)} images sit in another class's cluster at pool, epoch 1."), words
    assert "separate" in words
    headers = [
        th.text
        for th in next(
            t for name, t in _report_tables(driver).items() if name.startswith("layer: measure")
        ).find_elements("css selector", "th")
    ]
    assert headers == ["layer: measure", "epoch 0", "epoch 1"]  # epochs ascending
    text = driver.find_element("css selector", "body").text
    assert "featviz/" not in text and not re.search(r"\b[a-z]+_[a-z_]+\b", text.replace("lightning_featviz", "")), (
        re.findall(r"\b[a-z]+_[a-z_]+\b", text.replace("lightning_featviz", ""))
    )
    grid = driver.find_elements("css selector", "#purity_by_class + .grid figure")
    tops = [figure.rect["y"] for figure in grid]
    assert len(grid) == len(LAYERS) and tops[0] == tops[1]  # side by side, not one per row
    issues = next(t for name, t in _report_tables(driver).items() if "given label" in name)
    rows = issues.find_elements("css selector", "tr")[1:]
    images = wait_for(
        lambda: driver.execute_script(
            "const all = [...arguments[0].querySelectorAll('img.thumb')];"
            "return all.every(i => i.complete) && all.map(i => i.naturalWidth);",
            issues,
        ),
        "the label-issue thumbnails",
    )
    assert len(images) == len(rows) > 0 and all(width == 32 for width in images)


def test_the_documented_search_finds_exactly_the_images_in_the_wrong_cluster(viewed_run, board, driver):
    """docs/tags.md: Search, By wrong_cluster, regex mode on, ``^[^-]``."""
    log_dir = viewed_run / "lightning_logs" / "version_0"
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    entry = next(e for e in config.embeddings if e.tensor_name == "latest/epoch_001/conv2/tsne_2d")
    rows = (log_dir / entry.metadata_path).read_text().splitlines()
    column = rows[0].split("\t").index("wrong_cluster")
    flagged = sum(row.split("\t")[column] != "-" for row in rows[1:])
    _projector(driver, board)
    try:
        panel = wait_for(lambda: deep(driver, "vz-projector-inspector-panel"), "the inspector panel")[0]
        wait_for(lambda: deep(driver, "canvas"), "the projector canvas")
        deep(driver, "paper-dropdown-menu", panel)[0].click()
        by = wait_for(lambda: [e for e in deep(driver, "paper-item", panel) if e.text.strip() == "wrong_cluster"], "By")
        driver.execute_script("arguments[0].click()", by[0])
        driver.execute_script("arguments[0].click()", deep(driver, "paper-button#regex", panel)[0])
        [e for e in deep(driver, "input", panel) if e.get_attribute("type") != "file"][0].send_keys("^[^-]")
        expected = f"{flagged} matches" if flagged != 1 else "1 match"
        wait_for(lambda: expected in deep_text(driver, panel), f"'{expected}'")
    finally:
        driver.switch_to.default_content()
