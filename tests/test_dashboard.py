"""The FEATVIZ tab: the files the callback writes for it, its plugin's routes on a real TensorBoard server, and the
tab itself in headless Chromium.

One real Trainer run (this module's fixture) serves every test; the callback records each epoch's results as it
reports them, so the routes are checked against the callback's own arrays.
"""

from __future__ import annotations

import base64
import csv
import gzip
import importlib
import json
import re
import shutil
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import numpy as np
import pytest
import torch
from browser import browser, console_errors, deep_text, need_browser, tensorboard, wait_for
from conftest import TinyNet, tiny_trainer
from google.protobuf import text_format
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from selenium.webdriver.common.action_chains import ActionChains
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch.utils.data import Subset

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.analysis.neighbourhoods import map_rows
from lightning_featviz.cli import main
from lightning_featviz.dashboard.data import (
    FOLDER,
    PAGE_TILES,
    LayerEpoch,
    Samples,
    find_runs,
    read_epoch,
    read_index,
    write_epoch,
    write_samples,
)
from lightning_featviz.dashboard.plugin import FeatvizPlugin
from lightning_featviz.dashboard.standalone import page_data, shown_epochs, standalone_page
from lightning_featviz.demo.model import ClassificationData
from lightning_featviz.report.figures import EpochResults

LAYERS = ["input", "conv2", "pool"]
RUN = "lightning_logs/version_0"
SUBSAMPLED = "lightning_logs/version_1"  # the second run: maps of a subsample, on even epochs


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


