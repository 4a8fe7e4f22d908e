"""The FEATVIZ tab: the files the callback writes for it, its plugin's routes on a real TensorBoard server, and the
tab itself in headless Chromium.

One real Trainer run (this module's fixture) serves every test; the callback records each epoch's results as it
reports them, so the routes are checked against the callback's own arrays.
"""

from __future__ import annotations

import csv
import importlib
import json
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import numpy as np
import pytest
import torch
from browser import browser, deep_text, need_browser, tensorboard, wait_for
from conftest import TinyNet, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import Subset

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.dashboard.data import FOLDER, LayerEpoch, Samples, find_runs, read_epoch, write_epoch
from lightning_featviz.dashboard.plugin import FeatvizPlugin
from lightning_featviz.demo.model import ClassificationData
from lightning_featviz.report.figures import EpochResults

LAYERS = ["input", "conv2", "pool"]
RUN = "lightning_logs/version_0"


class RecordingVisualizer(FeatureVisualizer):
    """The callback, keeping each epoch's results (bank, neighbours) as its analysis returns them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: dict[int, EpochResults] = {}

    def _analyse(self, trainer, pl_module, bank):
        results, metrics = super()._analyse(trainer, pl_module, bank)
        if results is not None:
            self.seen[results.epoch] = results
        return results, metrics


@pytest.fixture(scope="module")
def dashboard_run(tmp_path_factory, digits_val) -> tuple[Path, RecordingVisualizer]:
    """Three epochs of TinyNet, 120 validation digits, k = 5: TensorBoard logs and dashboard files."""
    root = tmp_path_factory.mktemp("dashboard")
    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 360)), digits_val.classes)
    visualizer = RecordingVisualizer(
        LAYERS,
        overhead=None,  # every output every epoch: the routes are checked at each epoch
        k=5,
        max_samples=120,
        maps=MapOptions(dims=[2]),
        projector=False,
        outputs=OutputOptions(neighbour_grids=False, confusion=False),
        resources=ResourceOptions(background=False),
    )
    torch.manual_seed(0)
    trainer = tiny_trainer(root, max_epochs=3, logger=TensorBoardLogger(root), callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=data)
    return root, visualizer


@pytest.fixture(scope="module")
def board(dashboard_run):
    with tensorboard(dashboard_run[0], featviz_tab=True) as url:
        yield url


def get(board: str, route: str, **params) -> object:
    with urlopen(f"{board}/data/plugin/featviz/{route}?{urlencode(params)}", timeout=60) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------------------------- files


def _layer(n: int, k: int, seed: int) -> LayerEpoch:
    rng = np.random.default_rng(seed)
    return LayerEpoch(
        neighbours=rng.integers(0, n, (n, k)),
        distances=rng.random((n, k)),
        purity=rng.random(n),
        votes=rng.integers(0, 3, n),
        mean_purity=0.5,
        accuracy=0.6,
        maps={2: rng.normal(size=(n, 2))},
    )


def test_a_resumed_run_replaces_its_rewritten_epoch_and_shares_one_sample_set(tmp_path):
    n, k = 50, 4
    samples = Samples(
        np.arange(n), np.arange(n) % 3, np.zeros((n, 8, 8, 3), np.uint8), [f"img{i}.png" for i in range(n)]
    )
    for epoch, seed in [(0, 0), (1, 1), (1, 2), (2, 3)]:  # epoch 1 written again, as by a run resumed there
        write_epoch(
            tmp_path, epoch, 10 * epoch, k, ["a", "b", "c"], samples, np.zeros(n), np.ones(n), {"x": _layer(n, k, seed)}
        )
    folder = tmp_path / FOLDER
    index = json.loads((folder / "index.json").read_text())
    assert [e["epoch"] for e in index["epochs"]] == [0, 1, 2]
    assert len({e["samples"] for e in index["epochs"]}) == 1 and len(list(folder.glob("samples_*.json"))) == 1
    assert np.array_equal(read_epoch(folder, "epoch_0001.npz")["L0_neighbours"], _layer(n, k, 2).neighbours)
    assert not list(folder.glob(".*tmp")), "a temporary file was left behind"
    assert find_runs(tmp_path) == {".": folder}


def test_one_layer_epoch_of_2000_samples_at_k_10_takes_under_1_mb(tmp_path):
    n, k = 2000, 10
    samples = Samples(np.arange(n), np.arange(n) % 10)
    write_epoch(
        tmp_path, 0, 0, k, [str(c) for c in range(10)], samples, np.zeros(n), np.ones(n), {"x": _layer(n, k, 0)}
    )
    size = (tmp_path / FOLDER / "epoch_0000.npz").stat().st_size
    assert size < 2**20, size


def test_the_package_declares_the_plugin_entry_point_and_ships_its_static_files():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    module, name = config["project"]["entry-points"]["tensorboard_plugins"]["featviz"].split(":")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin is FeatvizPlugin and plugin.plugin_name == "featviz"
    shipped = {path for pattern in config["tool"]["setuptools"]["package-data"]["lightning_featviz"]
               for path in (root / "lightning_featviz").glob(pattern)}  # fmt: skip
    assert set((root / "lightning_featviz" / "dashboard" / "static").iterdir()) <= shipped


def test_an_epoch_written_while_the_plugin_serves_appears_at_the_next_request(tmp_path):
    from tensorboard.plugins.base_plugin import TBContext
    from werkzeug.test import Client

    n, k = 30, 3
    samples = Samples(np.arange(n), np.arange(n) % 3)
    app = FeatvizPlugin(TBContext(logdir=str(tmp_path))).get_plugin_apps()["/run"]
    for epoch in range(3):
        write_epoch(
            tmp_path / "run",
            epoch,
            epoch,
            k,
            ["a", "b", "c"],
            samples,
            np.zeros(n),
            np.ones(n),
            {"x": _layer(n, k, epoch)},
        )
        served = json.loads(Client(app).get("/run", query_string={"run": "run"}).get_data())
        assert [e["epoch"] for e in served["epochs"]] == list(range(epoch + 1))


def test_dashboard_must_be_a_bool():
    with pytest.raises(ValueError, match="Expected `dashboard` to be True or False, but got 'yes'"):
        FeatureVisualizer(["pool"], dashboard="yes")


# ---------------------------------------------------------------------------------------------- routes


def test_runs_route_lists_the_run_with_every_analysed_epoch(board, dashboard_run):
    _, visualizer = dashboard_run
    assert get(board, "runs") == [{"run": RUN, "epochs": sorted(visualizer.seen)}]


def test_run_route_holds_the_purity_and_accuracy_the_callback_logged(board, dashboard_run):
    _, visualizer = dashboard_run
    index = get(board, "run", run=RUN)
    assert index["class_names"] == [str(c) for c in range(10)] and index["k"] == 5
    served = {(e["epoch"], layer["name"]): layer for e in index["epochs"] for layer in e["layers"]}
    logged = {(row["epoch"], row["layer"]): row for row in visualizer.history}
    assert served.keys() == logged.keys()
    for key, row in logged.items():
        assert served[key]["purity"] == pytest.approx(row["knn_purity"], abs=1e-6)
        assert served[key]["accuracy"] == pytest.approx(row["knn_accuracy"], abs=1e-6)


def test_inspect_route_gives_the_callbacks_neighbours_at_every_layer(board, dashboard_run):
    _, visualizer = dashboard_run
    epoch = max(visualizer.seen)
    results = visualizer.seen[epoch]
    for row in (0, 37, len(results.bank) - 1):
        found = get(board, "inspect", run=RUN, epoch=epoch, row=row)
        assert [layer["name"] for layer in found["layers"]] == LAYERS
        for layer in found["layers"]:
            stats = results.stats[layer["name"]]
            assert layer["neighbours"] == stats.indices[row].tolist()
            # the distances, against a search computed another way (all pairs, self left out)
            vectors = results.bank.vectors[layer["name"]].double()
            distances = torch.cdist(vectors[row : row + 1], vectors)[0]
            distances[row] = float("inf")
            expected = distances.sort().values[:5].numpy()
            assert np.allclose(layer["distances"], expected, rtol=2e-3, atol=2e-3)
    samples = get(board, "samples", run=RUN, key=found["reference"])
    assert samples["indices"] == results.bank.indices.tolist() and samples["labels"] == results.bank.labels.tolist()


def test_wrong_route_lists_the_callbacks_flagged_images_strongest_first(board, dashboard_run):
    _, visualizer = dashboard_run
    epoch = max(visualizer.seen)
    for layer in LAYERS:
        found = get(board, "wrong", run=RUN, epoch=epoch, layer=layer)
        assert [row["index"] for row in found["rows"]] == visualizer.wrong_cluster_indices[layer]
        labels = visualizer.seen[epoch].bank.labels
        for row in found["rows"]:
            neighbour_labels = labels[row["neighbours"]]
            assert int((neighbour_labels == row["cluster"]).sum()) == round(row["strength"] * 5)
            assert f"are '{row['cluster']}'" in row["reason"]


def test_layer_route_gives_a_2d_map_of_every_sample_at_every_epoch(board, dashboard_run):
    _, visualizer = dashboard_run
    found = get(board, "layer", run=RUN, layer="pool")
    assert [e["epoch"] for e in found["epochs"]] == sorted(visualizer.seen)
    for entry in found["epochs"]:
        results = visualizer.seen[entry["epoch"]]
        coords = np.array(entry["maps"]["2"], dtype=float)
        assert coords.shape == (2 * len(results.bank),) and np.isfinite(coords).all()
        assert entry["predictions"] == results.bank.preds.tolist()
        assert np.allclose(entry["purity"], results.stats["pool"].purity.numpy(), atol=1e-3)


@pytest.mark.parametrize(
    "route, params, message",
    [
        ("run", {"run": "nope"}, "Expected `run` to be one of"),
        ("inspect", {"run": RUN, "epoch": "9", "row": "0"}, "Expected `epoch` to be one of [0, 1, 2]"),
        ("inspect", {"run": RUN, "epoch": "0", "row": "120"}, "Expected `row` to be a row in [0, 120)"),
        ("wrong", {"run": RUN, "epoch": "0", "layer": "fc"}, "Expected `layer` to be one of"),
        ("samples", {"run": RUN, "key": "../index"}, "Expected `key` to name a sample set of this run"),
    ],
)
def test_a_bad_argument_answers_400_with_the_reason(board, route, params, message):
    with pytest.raises(HTTPError) as caught:
        get(board, route, **params)
    assert caught.value.code == 400
    assert message in json.loads(caught.value.read())["error"]


# ---------------------------------------------------------------------------------------------- the tab


@pytest.fixture(scope="module")
def driver(dashboard_run, tmp_path_factory):
    need_browser()
    downloads = tmp_path_factory.mktemp("downloads")
    with browser(1400, 1400) as chrome:
        chrome.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        chrome.downloads = downloads
        yield chrome


def open_tab(driver, board: str) -> None:
    """Open the FEATVIZ tab and step into its frame; wait until it has drawn."""
    driver.switch_to.default_content()
    driver.get("about:blank")  # a fresh page: the same address again would only move to its fragment
    driver.get(f"{board}/#featviz")
    frame = wait_for(lambda: driver.find_elements("css selector", "iframe"), "the FEATVIZ frame")[0]
    driver.switch_to.frame(frame)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")


def map_pixels(driver) -> np.ndarray:
    data = driver.execute_script("return document.getElementById('map').toDataURL('image/png')")
    from base64 import b64decode
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(b64decode(data.split(",", 1)[1]))).convert("RGB"))


def test_the_featviz_tab_appears_and_opens_on_the_last_layer_and_epoch(board, driver):
    open_tab(driver, board)
    assert driver.execute_script("return [document.body.dataset.layer, document.body.dataset.epoch]") == ["pool", "2"]
    cells = driver.find_elements("css selector", "#heatmap td.cell")
    assert len(cells) == len(LAYERS) * 3
    driver.switch_to.default_content()
    assert "FEATVIZ" in deep_text(driver).split()  # the tab's name in TensorBoard's header


def test_clicking_a_heatmap_cell_selects_that_layer_and_epoch(board, driver):
    open_tab(driver, board)
    driver.find_element("css selector", '#heatmap td.cell[data-layer="conv2"][data-epoch="0"]').click()
    wait_for(
        lambda: (
            driver.execute_script("return document.body.dataset.layer + '/' + document.body.dataset.epoch") == "conv2/0"
        ),
        "the selection",
    )
    selected = driver.find_element("css selector", "#heatmap td.cell.selected")
    assert (selected.get_attribute("data-layer"), selected.get_attribute("data-epoch")) == ("conv2", "0")
    assert driver.find_element("id", "layer").get_attribute("value") == "conv2"
    assert driver.find_element("id", "map-title").text.endswith("conv2 · epoch 0")


def test_moving_the_epoch_slider_redraws_a_different_map(board, driver):
    open_tab(driver, board)
    before = map_pixels(driver)
    driver.execute_script(
        "const s = document.getElementById('epoch'); s.value = '0'; s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: driver.execute_script("return document.body.dataset.epoch") == "0", "epoch 0")
    time.sleep(0.5)
    after = map_pixels(driver)
    changed = (np.abs(before.astype(int) - after.astype(int)).sum(axis=2) > 0).mean()
    assert changed > 0.002, changed
    assert driver.find_element("id", "epoch-label").text == "epoch 0"


def test_clicking_a_point_opens_the_inspector_with_the_callbacks_neighbours(board, driver, dashboard_run):
    from selenium.webdriver.common.action_chains import ActionChains

    _, visualizer = dashboard_run
    results = visualizer.seen[2]
    open_tab(driver, board)
    canvas = driver.find_element("id", "map")
    x, y = driver.execute_script("return window.featviz.screenPosition(arguments[0])", 40)
    left, top, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas
    )
    ActionChains(driver).move_to_element_with_offset(
        canvas, round(x - left - width / 2), round(y - top - height / 2)
    ).click().perform()
    query = wait_for(lambda: driver.find_elements("css selector", "#inspector .thumb.query"), "the inspector")[0]
    row = int(query.get_attribute("data-row"))  # the point under the mouse: 40, or one drawn on top of it
    assert int(query.get_attribute("data-index")) == int(results.bank.indices[row])
    for layer in LAYERS:
        shown = driver.find_elements("css selector", f'#inspector .layer-row[data-layer="{layer}"] .thumb')
        expected = results.bank.indices[results.stats[layer].indices[row]].tolist()
        assert [int(t.get_attribute("data-index")) for t in shown] == expected
        same = (results.bank.labels[results.stats[layer].indices[row]] == results.bank.labels[row]).tolist()
        assert ["same" in t.get_attribute("class") for t in shown] == same


def test_the_reviews_csv_download_holds_the_selected_images(board, driver, dashboard_run):
    _, visualizer = dashboard_run
    open_tab(driver, board)
    flagged = visualizer.wrong_cluster_indices["pool"]
    assert len(flagged) >= 2, "the run flags too few images to select"
    picked = flagged[:: max(1, len(flagged) // 3)][:3]
    for index in picked:
        driver.find_element("css selector", f'#review input.pick[data-index="{index}"]').click()
    driver.find_element("id", "download").click()
    path = wait_for(lambda: next(iter(Path(driver.downloads).glob("*.csv")), None), "the CSV download")
    rows = list(csv.DictReader(path.open()))
    assert [int(row["index"]) for row in rows] == picked
    names = visualizer.seen[2].class_names
    labels = dict(zip(visualizer.seen[2].bank.indices.tolist(), visualizer.seen[2].bank.labels.tolist(), strict=True))
    assert [row["label"] for row in rows] == [names[labels[i]] for i in picked]
    assert all(row["suggested_class"] != row["label"] for row in rows)


def test_a_map_of_a_large_banks_subsample_is_left_out_of_the_tabs_files_and_a_whole_map_is_kept(tmp_path):
    """The tab draws point i of a map as bank row i: a map of ``map_samples`` rows (a large bank's subsample,
    ``LayerMaps.rows``) would put those points on the wrong samples, so it is not written; a map of every
    row is written as it is."""
    from lightning_featviz.analysis.knn import neighbour_stats
    from lightning_featviz.analysis.maps import LayerMaps
    from lightning_featviz.capture.bank import BankData
    from lightning_featviz.dashboard.export import write_dashboard_epoch

    n = 30
    labels = torch.arange(n) % 3
    vectors = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    bank = BankData(
        torch.arange(n), labels, labels.clone(), torch.ones(n), {"whole": vectors, "sub": vectors * 2}, torch.empty(0)
    )
    stats = {layer: neighbour_stats(bank.vectors[layer], labels, 4, 3) for layer in ("whole", "sub")}
    whole = np.random.default_rng(0).normal(size=(n, 2))
    maps = {
        "whole": LayerMaps(maps={2: whole}),
        "sub": LayerMaps(maps={2: np.zeros((10, 2))}, rows=np.arange(0, n, 3)),
    }
    results = EpochResults(bank, bank, stats, ["a", "b", "c"], 4, 0)
    folder = write_dashboard_epoch(tmp_path, results, maps, {}, None, 0)
    arrays = read_epoch(folder, "epoch_0000.npz")
    maps_written = {key: value for key, value in arrays.items() if key.endswith("map2")}
    assert len(maps_written) == 1
    assert np.allclose(next(iter(maps_written.values())).reshape(n, 2), whole, atol=1e-6)