def recorded_run(root: Path, digits_val, version: int, **options) -> RecordingVisualizer:
    """Three epochs of TinyNet on 120 validation digits, k = 5, every output every epoch (the routes are checked
    at each epoch), logged as ``lightning_logs/version_<version>`` under ``root``."""
    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 360)), digits_val.classes)
    visualizer = RecordingVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=120,
        outputs=OutputOptions(neighbour_grids=False, confusion=False, every_n_epochs=1),
        resources=ResourceOptions(background=False),
        **options,
    )
    torch.manual_seed(version)
    logger = TensorBoardLogger(root, version=version)
    tiny_trainer(root, max_epochs=3, logger=logger, callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
    return visualizer


@pytest.fixture(scope="module")
def dashboard_run(tmp_path_factory, digits_val) -> tuple[Path, RecordingVisualizer]:
    """The first run: 2-D maps of every sample on every epoch, no projector."""
    root = tmp_path_factory.mktemp("dashboard")
    return root, recorded_run(root, digits_val, 0, maps=MapOptions(dims=[2], every_n_epochs=1), projector=False)


@pytest.fixture(scope="module")
def subsampled_run(dashboard_run, digits_val) -> RecordingVisualizer:
    """A second run in the same log dir: maps of a 40-sample subsample of the 120-sample bank, on even epochs only."""
    return recorded_run(dashboard_run[0], digits_val, 1, maps=MapOptions(samples=40, every_n_epochs=2, dims=[2]))


@pytest.fixture(scope="module")
def board(dashboard_run, subsampled_run):
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


def test_a_cut_index_is_named_once_and_written_anew_with_the_next_epoch(tmp_path):
    n, k = 20, 3
    samples = Samples(np.arange(n), np.arange(n) % 3)
    write_epoch(tmp_path, 0, 0, k, ["a", "b", "c"], samples, np.zeros(n), np.ones(n), {"x": _layer(n, k, 0)})
    index = tmp_path / FOLDER / "index.json"
    index.write_bytes(index.read_bytes()[:30])  # cut short
    with pytest.warns(UserWarning, match=r"index\.json does not read .*written anew from epoch 1 on"):
        write_epoch(tmp_path, 1, 1, k, ["a", "b", "c"], samples, np.zeros(n), np.ones(n), {"x": _layer(n, k, 1)})
    assert [entry["epoch"] for entry in read_index(tmp_path / FOLDER)["epochs"]] == [1]
    assert not [path for path in (tmp_path / FOLDER).iterdir() if path.name.startswith(".")]  # no temporary left


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


def test_the_trajectory_words_are_stored_as_codes_into_the_epochs_phrases_and_served_per_sample(tmp_path):
    n, k = 6, 3
    words = ["unstable: flips between a and b", "", "consistently predicted as c since epoch 2"] * 2
    layer = _layer(n, k, 0)
    layer.dynamics, layer.trajectory = np.linspace(0, 1, n), np.full((2, n), 0.5)
    layer.trajectory_epochs, layer.words = np.array([1, 2]), words
    write_epoch(tmp_path, 2, 0, k, ["a", "b", "c"], Samples(np.arange(n), np.arange(n) % 3), np.zeros(n), np.ones(n),
                {"x": layer})  # fmt: skip
    arrays = read_epoch(tmp_path / FOLDER, "epoch_0002.npz")
    assert arrays["L0_words"].dtype == np.uint16 and len(arrays["L0_phrases"]) == 3  # each phrase stored once
    assert [str(arrays["L0_phrases"][code]) for code in arrays["L0_words"]] == words
    for row in range(n):  # the route's answer; a sample the history does not track has none
        status, found, _ = _serve(tmp_path, "inspect", run=".", epoch=2, row=row)
        assert status == 200 and found["trajectory"]["words"] == (words[row] or None)


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


def test_a_sample_set_written_in_format_1_is_served_as_one_page(tmp_path):
    """Format 1 (before pages) wrote one atlas, ``samples_<id>.jpg``, and no ``tiles``: it reads as page 0 of
    as many tiles as samples, which is where its tiles are."""
    from tensorboard.plugins.base_plugin import TBContext
    from werkzeug.test import Client

    n = 30
    samples = Samples(np.arange(n), np.arange(n) % 3, np.zeros((n, 8, 8, 3), np.uint8))
    write_epoch(tmp_path / "run", 0, 0, 3, ["a", "b", "c"], samples, np.zeros(n), np.ones(n), {"x": _layer(n, 3, 0)})
    folder = tmp_path / "run" / FOLDER
    key = samples.key()
    described = json.loads((folder / f"samples_{key}.json").read_text())
    del described["tiles"]
    (folder / f"samples_{key}.json").write_text(json.dumps(described))
    (folder / f"samples_{key}_0.jpg").rename(folder / f"samples_{key}.jpg")
    apps = FeatvizPlugin(TBContext(logdir=str(tmp_path))).get_plugin_apps()
    served = json.loads(Client(apps["/samples"]).get("/samples", query_string={"run": "run", "key": key}).get_data())
    assert served["tiles"] == n and served["columns"] == described["columns"]
    atlas = Client(apps["/atlas"]).get("/atlas", query_string={"run": "run", "key": key, "page": "0"})
    assert atlas.status_code == 200 and atlas.get_data() == (folder / f"samples_{key}.jpg").read_bytes()


def _serve(log_dir: Path, route: str, **params: object):
    """One request to the plugin's WSGI app of ``route`` over ``log_dir``: (status, JSON body, headers)."""
    from tensorboard.plugins.base_plugin import TBContext
    from werkzeug.test import Client

    app = FeatvizPlugin(TBContext(logdir=str(log_dir))).get_plugin_apps()[f"/{route}"]
    response = Client(app).get(f"/{route}", query_string={k: str(v) for k, v in params.items()})
    return response.status_code, json.loads(response.get_data()), response.headers


def test_a_broken_run_is_listed_with_its_reason_and_a_traversal_in_its_index_is_refused(tmp_path):
    n, k = 30, 3
    samples = Samples(np.arange(n), np.arange(n) % 3, np.zeros((n, 8, 8, 3), np.uint8))
    for run in ("good", "truncated", "traversal"):
        for epoch in range(2):
            layers = {"x": _layer(n, k, epoch)}
            write_epoch(tmp_path / run, epoch, epoch, k, ["a", "b", "c"], samples, np.zeros(n), np.ones(n), layers)
    truncated = tmp_path / "truncated" / FOLDER / "index.json"
    truncated.write_bytes(truncated.read_bytes()[:40])  # cut short, as a kill during a plain write would leave it
    (tmp_path / "outside").mkdir()
    np.savez(tmp_path / "outside" / "secret.npz", predictions=np.zeros(n))
    index_path = tmp_path / "traversal" / FOLDER / "index.json"
    index = json.loads(index_path.read_text())
    index["epochs"][1]["file"] = "../../outside/secret.npz"
    index_path.write_text(json.dumps(index))
    good = tmp_path / "good" / FOLDER
    (good / "epoch_0001.npz").write_bytes((good / "epoch_0001.npz").read_bytes()[:100])  # one epoch file cut short

    status, listed, headers = _serve(tmp_path, "runs")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    runs = {entry["run"]: entry for entry in listed}
    assert runs["good"]["epochs"] == [0, 1] and runs["traversal"]["epochs"] == [0, 1]
    assert runs["truncated"]["epochs"] == [] and "index.json of this run does not read" in runs["truncated"]["error"]

    status, body, _ = _serve(tmp_path, "inspect", run="traversal", epoch=1, row=0)
    assert status == 403 and "'../../outside/secret.npz', outside its dashboard folder" in body["error"]
    assert _serve(tmp_path, "inspect", run="traversal", epoch=0, row=0)[0] == 200
    status, body, _ = _serve(tmp_path, "run", run="truncated")
    assert status == 500 and "index.json of this run does not read" in body["error"]
    status, body, _ = _serve(tmp_path, "layer", run="good", layer="x")  # the epoch that reads is served
    assert status == 200 and [e["epoch"] for e in body["epochs"]] == [0]
    assert body["errors"][0]["epoch"] == 1 and "epoch_0001.npz of this run does not read" in body["errors"][0]["error"]
    status, body, _ = _serve(tmp_path, "inspect", run="good", epoch=1, row=0)
    assert status == 500 and "epoch_0001.npz" in body["error"]
    for route, params, message in [
        ("atlas", {"key": samples.key(), "page": "²"}, "Expected `page` to be a whole number"),
        ("inspect", {"epoch": 0, "row": "²"}, "Expected `row` to be a row in [0, 30)"),
        ("inspect", {"epoch": "--1", "row": 0}, "Expected `epoch` to be one of [0, 1]"),
        ("wrong", {"epoch": "1e0", "layer": "x"}, "Expected `epoch` to be one of [0, 1]"),
    ]:
        status, body, headers = _serve(tmp_path, route, run="good", **params)
        assert (status, headers["X-Content-Type-Options"]) == (400, "nosniff") and message in body["error"], body


def test_dashboard_must_be_a_bool():
    with pytest.raises(ValueError, match="Expected `dashboard` to be True or False, but got 'yes'"):
        FeatureVisualizer(["pool"], dashboard="yes")


# ---------------------------------------------------------------------------------------------- routes


def test_runs_route_lists_both_runs_with_every_analysed_epoch(board, dashboard_run, subsampled_run):
    _, visualizer = dashboard_run
    assert get(board, "runs") == [
        {"run": RUN, "epochs": sorted(visualizer.seen)},
        {"run": SUBSAMPLED, "epochs": sorted(subsampled_run.seen)},
    ]


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
        # the label-issue layer's training dynamics: the sample's probability of its label at every epoch so far
        dynamics, trajectory = results.dynamics, found["trajectory"]
        assert trajectory["layer"] == dynamics.layer == LAYERS[-1] and trajectory["epochs"] == [0, 1, 2]
        position = int(dynamics.positions(results.bank.indices[row : row + 1])[0])
        assert np.allclose(trajectory["probability"], dynamics.trajectory()[:, position].numpy(), atol=1e-3)
        assert trajectory["words"] == dynamics.words(position, results.class_names)  # the CSV's `dynamics`
    samples = get(board, "samples", run=RUN, key=found["reference"])
    assert samples["indices"] == results.bank.indices.tolist() and samples["labels"] == results.bank.labels.tolist()


def test_wrong_route_lists_the_callbacks_flagged_images_strongest_first(board, dashboard_run):
    _, visualizer = dashboard_run
    epoch = max(visualizer.seen)
    for layer in LAYERS:
        found = get(board, "wrong", run=RUN, epoch=epoch, layer=layer)
        assert [row["index"] for row in found["rows"]] == visualizer.wrong_cluster_indices[layer]
        labels, preds = visualizer.seen[epoch].bank.labels, visualizer.seen[epoch].bank.preds
        for row in found["rows"]:
            neighbour_labels = labels[row["neighbours"]]
            assert int((neighbour_labels == row["cluster"]).sum()) == row["count"] == round(row["strength"] * 5)
            assert row["prediction"] == int(preds[row["row"]])
            assert f"are '{row['cluster']}'" in row["reason"]
            dynamics = visualizer.seen[epoch].dynamics
            if layer == dynamics.layer:  # the dynamics score, for the review's order
                position = dynamics.positions(torch.tensor([row["index"]]))
                assert row["dynamics"] == pytest.approx(float(dynamics.scores[position]), abs=1e-4)
                assert row["words"] == dynamics.words(int(position[0]), visualizer.seen[epoch].class_names)
            else:
                assert row["dynamics"] is None and row["words"] is None


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
    with browser(1400, 1400, downloads=downloads) as chrome:
        chrome.downloads = downloads
        yield chrome


def open_tab(driver, board: str, run: str | None = None) -> None:
    """Open the FEATVIZ tab (on ``run``: a link with ``?featvizRun=``) and step into its frame; wait until it has
    drawn."""
    driver.switch_to.default_content()
    driver.get("about:blank")  # a fresh page: the same address again would only move to its fragment
    driver.get(f"{board}/{'?' + urlencode({'featvizRun': run}) if run else ''}#featviz")
    frame = wait_for(lambda: driver.find_elements("css selector", "iframe"), "the FEATVIZ frame")[0]
    driver.switch_to.frame(frame)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")


#: Where the tab draws a bank row's point (viewport pixels of its frame); nulls for a row its map leaves out.
POSITION = "return window.featviz.screenPosition(arguments[0])"


def map_pixels(driver) -> np.ndarray:
    data = driver.execute_script("return document.getElementById('map').toDataURL('image/png')")
    from base64 import b64decode
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(b64decode(data.split(",", 1)[1]))).convert("RGB"))


def pointer_at(driver, x: float, y: float) -> ActionChains:
    """Actions that start with the mouse at viewport point (x, y) of the tab's frame, over the map."""
    canvas = driver.find_element("id", "map")
    left, top, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas
    )
    return ActionChains(driver).move_to_element_with_offset(
        canvas, round(x - left - width / 2), round(y - top - height / 2)
    )


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
    _, visualizer = dashboard_run
    results = visualizer.seen[2]
    open_tab(driver, board)
    pointer_at(driver, *driver.execute_script(POSITION, 40)).click().perform()
    query = wait_for(lambda: driver.find_elements("css selector", "#inspector .thumb.query"), "the inspector")[0]
    row = int(query.get_attribute("data-row"))  # the point under the mouse: 40, or one drawn on top of it
    assert int(query.get_attribute("data-index")) == int(results.bank.indices[row])
    for layer in LAYERS:
        shown = driver.find_elements("css selector", f'#inspector .layer-row[data-layer="{layer}"] .thumb')
        expected = results.bank.indices[results.stats[layer].indices[row]].tolist()
        assert [int(t.get_attribute("data-index")) for t in shown] == expected
        same = (results.bank.labels[results.stats[layer].indices[row]] == results.bank.labels[row]).tolist()
        assert ["same" in t.get_attribute("class") for t in shown] == same
    # its label probability at each of the 3 epochs, drawn as a line with one point per epoch
    points = driver.find_elements("css selector", "#inspector .trajectory-box .trajectory-point")
    assert len(points) == 3 and points[-1].find_element("tag name", "title").get_attribute("textContent").startswith(
        "epoch 2: "
    )


def short_words(words: str) -> str:
    """The review's short form of a trajectory in words (``shortWords`` of static/index.js)."""
    for pattern, short in [
        (r"^consistently predicted as (.+) since", r"consistently \1 since"),
        (r"^unstable: flips between (.+) and (.+)$", r"flips \1 ↔ \2"),
        (r"^learnt: predicted as its label since", "learnt since"),
        (r"^predicted as (.+) since", r"predicted \1 since"),
    ]:
        words = re.sub(pattern, short, words)
    return words


def trajectory_words(dashboard_run, epoch: int) -> dict[int, str]:
    """Dataset index -> the trajectory in words at ``epoch`` (the label-issue CSV's ``dynamics`` column)."""
    dynamics, names = dashboard_run[1].seen[epoch].dynamics, dashboard_run[1].seen[epoch].class_names
    return {int(i): dynamics.words(p, names) for p, i in enumerate(dynamics.history.indices.tolist())}


def test_the_inspector_and_the_review_say_the_trajectory_in_words_of_the_epoch_on_screen(board, driver, dashboard_run):
    """Under the inspected sample's trajectory, what its predictions did in words, as the label-issue CSV's
    ``dynamics`` column says it at the epoch on screen; each review row at that layer says it short (whole on
    hover); a slider move to epoch 0 (one epoch seen) changes both to that epoch's words."""
    _, visualizer = dashboard_run
    open_tab(driver, board)
    pointer_at(driver, *driver.execute_script(POSITION, 40)).click().perform()
    head = wait_for(lambda: driver.find_elements("css selector", "#inspector .inspected"), "the inspector")[0]
    inspected = int(head.get_attribute("data-index"))
    said = {}
    for epoch in (2, 0):
        if epoch != 2:
            slide = "const s = document.getElementById('epoch'); s.value = arguments[0];"
            driver.execute_script(slide + "s.dispatchEvent(new Event('input'));", str(epoch))
        wait_for(lambda e=epoch: shown(driver) == f"{RUN}|pool|{e}", f"epoch {epoch} on screen")
        words = trajectory_words(dashboard_run, epoch)
        said[epoch] = driver.find_element("css selector", "#inspector .trajectory-box .trajectory-words").text
        assert said[epoch] == words[inspected]
        rows = driver.find_elements("css selector", "#review tr[data-index]")
        assert rows, f"nothing flagged at epoch {epoch}"
        for row in rows:
            cell = row.find_element("css selector", "td.dynamics .dynamics-words")
            expected = words[int(row.get_attribute("data-index"))]
            assert (cell.get_attribute("title"), cell.text) == (expected, short_words(expected))
    assert said[0] == "one epoch seen" != said[2]


def download(driver, button: str) -> tuple[str, list[dict[str, str]]]:
    """Click a download button of the tab; the saved CSV's name and rows (the download folder emptied first)."""
    for old in Path(driver.downloads).iterdir():
        old.unlink()
    driver.find_element("id", button).click()
    path = wait_for(lambda: next(iter(Path(driver.downloads).glob("*.csv")), None), "the CSV download")
    rows = wait_for(lambda: list(csv.DictReader(path.open())), "the CSV's rows")
    return path.name, rows


def test_the_reviews_csv_download_holds_the_ticked_images_named_by_run_layer_and_epoch(board, driver, dashboard_run):
    _, visualizer = dashboard_run
    open_tab(driver, board)
    flagged = visualizer.wrong_cluster_indices["pool"]
    assert len(flagged) >= 2, "the run flags too few images to select"
    picked = flagged[:: max(1, len(flagged) // 3)][:3]
    for index in picked:
        driver.find_element("css selector", f'#review input.pick[data-index="{index}"]').click()
    name, rows = download(driver, "download")
    assert name == "lightning_logs_version_0_pool_epoch2_wrong_cluster_ticked.csv"
    assert [int(row["index"]) for row in rows] == picked
    assert [int(row["rank"]) for row in rows] == [flagged.index(i) + 1 for i in picked]
    names = visualizer.seen[2].class_names
    labels = dict(zip(visualizer.seen[2].bank.indices.tolist(), visualizer.seen[2].bank.labels.tolist(), strict=True))
    assert [row["label"] for row in rows] == [names[labels[i]] for i in picked]
    assert all(row["cluster"] != row["label"] for row in rows)


def _choose(driver, select: str, value: str) -> None:
    driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];s.dispatchEvent(new Event('change'));",
        select,
        value,
    )


def test_the_dynamics_order_sorts_the_review_by_its_score_and_the_download_keeps_the_callbacks_rank(
    board, driver, dashboard_run
):
    open_tab(driver, board)  # pool, epoch 2: the label-issue layer, whose rows have a dynamics score
    expected = [row["index"] for row in callback_csv(dashboard_run, 2)]
    picked = [expected[-1], expected[0]]
    for index in picked:
        driver.find_element("css selector", f'#review input.pick[data-index="{index}"]').click()
    _choose(driver, "review-order", "dynamics")
    table = "#review table.review"
    wait_for(lambda: driver.find_element("css selector", table).get_attribute("data-order") == "dynamics", "the order")
    cells = [cell.text.split("\n")[0] for cell in driver.find_elements("css selector", "#review td.dynamics")]
    scores = [-1.0 if text == "–" else float(text) for text in cells]
    assert len(set(scores)) > 1 and scores == sorted(scores, reverse=True)
    heading = driver.find_element("css selector", "#review .review-heading").text
    assert heading.endswith("(highest dynamics score first).")
    listed = [r.get_attribute("data-index") for r in driver.find_elements("css selector", "#review tr[data-index]")]
    assert sorted(listed) == sorted(expected)
    checked = driver.find_elements("css selector", "#review input.pick:checked")
    assert sorted(box.get_attribute("data-index") for box in checked) == sorted(picked)  # the ticks stay
    _, rows = download(driver, "download")
    assert [row["index"] for row in rows] == picked[::-1]  # the callback's rank, whatever the order on screen
    _, rows = download(driver, "download-all")
    assert [row["index"] for row in rows] == expected
    _choose(driver, "layer", "conv2")  # no dynamics score there: the list keeps its rank and says why
    wait_for(lambda: shown(driver) == f"{RUN}|conv2|2", "conv2 on screen")
    heading = driver.find_element("css selector", "#review .review-heading").text
    assert heading.endswith("(strongest first: this layer has no dynamics score).")
    rows = driver.find_elements("css selector", "#review tr[data-index]")
    ranks = [row.find_elements("css selector", "td")[1].text for row in rows]
    assert ranks == [str(rank) for rank in range(1, len(ranks) + 1)]


def callback_csv(dashboard_run, epoch: int, layer: str = "pool") -> list[dict[str, str]]:
    """The wrong-cluster list the callback wrote for ``epoch`` (``featviz_wrong_cluster/epoch_{e}_{layer}.csv``)."""
    path = dashboard_run[0] / RUN / "featviz_wrong_cluster" / f"epoch_{epoch:03d}_{layer}.csv"
    return list(csv.DictReader(path.open()))


def shown(driver) -> str:
    """``run|layer|epoch`` once every view of the tab belongs to the epoch and layer on screen, else ''."""
    return driver.execute_script("return document.body.dataset.shown || ''")


def assert_views_belong_to(driver, dashboard_run, epoch: int, inspected: int) -> None:
    """The review, the inspector and the list's CSV export show ``epoch`` of pool, as the callback computed it."""
    _, visualizer = dashboard_run
    results = visualizer.seen[epoch]
    expected = callback_csv(dashboard_run, epoch)
    assert len(expected) >= 2, f"too few flagged images at epoch {epoch} to tell two lists apart"
    table = driver.find_element("css selector", "#review table.review")
    assert (table.get_attribute("data-layer"), table.get_attribute("data-epoch")) == ("pool", str(epoch))
    listed = [
        int(r.get_attribute("data-index")) for r in driver.find_elements("css selector", "#review tr[data-index]")
    ]
    assert listed == [int(row["index"]) for row in expected]
    head = driver.find_element("css selector", "#inspector .inspected")
    assert (head.get_attribute("data-epoch"), head.get_attribute("data-index")) == (str(epoch), str(inspected))
    row = results.bank.indices.tolist().index(inspected)
    neighbours = driver.find_elements("css selector", '#inspector .layer-row[data-layer="pool"] .thumb')
    assert [int(t.get_attribute("data-index")) for t in neighbours] == results.bank.indices[
        results.stats["pool"].indices[row]
    ].tolist()
    name, rows = download(driver, "download-all")
    assert name == f"lightning_logs_version_0_pool_epoch{epoch}_wrong_cluster.csv"
    assert [r.keys() for r in rows] and set(rows[0]) <= set(expected[0])
    for got, want in zip(rows, expected, strict=True):
        assert float(got.pop("share")) == pytest.approx(float(want["share"]))
        assert got == {column: want[column] for column in got}


def test_after_the_slider_and_after_play_review_inspector_and_export_belong_to_the_shown_epoch(
    board, driver, dashboard_run
):
    """Epochs flag different images: the list, the inspected sample's neighbours and the CSV export follow the
    epoch on screen, compared with the callback's own CSV of that epoch; quick slider moves whose answers cross
    leave the last epoch's views."""
    open_tab(driver, board)
    lists = {e: [row["index"] for row in callback_csv(dashboard_run, e)] for e in (0, 1, 2)}
    assert len({tuple(v) for v in lists.values()}) > 1, "every epoch flags the same images: nothing to tell apart"
    pointer_at(driver, *driver.execute_script(POSITION, 40)).click().perform()
    head = wait_for(lambda: driver.find_elements("css selector", "#inspector .inspected"), "the inspector")[0]
    inspected = int(head.get_attribute("data-index"))
    assert_views_belong_to(driver, dashboard_run, 2, inspected)
    driver.execute_script(  # three slider moves in one go: the answers of 1 and 2 may come after those of 0
        "const s = document.getElementById('epoch');"
        "for (const v of ['1', '2', '0']) { s.value = v; s.dispatchEvent(new Event('input')); }"
    )
    wait_for(lambda: shown(driver) == f"{RUN}|pool|0", "epoch 0 on screen")
    assert_views_belong_to(driver, dashboard_run, 0, inspected)
    play = driver.find_element("id", "play")
    play.click()
    wait_for(lambda: driver.execute_script("return document.getElementById('epoch').value") != "0", "a play step")
    play.click()
    epoch = int(wait_for(lambda: (s := shown(driver)) and s.split("|")[2], "play to stop on an epoch"))
    assert driver.find_element("id", "epoch-label").text == f"epoch {epoch}"
    assert_views_belong_to(driver, dashboard_run, epoch, inspected)


def test_a_subsampled_map_is_served_with_its_bank_rows_and_matches_the_projectors_map(
    board, dashboard_run, subsampled_run
):
    """A map of ``maps.samples`` rows (40 of 120 here) comes with the bank rows it shows; its points, placed on those
    rows, are the projector's map of the same dataset indices (written by another writer, read back from its TSV)."""
    found = get(board, "layer", run=SUBSAMPLED, layer="pool")
    mapped = {entry["epoch"]: entry for entry in found["epochs"] if entry["maps"]}
    assert sorted(mapped) == [0, 2]  # maps.every_n_epochs=2
    for epoch, entry in mapped.items():
        bank = subsampled_run.seen[epoch].bank
        assert entry["rows"] == map_rows(bank.labels, bank.indices, 40, 0).tolist()
        assert len(entry["maps"]["2"]) == 2 * 40 and len(entry["predictions"]) == 120
    log_dir = dashboard_run[0] / SUBSAMPLED
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    embedding = next(e for e in config.embeddings if e.tensor_name == "latest/epoch_002/pool/tsne_2d")
    points = np.loadtxt(log_dir / embedding.tensor_path, delimiter="\t")[:, :2]
    metadata = list(csv.DictReader((log_dir / embedding.metadata_path).open(), delimiter="\t"))
    row_of = {index: row for row, index in enumerate(subsampled_run.seen[2].bank.indices.tolist())}
    served = dict(zip(mapped[2]["rows"], np.array(mapped[2]["maps"]["2"], float).reshape(-1, 2), strict=True))
    expected = np.array([served[row_of[int(line["index"])]] for line in metadata])
    assert len(metadata) == 40 and np.allclose(points, expected, rtol=1e-3, atol=2e-3)


def test_thumbnails_are_paged_and_each_rows_tile_is_on_its_page(tmp_path):
    """2,500 samples: three pages of at most PAGE_TILES tiles; row r is tile r % PAGE_TILES of page r // PAGE_TILES,
    read back from the JPEG files (each thumbnail one flat colour, so JPEG keeps it within a few levels)."""
    n, size = 2500, 8
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    thumbnails = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3))
    samples = Samples(np.arange(n), np.arange(n) % 3, thumbnails)
    key = write_samples(tmp_path, samples)
    described = json.loads((tmp_path / f"samples_{key}.json").read_text())
    assert described["tiles"] == PAGE_TILES and described["thumbnail"] == size
    pages = sorted(tmp_path.glob(f"samples_{key}_*.jpg"))
    assert len(pages) == -(-n // PAGE_TILES) == 3
    for row in (0, 1, 31, 32, 1023, 1024, 2047, 2100, n - 1):
        page, tile = divmod(row, described["tiles"])
        r, c = divmod(tile, described["columns"])
        with Image.open(tmp_path / f"samples_{key}_{page}.jpg") as image:
            pixels = np.asarray(image.convert("RGB"))
        centre = pixels[r * size + 2 : r * size + 6, c * size + 2 : c * size + 6].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - colours[row]).max() < 12, (row, centre, colours[row])


def _coloured(pixels: np.ndarray) -> int:
    """How many pixels of an (H, W, 3) canvas are coloured (a class colour, not white, grey or black)."""
    wide = pixels.astype(np.int16)
    return int(((wide.max(axis=2) - wide.min(axis=2)) > 40).sum())


def _open_run(driver, run: str) -> None:
    driver.execute_script(
        "const s = document.getElementById('run'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));", run
    )
    wait_for(lambda: driver.find_element("id", "map-title").text.startswith(run), f"the run {run}")


def test_a_subsampled_map_draws_its_rows_and_a_click_inspects_the_sample_under_the_mouse(board, driver, subsampled_run):
    open_tab(driver, board, run=SUBSAMPLED)  # a link to the run
    assert driver.find_element("id", "run").get_attribute("value") == SUBSAMPLED
    assert driver.find_element("id", "map-title").text.endswith("map of 40 of 120 samples (maps.samples)")
    bank = subsampled_run.seen[2].bank
    rows = map_rows(bank.labels, bank.indices, 40, 0).tolist()
    unmapped = next(row for row in range(120) if row not in rows)
    assert all(value is None for value in driver.execute_script(POSITION, unmapped))  # NaN: not drawn
    pointer_at(driver, *driver.execute_script(POSITION, rows[5])).click().perform()
    query = wait_for(lambda: driver.find_elements("css selector", "#inspector .thumb.query"), "the inspector")[0]
    assert int(query.get_attribute("data-row")) in rows  # a mapped sample: rows[5], or one drawn on top of it
    assert _coloured(map_pixels(driver)) > 40 * 10  # 40 points of 5 x 5 px, some overlapping


def test_the_slider_over_an_epoch_without_a_map_says_so_and_the_inspector_still_works(board, driver, subsampled_run):
    open_tab(driver, board)
    _open_run(driver, SUBSAMPLED)
    driver.execute_script(
        "const s = document.getElementById('epoch'); s.value = '1'; s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: driver.execute_script("return document.body.dataset.epoch") == "1", "epoch 1")
    time.sleep(0.5)
    pixels = map_pixels(driver)
    assert _coloured(pixels) == 0  # no point drawn: the canvas holds the grey "no map" lines
    height, width = pixels.shape[:2]  # said in its middle: a page scrolled down to the inspector still shows them
    assert (pixels[height // 2 - 20 : height // 2 + 30, width // 4 : -width // 4].max(axis=2) < 160).sum() > 100
    title = driver.find_element("id", "map-title").text
    assert title.endswith("epoch 1 · no map at this epoch (maps at epochs 0, 2)")
    index = int(subsampled_run.seen[1].bank.indices[7])
    search = driver.find_element("id", "search")
    search.clear()
    search.send_keys(str(index) + "\n")
    query = wait_for(lambda: driver.find_elements("css selector", "#inspector .thumb.query"), "the inspector")[0]
    assert int(query.get_attribute("data-index")) == index
    shown = driver.find_elements("css selector", '#inspector .layer-row[data-layer="pool"] .thumb')
    expected = subsampled_run.seen[1].bank.indices[subsampled_run.seen[1].stats["pool"].indices[7]].tolist()
    assert [int(t.get_attribute("data-index")) for t in shown] == expected  # epoch 1's neighbours
    search.clear()
    search.send_keys("\n")  # an empty box asks nothing: no complaint, and the inspected image stays
    time.sleep(0.5)
    assert driver.find_element("id", "search-message").text == ""
    assert driver.find_element("css selector", "#inspector .thumb.query").get_attribute("data-index") == str(index)


def test_comparing_two_runs_draws_the_other_runs_map_beside_this_one(board, driver):
    open_tab(driver, board)
    _open_run(driver, SUBSAMPLED)
    driver.execute_script(
        "const s = document.getElementById('compare'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
        RUN,
    )
    wait_for(lambda: driver.find_element("id", "compare-box").is_displayed(), "the second map")
    assert driver.find_element("id", "compare-title").text == f"{RUN} · pool · epoch 2"
    data = driver.execute_script("return document.getElementById('map-compare').toDataURL('image/png')")
    from base64 import b64decode
    from io import BytesIO

    other = np.asarray(Image.open(BytesIO(b64decode(data.split(",", 1)[1]))).convert("RGB"))
    assert _coloured(other) > 120 * 10  # the other run's 120 points


def test_hovering_a_point_shows_its_thumbnail_label_prediction_and_purity(board, driver, dashboard_run):
    results = dashboard_run[1].seen[2]
    open_tab(driver, board)
    pointer_at(driver, *driver.execute_script(POSITION, 12)).perform()
    tip = wait_for(lambda: next(iter(driver.find_elements("css selector", "#tooltip:not([hidden])")), None), "tooltip")
    row = int(tip.find_element("css selector", ".thumb").get_attribute("data-row"))  # 12, or one drawn on top
    names, labels, preds = results.class_names, results.bank.labels, results.bank.preds
    purity = float(results.stats["pool"].purity[row])
    assert f"#{int(results.bank.indices[row])}" in tip.text
    assert f"label: {names[labels[row]]}" in tip.text and f"prediction: {names[preds[row]]}" in tip.text
    assert f"purity: {purity:.2f}" in tip.text
    assert "atlas?" in tip.find_element("css selector", ".thumb").get_attribute("style")  # its thumbnail


def test_dragging_a_box_lists_the_points_inside_it(board, driver):
    open_tab(driver, board)
    points = np.array([driver.execute_script(POSITION, row) for row in range(120)])
    canvas = driver.find_element("id", "map")
    left, top, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas
    )
    x0, y0, x1, y1 = left + 0.3 * width, top + 0.3 * height, left + 0.7 * width, top + 0.7 * height
    pointer_at(driver, x0, y0).click_and_hold().move_by_offset(round(x1 - x0), round(y1 - y0)).release().perform()
    heading = wait_for(lambda: next(iter(driver.find_elements("css selector", "#selection h3")), None), "selection")
    shown = {int(t.get_attribute("data-row")) for t in driver.find_elements("css selector", "#selection .thumb")}
    inside = {row for row, (x, y) in enumerate(points) if x0 + 2 < x < x1 - 2 and y0 + 2 < y < y1 - 2}
    outside = {row for row, (x, y) in enumerate(points) if not (x0 - 2 < x < x1 + 2 and y0 - 2 < y < y1 + 2)}
    assert len(inside) >= 3, "the box holds too few points to say anything"
    assert inside <= shown and not (shown & outside)  # points within 2 px of an edge may fall either way
    assert heading.text == f"{len(shown)} selected"


def test_colouring_by_correct_draws_green_and_red_points_as_the_predictions_say(board, driver, dashboard_run):
    results = dashboard_run[1].seen[2]
    wrong = int((results.bank.preds != results.bank.labels).sum())
    open_tab(driver, board)
    before = map_pixels(driver)
    driver.execute_script(
        "const s = document.getElementById('colour'); s.value = 'correct'; s.dispatchEvent(new Event('change'));"
    )
    wait_for(lambda: not np.array_equal(map_pixels(driver), before), "the map in its new colours")
    pixels = map_pixels(driver).reshape(-1, 3)

    def count(colour: tuple[int, int, int]) -> int:
        return int((pixels == colour).all(axis=1).sum())

    green, red = count((0x2C, 0xA0, 0x2C)), count((0xD6, 0x27, 0x28))
    assert green > 0 and (red > 0) == (wrong > 0), (green, red, wrong)
    # no class colour but those two (classes 2 and 3 share them): blue, orange, purple ... are gone
    others = ["1f77b4", "ff7f0e", "9467bd", "8c564b", "e377c2", "bcbd22", "17becf"]  # (grey: anti-aliased rings)
    assert sum(count(tuple(bytes.fromhex(c))) for c in others) == 0


def test_play_steps_through_the_epochs_and_stop_halts_it(board, driver):
    open_tab(driver, board)
    epoch = lambda: driver.execute_script("return document.body.dataset.epoch")  # noqa: E731
    driver.find_element("id", "play").click()
    seen = {epoch()}
    wait_for(lambda: seen.add(epoch()) or len(seen) >= 3, "play to step through the three epochs")
    driver.find_element("id", "play").click()
    stopped = epoch()
    time.sleep(2.0)  # more than two of play's 0.8 s steps
    assert epoch() == stopped and driver.find_element("id", "play").text == "▶ play"


def test_every_epochs_map_is_drawn_at_one_size(board, driver, dashboard_run):
    """Warm-started maps contract from epoch to epoch; the tab centres each and scales it to one RMS radius, so a
    late epoch's map is not a dot in the middle of the first epoch's bounds."""
    open_tab(driver, board)
    radii = []
    for position in ("0", "2"):
        driver.execute_script(
            "const s = document.getElementById('epoch'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
            position,
        )
        shown = lambda p=position: driver.execute_script("return document.body.dataset.epoch") == p  # noqa: E731
        wait_for(shown, f"epoch {position}")
        points = np.array([driver.execute_script(POSITION, row) for row in range(120)], dtype=float)
        radii.append(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))
    assert radii[0] == pytest.approx(radii[1], rel=1e-3) and radii[0] > 50, radii


def _rect(driver, element) -> list[float]:
    """An element's box in its document (left, top, width, height): where it is on the page, not in the view."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]",
        element,
    )


@pytest.mark.parametrize("size", [(1280, 800), (1600, 1000)])
def test_the_inspector_opens_in_view_beside_the_map_after_a_click(board, driver, size):
    driver.set_window_size(*size)
    try:
        open_tab(driver, board)
        canvas = driver.find_element("id", "map")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        view = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        points = [driver.execute_script(POSITION, row) for row in range(120)]
        middle = np.array(view) / 2  # a point near the middle of the view: one a person sees and clicks
        x, y = min(points, key=lambda p: float(np.hypot(*(np.array(p) - middle))))
        assert 0 < y < view[1], "no point in view to click"
        map_before = _rect(driver, canvas)
        pointer_at(driver, x, y).click().perform()
        head = wait_for(lambda: driver.find_elements("css selector", "#inspector .inspected"), "the inspector")[0]
        left, top, right, bottom = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]", head
        )
        assert 0 <= left and right <= view[0] and 0 <= top and bottom <= view[1], (left, top, right, bottom, view)
        assert _rect(driver, canvas) == map_before  # the map did not move for it
        assert map_before[2] > 0.55 * view[0]  # the map takes most of the width
        driver.switch_to.default_content()  # and the tab's frame is itself in the window's view
        frame = driver.find_element("css selector", "iframe")
        frame_box = driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom]", frame
        )
        window_height = driver.execute_script("return window.innerHeight")
        assert 0 <= frame_box[0] and frame_box[0] + top >= 0 and frame_box[0] + bottom <= window_height
    finally:
        driver.switch_to.default_content()
        driver.set_window_size(1400, 1400)


def test_selection_and_compare_leave_the_map_in_place_and_compare_shows_both_runs_heatmaps_and_numbers(board, driver):
    open_tab(driver, board)
    canvas = driver.find_element("id", "map")
    before = _rect(driver, canvas)
    left, top, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", canvas
    )
    pointer_at(driver, left + 0.2 * width, top + 0.2 * height).click_and_hold().move_by_offset(
        round(0.6 * width), round(0.6 * height)
    ).release().perform()
    wait_for(lambda: driver.find_elements("css selector", "#selection .thumb"), "the selection")
    assert _rect(driver, canvas) == before
    driver.execute_script(
        "const s = document.getElementById('compare'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
        SUBSAMPLED,
    )
    wait_for(lambda: driver.find_element("id", "compare-box").is_displayed(), "the second map")
    assert _rect(driver, canvas) == before
    heatmaps = wait_for(
        lambda: (
            len(driver.find_elements("css selector", "table.heatmap")) == 2
            and driver.find_elements("css selector", "table.heatmap")
        ),
        "two heatmaps",
    )
    assert sorted(t.get_attribute("data-run") for t in heatmaps) == [RUN, SUBSAMPLED]
    numbers = driver.find_element("id", "compare-numbers").text
    for run in (RUN, SUBSAMPLED):
        layer = next(x for x in get(board, "run", run=run)["epochs"][-1]["layers"] if x["name"] == "pool")
        assert f"{run}: kNN purity {layer['purity']:.2f}, accuracy {layer['accuracy']:.2f}" in numbers, numbers
    compare = driver.find_element("id", "map-compare")
    assert _rect(driver, compare)[2:] == before[2:]  # both maps one size


def test_a_slider_step_moves_the_points_over_several_frames(board, driver):
    """The transition between epochs is drawn frame by frame (requestAnimationFrame), not as one jump: over 300 ms,
    and in at least three frames between the two maps however busy the browser (so no clock is asserted here)."""
    open_tab(driver, board)
    driver.execute_script(
        "const s = document.getElementById('epoch'); s.value = '1'; s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: shown(driver) == f"{RUN}|pool|1", "epoch 1")
    frames = wait_for(lambda: driver.execute_script("return window.featviz.transitions.at(-1)"), "the transition")
    assert frames >= 3, frames


def test_a_review_rows_neighbours_sit_on_one_line_in_a_narrow_window(board, driver):
    """Each review row shows its k neighbours on one line, left to right, in a 700-px window (they wrapped 8 + 2 in a
    1400-px one at k = 10); the list scrolls sideways instead."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    driver.set_window_size(700, height)
    try:
        open_tab(driver, board)
        rows = driver.find_elements("css selector", "#review tr[data-index]")
        assert rows, "no flagged image to show"
        for row in rows[:5]:
            thumbs = row.find_elements("css selector", "td.thumbs .thumb")
            assert len(thumbs) == 5  # k
            tops = {round(thumb.rect["y"]) for thumb in thumbs}
            lefts = [thumb.rect["x"] for thumb in thumbs]
            assert len(tops) == 1 and lefts == sorted(lefts), (tops, lefts)
    finally:
        driver.set_window_size(width, height)


def test_a_thumbnail_shows_its_own_tile_fitted_to_its_frame_and_nothing_of_the_next(board, driver):
    """The review's thumbnails (48 px in a 3-px frame) against their tile of the served atlas, scaled to the 42-px
    inside: what shows is that tile, whole (an atlas scaled for the outer size showed a sliver of the next tile)."""
    from io import BytesIO

    key = get(board, "run", run=RUN)["epochs"][-1]["samples"]
    described = get(board, "samples", run=RUN, key=key)
    size, columns = described["thumbnail"], described["columns"]
    with urlopen(f"{board}/data/plugin/featviz/atlas?{urlencode({'run': RUN, 'key': key, 'page': 0})}") as answer:
        atlas = Image.open(BytesIO(answer.read())).convert("RGB")
    open_tab(driver, board)
    thumbs = driver.find_elements("css selector", "#review tr[data-index] td:nth-child(3) .thumb")[:4]
    assert thumbs, "no flagged image to show"

    def coarse(image: Image.Image) -> np.ndarray:  # 7 x 7 means: the browser's resampling (sharp or smooth) aside
        return np.asarray(image.resize((7, 7), Image.Resampling.BOX)).astype(int)

    for node in thumbs:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", node)
        shown = Image.open(BytesIO(node.screenshot_as_png)).convert("RGB").crop((3, 3, 45, 45))  # inside the frame
        r, c = divmod(int(node.get_attribute("data-row")), columns)
        tile = atlas.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
        # the geometry: one tile scaled to the frame's inside, clipped there
        style = driver.execute_script(
            "const s = getComputedStyle(arguments[0]);"
            "return [s.backgroundSize, s.backgroundPosition, s.backgroundClip, s.backgroundOrigin]",
            node,
        )
        assert style == [f"{columns * 42}px auto", f"{-c * 42}px {-r * 42}px", "content-box", "content-box"], style
        fitted, scaled_for_outside = tile.resize((42, 42)), tile.resize((48, 48)).crop((0, 0, 42, 42))
        error = np.abs(coarse(shown) - coarse(fitted)).mean()
        wrong = np.abs(coarse(shown) - coarse(scaled_for_outside)).mean()
        assert error < 0.7 * wrong, (r, c, error, wrong)


def test_new_epochs_also_brings_a_run_started_since_the_tab_opened_into_the_run_menu(board, driver, dashboard_run):
    open_tab(driver, board)
    late = dashboard_run[0] / "lightning_logs" / "version_7"
    shutil.copytree(dashboard_run[0] / RUN / FOLDER, late / FOLDER)
    try:
        wait_for(
            lambda: any(r["run"] == "lightning_logs/version_7" for r in get(board, "runs")), "the plugin to see it"
        )
        driver.find_element("id", "refresh").click()

        def listed(menu: str) -> bool:
            options = driver.find_elements("css selector", f"#{menu} option")
            return "lightning_logs/version_7" in [o.get_attribute("value") for o in options]

        wait_for(lambda: listed("run") and listed("compare"), "the new run in the run and compare menus")
        assert driver.find_element("id", "run").get_attribute("value") == RUN  # the run on screen stays
    finally:
        shutil.rmtree(late)


def test_the_tab_logs_no_console_error(board, driver):
    """Every test of the tab above ran in this browser: the console (every page and frame) holds no error."""
    open_tab(driver, board)
    assert console_errors(driver) == []


# ---------------------------------------------------------------------------------------------- the standalone page


@pytest.fixture(scope="module")
def standalone(dashboard_run, tmp_path_factory) -> Path:
    """The tab as one file, written from the first run's dashboard files, in a folder of its own."""
    path = tmp_path_factory.mktemp("standalone") / "featviz.html"
    path.write_text(standalone_page(dashboard_run[0] / RUN), encoding="utf-8")
    return path


def test_the_standalone_page_holds_the_plugins_own_answers_for_its_run(board, dashboard_run):
    data = page_data(dashboard_run[0] / RUN, RUN)
    assert data["runs"] == [{"run": RUN, "epochs": [0, 1, 2]}]
    assert data["run"] == get(board, "run", run=RUN)
    for layer in LAYERS:
        assert data["layers"][layer] == get(board, "layer", run=RUN, layer=layer)
        for epoch in (0, 1, 2):
            assert data["wrong"][f"{epoch}/{layer}"] == get(board, "wrong", run=RUN, epoch=epoch, layer=layer)
    for key, described in data["samples"].items():
        assert described == get(board, "samples", run=RUN, key=key)


def test_the_standalone_page_opens_from_a_file_and_its_views_follow_the_slider_as_the_tabs_do(
    standalone, driver, dashboard_run
):
    """Opened from file:// with no server: the heatmap of every layer and epoch, and after a click and a slider move
    the review, the inspector (its trajectory and words too) and the CSV export of the epoch on screen, compared
    with the callback's own."""
    driver.switch_to.default_content()
    driver.get(standalone.as_uri())
    wait_for(lambda: shown(driver) == f"{RUN}|pool|2", "the page to draw the last epoch")
    assert len(driver.find_elements("css selector", "#heatmap td.cell")) == len(LAYERS) * 3
    assert not driver.find_elements("id", "refresh")  # a file gains no epochs
    pointer_at(driver, *driver.execute_script(POSITION, 40)).click().perform()
    head = wait_for(lambda: driver.find_elements("css selector", "#inspector .inspected"), "the inspector")[0]
    inspected = int(head.get_attribute("data-index"))
    assert_views_belong_to(driver, dashboard_run, 2, inspected)
    said = driver.find_element("css selector", "#inspector .trajectory-box .trajectory-words").text
    assert said == trajectory_words(dashboard_run, 2)[inspected]
    assert len(driver.find_elements("css selector", "#inspector .trajectory-point")) == 3
    driver.execute_script(
        "const s = document.getElementById('epoch'); s.value = '0'; s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: shown(driver) == f"{RUN}|pool|0", "epoch 0 on screen")
    assert_views_belong_to(driver, dashboard_run, 0, inspected)
    said = driver.find_element("css selector", "#inspector .trajectory-box .trajectory-words").text
    assert said == trajectory_words(dashboard_run, 0)[inspected] == "one epoch seen"
    assert len(driver.find_elements("css selector", "#inspector .trajectory-point")) == 1
    thumbnail = driver.find_element("css selector", "#review .thumb").get_attribute("style")
    assert "data:image/jpeg;base64," in thumbnail
    assert console_errors(driver) == []


def test_the_standalone_page_keeps_the_first_and_last_of_evenly_spread_epochs():
    assert shown_epochs([0, 1, 2], 20) == [0, 1, 2]
    kept = shown_epochs(list(range(100)), 20)
    assert len(kept) == 20 and kept[0] == 0 and kept[-1] == 99 and kept == sorted(set(kept))
    assert shown_epochs(list(range(5)), 1) == [4]


def test_a_folder_without_dashboard_files_is_refused_with_its_name(tmp_path):
    with pytest.raises(ValueError, match="Expected `run_dir` to hold FEATVIZ dashboard files"):
        standalone_page(tmp_path)


def test_featviz_page_writes_the_standalone_page_of_a_run_and_refuses_a_folder_without_one(dashboard_run, tmp_path):
    out = tmp_path / "tab.html"
    assert main(["page", str(dashboard_run[0] / RUN), "--out", str(out), "--max-epochs", "2"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<title>FEATVIZ · lightning_logs/version_0</title>" in page and "window.featvizLocal" in page
    packed = page.split("id='featviz-data'>")[1].split("</script>")[0]
    answers = json.loads(gzip.decompress(base64.b64decode(packed)))
    assert answers["runs"] == [{"run": RUN, "epochs": [0, 2]}]  # two epochs: the first and the last
    with pytest.raises(SystemExit, match="Expected `run_dir` to hold FEATVIZ dashboard files"):
        main(["page", str(tmp_path)])
