"""Every Lightning logger gets the figures, tables and page: W&B offline, MLflow on a local SQLite store and Comet
offline, read back through their own files and client; TensorBoard beside W&B gets the same; CSV and no logger get
files. The trackers' writes run on their own thread (a slow one never holds up training)."""

from __future__ import annotations

import base64
import csv
import gzip
import json
import struct
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import Subset

from lightning_featviz import FeatureVisualizer, MapOptions, ResourceOptions
from lightning_featviz.demo.model import ClassificationData
from lightning_featviz.outputs.sinks import FileSink, TensorBoardSink, sinks_for

LAYERS = ["input", "conv2", "pool"]


def _visualizer() -> FeatureVisualizer:
    return FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=120,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=False),
    )


def _fit(root: Path, digits_val: Any, loggers: list[Any], after: Callback | None = None) -> FeatureVisualizer:
    """Two epochs of TinyNet on 120 validation digits, logged to ``loggers`` (``after``: a callback run after the
    visualizer's hooks); the visualizer."""
    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 360)), digits_val.classes)
    torch.manual_seed(0)
    visualizer = _visualizer()
    callbacks = [visualizer] if after is None else [visualizer, after]
    tiny_trainer(root, logger=loggers, callbacks=callbacks).fit(TinyNet(), datamodule=data)
    return visualizer


# ---------------------------------------------------------------- W&B (offline) beside TensorBoard


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, digits_val) -> dict[str, Any]:
    """TensorBoard, W&B (offline) and, where ``comet_ml`` is installed, Comet (offline) on one two-epoch run: the W&B
    run's offline folder (``wandb``), the Comet archive's messages and files (``comet``, None without it)."""
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            patch.setenv(name, str(root / name.lower()))
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        loggers = [TensorBoardLogger(root / "tb"), WandbLogger(project="featviz", save_dir=str(root / "wandb_dir"))]
        comet = _comet_logger(root, patch)
        try:
            _fit(root, digits_val, loggers + ([comet] if comet is not None else []))
        finally:
            wandb.finish()
            if comet is not None:
                comet.experiment.end()  # the logger never ends it; ending writes the offline archive
    (run,) = (root / "wandb_dir" / "wandb").glob("offline-run-*")
    return {"wandb": run, "comet": _comet_archive(root / "comet") if comet is not None else None}


def _comet_logger(root: Path, patch: pytest.MonkeyPatch) -> Any:
    """An offline ``CometLogger`` writing under ``root / "comet"`` (None without ``comet_ml``)."""
    try:
        import comet_ml  # noqa: F401
    except ImportError:
        return None
    from pytorch_lightning.loggers import CometLogger

    # Offline: `online=False` would *disable* the experiment (Lightning 2.6 passes `disabled=True` with it)
    patch.setenv("COMET_START_ONLINE", "false")
    patch.setenv("COMET_CONFIG", str(root / "no.config"))  # no user's ~/.comet.config
    quiet = dict(log_code=False, log_env_details=False, log_git_metadata=False, log_git_patch=False)
    return CometLogger(project="featviz", offline_directory=str(root / "comet"), auto_output_logging=False, **quiet)


def _comet_archive(folder: Path) -> tuple[list[dict[str, Any]], zipfile.ZipFile]:
    """The messages of the offline archive in ``folder``, and the archive."""
    (archive,) = folder.glob("*.zip")
    files = zipfile.ZipFile(archive)
    return [json.loads(line) for line in files.read("messages.json").splitlines()], files


@pytest.fixture(scope="module")
def wandb_run(tracked_run) -> Path:
    """The W&B run's offline folder."""
    return tracked_run["wandb"]


@pytest.fixture(scope="module")
def comet_run(tracked_run) -> tuple[list[dict[str, Any]], zipfile.ZipFile]:
    """The Comet archive's messages and files."""
    if tracked_run["comet"] is None:
        pytest.skip("comet_ml is not installed (`pip install lightning-featviz[comet]`)")
    return tracked_run["comet"]


def _records(run: Path, kind: str) -> list[Any]:
    """Every record of ``kind`` (``history``, ``artifact``, ...) in an offline run's transaction log ``*.wandb``:
    LevelDB's log format (32 KiB blocks of chunks with a 7-byte header: crc32, length, type), after a 7-byte
    ``:W&B`` file header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run.glob("*.wandb")
    data, block, at = log.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, pending = [], b""
    while at + 7 <= len(data):
        if block - at % block < 7:  # a block's tail too short for a header is padding
            at += block - at % block
            continue
        _, length, chunk = struct.unpack("<IHB", data[at : at + 7])
        pending += data[at + 7 : at + 7 + length]
        at += 7 + length
        if chunk in (1, 4):  # a full record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == kind:
                records.append(getattr(record, kind))
    return records


def _history(run: Path) -> list[dict[str, Any]]:
    """Every ``run.log`` row of an offline run, read from its transaction log."""
    rows = []
    for history in _records(run, "history"):
        row: dict[str, Any] = {}
        for item in history.item:  # a media value comes as one item per field: nested_key = [key, field]
            *path, last = list(item.nested_key) or [item.key]
            at = row
            for part in path:
                at = at.setdefault(part, {})
            at[last] = json.loads(item.value_json)
        rows.append(row)
    return rows


def _media_steps(rows: list[dict[str, Any]], media: str) -> dict[str, list[int]]:
    """key -> the ``trainer/global_step`` of every row that logged a ``media`` value (image-file, table-file...)."""
    steps: dict[str, list[int]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") == media:
                steps.setdefault(key, []).append(row["trainer/global_step"])
    return steps


def test_wandb_offline_run_holds_every_figure_at_each_epochs_step(wandb_run):
    images = _media_steps(_history(wandb_run), "image-file")
    assert len(images["featviz/tsne_2d/pool"]) == 2
    assert len(set(images["featviz/neighbours/pool"])) == 2  # one per epoch, at two steps
    assert images["featviz/wrong_cluster_cartography/pool"] == images["featviz/tsne_2d/pool"][1:]  # from epoch 1
    files = list((wandb_run / "files" / "media" / "images" / "featviz").rglob("*.png"))
    assert len(files) == sum(len(steps) for steps in images.values())  # a file for every image logged


def test_wandb_tables_hold_the_wrong_cluster_rows_with_images_and_the_map_as_points(wandb_run):
    rows = _history(wandb_run)
    tables = _media_steps(rows, "table-file")
    assert len(tables["featviz/tsne_2d/pool/points"]) == 2
    last = next(row for row in reversed(rows) if "featviz/tsne_2d/pool/points" in row)
    points = json.loads((wandb_run / "files" / last["featviz/tsne_2d/pool/points"]["path"]).read_text())
    assert points["columns"] == ["index", "x", "y", "label", "prediction", "wrong_cluster"]
    assert len(points["data"]) == 120 and all(isinstance(row[1], float) for row in points["data"])
    # A table with images is kept as a run_table artifact (its images beside it), staged until a sync.
    listed = [a for a in _records(wandb_run, "artifact") if "wrong_cluster_tablepool" in a.name][-1]
    (table_file,) = [e.local_path for e in listed.manifest.contents if e.path.endswith(".table.json")]
    table = json.loads(Path(table_file).read_text())
    assert table["columns"][:3] == ["image", "rank", "index"]
    assert table["data"] and all(row[0]["_type"] == "image-file" for row in table["data"])
    images = {entry.path for entry in listed.manifest.contents} - {"featviz/wrong_cluster_table/pool.table.json"}
    assert images == {row[0]["path"] for row in table["data"]}  # each row's image is in the artifact
    assert "featviz/label_issues/pool" in tables


def test_wandb_neighbour_table_holds_each_query_and_its_neighbours_images_and_labels(wandb_run):
    tables = _media_steps(_history(wandb_run), "table-file")
    assert len(set(tables["featviz/neighbours/pool/table"])) == 2  # one per epoch
    listed = [a for a in _records(wandb_run, "artifact") if "neighbourspooltable" in a.name][-1]
    (table_file,) = [e.local_path for e in listed.manifest.contents if e.path.endswith(".table.json")]
    table = json.loads(Path(table_file).read_text())
    assert table["columns"][:6] == ["query", "index", "label", "same_class", "neighbour_1", "label_1"]
    assert len(table["columns"]) == 4 + 2 * 5 and len(table["data"]) == 10  # k = 5; a query of each digit
    for row in table["data"]:
        assert [row[at]["_type"] for at in (0, *range(4, 14, 2))] == ["image-file"] * 6
        assert row[3] == sum(row[at] == row[2] for at in range(5, 14, 2))


def test_wandb_gets_the_page_self_contained_and_the_csvs_as_an_artifact(wandb_run):
    rows = _history(wandb_run)
    pages = _media_steps(rows, "html-file")
    assert len(pages["featviz/page"]) == 2
    latest = [row["featviz/page"]["path"] for row in rows if "featviz/page" in row][-1]
    page = (wandb_run / "files" / latest).read_text()
    assert "data:image/png;base64," in page and "src='featviz/" not in page
    artifacts = [a for a in _records(wandb_run, "artifact") if a.name == "featviz_csv"]
    assert len(artifacts) == 2
    names = {entry.path for entry in artifacts[-1].manifest.contents}
    assert "featviz_wrong_cluster/epoch_001_pool.csv" in names
    assert "featviz_label_issues/epoch_001_pool.csv" in names


def test_wandb_gets_the_featviz_tab_as_one_page_at_the_end_of_the_fit(wandb_run):
    rows = _history(wandb_run)
    steps = _media_steps(rows, "html-file")
    assert steps["featviz/tab"] == [steps["featviz/page"][-1]]  # once, at the last step
    (path,) = [row["featviz/tab"]["path"] for row in rows if "featviz/tab" in row]
    assert_tab_page((wandb_run / "files" / path).read_text(), epochs=[0, 1])


def assert_tab_page(page: str, epochs: list[int]) -> None:
    """``page`` is the FEATVIZ tab as one file (``dashboard/standalone.py``) holding these analysed epochs."""
    assert "window.featvizLocal" in page and "export async function render()" in page
    answers = json.loads(gzip.decompress(base64.b64decode(page.split("id='featviz-data'>")[1].split("</script>")[0])))
    assert answers["runs"][0]["epochs"] == epochs and list(answers["layers"]) == ["input", "conv2", "pool"]


def test_tensorboard_beside_wandb_gets_the_same_figures_at_the_same_steps(wandb_run):
    events = read_events(wandb_run.parents[2] / "tb")
    in_tensorboard = {tag: [event.step for event in events.Images(tag)] for tag in events.Tags()["images"]}
    assert in_tensorboard == _media_steps(_history(wandb_run), "image-file")


# ---------------------------------------------------------------- MLflow on a local SQLite store


class _Gate(Callback):
    """Holds a slow tracker's writes until ``fit``'s last epoch is over: each MLflow image write waits for the gate,
    which this callback (after the visualizer's hooks) opens at ``on_train_end``. At each validation epoch's end it
    notes how many images were written by then: none, where training never waited for them."""

    def __init__(self) -> None:
        self.open, self.written, self.at_epoch_end = threading.Event(), [], []

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.at_epoch_end.append(len(self.written))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.open.set()

    def sink(self) -> type:
        """MLflow's real sink, each image write waiting for the gate (a tracker whose uploads are slow)."""
        from lightning_featviz.outputs.mlflow_sink import MlflowSink

        gate = self

        class SlowMlflowSink(MlflowSink):
            def _log_image(self, key: str, image: Any, step: int) -> None:
                if not gate.open.wait(timeout=120):  # a callback that waited on this write never reaches the end
                    raise TimeoutError("the gate was never opened")
                super()._log_image(key, image, step)
                gate.written.append(step)

        return SlowMlflowSink


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, digits_val) -> tuple[Any, str, Path, _Gate, FeatureVisualizer]:
    """A two-epoch run logged to MLflow on a SQLite store through a slow (gated) MLflow sink; its client, run id,
    folder, gate and visualizer."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    logger = MLFlowLogger("featviz", tracking_uri=uri, artifact_location=str(root / "artifacts"))
    gate = _Gate()
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore", RuntimeWarning)  # MLFlowLogger: "@" dropped from the metric names
        patch.setattr("lightning_featviz.outputs.mlflow_sink.MlflowSink", gate.sink())
        visualizer = _fit(root, digits_val, [logger], after=gate)
    return MlflowClient(uri), logger.run_id, root, gate, visualizer


def _image_steps(client: Any, run_id: str) -> dict[str, list[int]]:
    """key -> steps of every image ``log_image`` kept, from the artifact names (``<key>+step+<step>+...png``)."""
    steps: dict[str, list[int]] = {}
    for entry in client.list_artifacts(run_id, "images"):
        name = entry.path.rsplit("/", 1)[-1]
        if name.endswith(".png"):
            key, _, step, *_ = name.split("+")
            steps.setdefault(key.replace("~", "/"), []).append(int(step))
    return {key: sorted(found) for key, found in steps.items()}


def test_mlflow_run_holds_each_figure_per_step_and_the_map_scalars(mlflow_run):
    client, run_id, *_ = mlflow_run
    images = _image_steps(client, run_id)
    steps = images["featviz/tsne_2d/pool"]
    assert len(steps) == 2 and steps[0] < steps[1]
    assert images["featviz/neighbours/pool"] == steps
    history = client.get_metric_history(run_id, "featviz/tsne_trustworthiness5/pool/2d")
    assert sorted(metric.step for metric in history) == steps
    assert client.get_metric_history(run_id, "featviz/knn_purity5/pool")  # MLFlowLogger's own, beside them


def test_mlflow_run_holds_the_csvs_the_map_points_and_the_page(mlflow_run):
    client, run_id, root, *_ = mlflow_run
    exported = {entry.path for entry in client.list_artifacts(run_id, "featviz/featviz_wrong_cluster")}
    assert "featviz/featviz_wrong_cluster/epoch_001_pool.csv" in exported
    assert client.list_artifacts(run_id, "featviz/featviz_label_issues")
    points = [entry.path for entry in client.list_artifacts(run_id, "featviz/tsne_2d/pool/points")]
    assert len(points) == 2
    local = Path(client.download_artifacts(run_id, points[-1], str(root / "down")))
    points = list(csv.DictReader(local.read_text().splitlines()))
    assert list(points[0]) == ["index", "x", "y", "label", "prediction", "wrong_cluster"] and len(points) == 120
    exported = list(csv.DictReader((root / "featviz_wrong_cluster" / "epoch_001_pool.csv").read_text().splitlines()))
    flagged = {int(row["index"]): row["wrong_cluster"] for row in points if row["wrong_cluster"]}
    assert flagged and flagged == {int(row["index"]): row["cluster"] for row in exported}  # the same samples
    page = Path(client.download_artifacts(run_id, "featviz/index.html", str(root / "down"))).read_text()
    assert "data:image/png;base64," in page and "Images in the wrong semantic cluster" in page
    assert_tab_page(Path(client.download_artifacts(run_id, "featviz/tab.html", str(root / "down"))).read_text(), [0, 1])
    # MLflow on a database keeps nothing on disk (trainer.log_dir is None): the files go under the root dir
    assert (root / "featviz_wrong_cluster" / "epoch_001_pool.csv").is_file() and (root / "featviz_dashboard").is_dir()


def test_a_slow_tracker_never_holds_up_an_epoch_and_is_written_by_the_end_of_fit(mlflow_run):
    client, run_id, _, gate, visualizer = mlflow_run
    assert gate.at_epoch_end == [0, 0]  # both epochs ended (and training went on) with every image write waiting
    images = _image_steps(client, run_id)
    assert sorted(gate.written) == sorted(step for steps in images.values() for step in steps)
    assert len(set(gate.written)) == 2  # both epochs' images, written once the gate opened, before fit returned
    assert visualizer._trackers.seconds > 0 and visualizer._trackers.on_written == visualizer._plan.record_trackers


def test_mlflow_gets_each_layers_neighbour_lists_as_csv(mlflow_run):
    client, run_id, root, *_ = mlflow_run
    (latest, *_) = sorted(
        (e.path for e in client.list_artifacts(run_id, "featviz/neighbours/pool/table")), reverse=True
    )
    rows = list(
        csv.DictReader(Path(client.download_artifacts(run_id, latest, str(root / "down"))).read_text().splitlines())
    )
    assert list(rows[0])[:4] == ["index", "label", "same_class", "label_1"] and len(rows[0]) == 3 + 5  # k = 5
    assert all(int(row["same_class"]) == sum(row[f"label_{j}"] == row["label"] for j in range(1, 6)) for row in rows)


@pytest.mark.slow
def test_mlflow_ui_shows_a_featviz_image_the_page_and_the_tab(mlflow_run):
    """The real ``mlflow ui`` on the run's SQLite store, in headless Chromium: the run's Artifacts tab previews the
    2-D map of ``pool`` (a ``log_image`` file), the page ``featviz/index.html`` with every image loaded, and the
    FEATVIZ tab ``featviz/tab.html``, whose heatmap of every layer and epoch and whose map are drawn there."""
    from browser import browser, mlflow_ui, need_browser, wait_for
    from selenium.webdriver.common.by import By

    need_browser()
    client, run_id, root, *_ = mlflow_run
    experiment = client.get_run(run_id).info.experiment_id

    def node(driver: Any, name: str) -> Any:
        """The artifact tree's node ``name``, once it is shown (a folder's children appear as it expands)."""
        selector = f"[data-testid='artifact-tree-node'][artifact-name='{name}']"
        shown = lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()]  # noqa: E731
        return wait_for(shown, f"artifact {name}")[0]

    def open_node(driver: Any, name: str) -> None:
        """Click ``name`` in the tree, again until the click lands (a node still moving is not interactable)."""

        def click() -> bool:
            element = node(driver, name)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            element.click()
            return True

        wait_for(click, f"a click on artifact {name}")

    def loaded(driver: Any, images: list[Any]) -> list[Any]:
        return [image for image in images if driver.execute_script("return arguments[0].naturalWidth", image) > 100]

    with mlflow_ui(f"sqlite:///{root}/mlflow.db") as url, browser(1400, 1000) as driver:
        driver.get(f"{url}/#/experiments/{experiment}/runs/{run_id}/artifacts")
        open_node(driver, "images")
        maps = [name for name in _image_artifacts(client, run_id) if name.startswith("featviz~tsne_2d~pool+")]
        open_node(driver, maps[-1])
        preview = ".mlflow-artifact-right img"
        wait_for(lambda: loaded(driver, driver.find_elements(By.CSS_SELECTOR, preview)), "the map's preview")
        open_node(driver, "featviz")
        open_node(driver, "index.html")
        frame = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".mlflow-artifact-right iframe"), "the page")
        driver.switch_to.frame(frame[0])
        assert wait_for(lambda: driver.find_element(By.TAG_NAME, "h1").text, "its title") == "lightning_featviz report"
        shown = wait_for(lambda: loaded(driver, driver.find_elements(By.TAG_NAME, "img")), "its images")
        assert len(shown) == len(driver.find_elements(By.CSS_SELECTOR, "figure img"))  # every figure drawn
        driver.switch_to.default_content()
        open_node(driver, "tab.html")
        frame = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".mlflow-artifact-right iframe"), "the tab")
        driver.switch_to.frame(frame[0])
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#heatmap td.cell")) == 3 * 2  # layers x epochs
        assert driver.execute_script("return document.body.dataset.epoch") == "1"


def _image_artifacts(client: Any, run_id: str) -> list[str]:
    """The file names of the full-size images ``log_image`` kept, in step order within each key."""
    names = [entry.path.rsplit("/", 1)[-1] for entry in client.list_artifacts(run_id, "images")]
    return sorted((name for name in names if name.endswith(".png")), key=lambda name: int(name.split("+")[2]))


# ---------------------------------------------------------------- Comet (offline)


def _uploads(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The file uploads of ``kind`` (``visualization``: images, ``asset``) in an offline archive's messages."""
    return [m["payload"] for m in messages if m["type"] == "file_upload" and m["payload"]["upload_type"] == kind]


def test_comet_offline_archive_holds_every_figure_at_each_epochs_step(comet_run):
    messages, files = comet_run
    steps: dict[str, list[int]] = {}
    for upload in _uploads(messages, "visualization"):
        steps.setdefault(upload["additional_params"]["figName"], []).append(upload["additional_params"]["step"])
        assert files.read(upload["file_path"])[:8] == b"\x89PNG\r\n\x1a\n"  # the PNG itself, in the archive
    assert (
        len(set(steps["featviz/tsne_2d/pool"])) == 2
        and steps["featviz/neighbours/pool"] == steps["featviz/tsne_2d/pool"]
    )
    metrics = {m["payload"]["metric"]["metricName"] for m in messages if m["type"] == "metric_msg"}
    assert "featviz/tsne_trustworthiness@5/pool/2d" in metrics and "featviz/knn_purity@5/pool" in metrics


def test_comet_gets_the_page_the_lists_and_the_csvs(comet_run):
    messages, files = comet_run
    pages = [m["payload"]["htmlOverride"] for m in messages if m["type"] == "htmlOverride"]
    assert len(pages) == 2 and "data:image/png;base64," in pages[-1]  # the HTML tab, each epoch's page
    assets = {u["additional_params"]["fileName"]: u for u in _uploads(messages, "asset")}
    assert "data:image/png;base64," in files.read(assets["featviz/index.html"]["file_path"]).decode()
    points = [name for name in assets if name.startswith("featviz/tsne_2d/pool/points/step_")]
    assert len(points) == 2
    header = files.read(assets[points[-1]]["file_path"]).decode().splitlines()[0]
    assert header == "index,x,y,label,prediction,wrong_cluster"
    assert any(name.startswith("featviz/wrong_cluster_table/pool/step_") for name in assets)
    assert "featviz/featviz_wrong_cluster/epoch_001_pool.csv" in assets
    assert_tab_page(files.read(assets["featviz/tab.html"]["file_path"]).decode(), epochs=[0, 1])


# ---------------------------------------------------------------- the trackers' writer


def test_the_tracker_writer_makes_every_write_in_order_and_a_failing_one_costs_only_itself():
    from lightning_featviz.outputs.tracker_writer import TrackerWriter

    notes, seconds, done = [], [], []
    writer = TrackerWriter(lambda key, message: notes.append((key, message)), seconds.append)

    def fail() -> None:
        raise ConnectionError("the server went away")

    writer.submit("MLflow", 0, [lambda: done.append(1), fail, lambda: done.append(2)])
    writer.submit("MLflow", 1, [lambda: done.append(3)])
    assert writer.drain(timeout=60)
    assert done == [1, 2, 3] and len(seconds) == 2
    assert [key for key, _ in notes] == ["tracker-failed/MLflow"] and "the server went away" in notes[0][1]


def test_a_full_tracker_queue_drops_the_new_epoch_and_a_drain_past_its_timeout_names_what_is_lost():
    from lightning_featviz.outputs.tracker_writer import TrackerWriter

    notes: list[tuple[str, str]] = []
    writer = TrackerWriter(lambda key, message: notes.append((key, message)), capacity=1)
    started, release = threading.Event(), threading.Event()
    writer.submit("W&B", 0, [started.set, lambda: release.wait(timeout=60)])
    assert started.wait(timeout=60)  # epoch 0 is running, and stays so
    writer.submit("W&B", 1, [lambda: None])  # waits
    writer.submit("W&B", 2, [lambda: None])  # finds the queue full: dropped, never blocking
    assert notes[0][0] == "tracker-behind/W&B" and "epoch 2" in notes[0][1]
    assert not writer.drain(timeout=0)
    assert notes[1][0] == "tracker-lost" and "W&B (epoch 1) not logged" in notes[1][1]
    release.set()


def test_a_stopped_run_drops_the_queued_tracker_writes_and_says_which():
    from lightning_featviz.outputs.tracker_writer import TrackerWriter

    notes: list[tuple[str, str]] = []
    writer = TrackerWriter(lambda key, message: notes.append((key, message)))
    started, release, done = threading.Event(), threading.Event(), []
    writer.submit("Comet", 3, [started.set, lambda: release.wait(timeout=60)])
    assert started.wait(timeout=60)
    writer.submit("Comet", 4, [lambda: done.append(4)])
    writer.stop()
    release.set()
    assert writer.drain(timeout=60) and done == []
    assert notes == [("tracker-stopped", notes[0][1])] and "Comet (epoch 4)" in notes[0][1]


def test_an_interrupted_fit_drops_the_callbacks_queued_tracker_writes_with_one_warning():
    visualizer = _visualizer()
    started, release, done = threading.Event(), threading.Event(), []
    visualizer._trackers.submit("MLflow", 0, [started.set, lambda: release.wait(timeout=60)])
    assert started.wait(timeout=60)
    visualizer._trackers.submit("MLflow", 1, [lambda: done.append(1)])
    with pytest.warns(UserWarning, match=r"Training stopped: .* MLflow \(epoch 1\) are not logged"):
        visualizer.on_exception(None, None, KeyboardInterrupt())  # what Lightning calls on Ctrl+C
    release.set()
    assert visualizer._trackers.drain(timeout=60) and done == []


def test_tracker_seconds_count_in_the_time_budget_as_work_beside_training():
    from lightning_featviz.report.plan import OutputPlan

    plan = OutputPlan(0.1, 1, figures_every=1, maps_every=1, dims=[2], projector=False)
    plan.start(0)
    assert plan.budget is not None and plan.budget.clock(0, 3, 1).spent == 0
    plan.record_trackers(2.5)
    clock = plan.budget.clock(0, 3, 1)
    assert clock.spent == 2.5 and clock.base > 0  # charged, and not taken out of fit's own time


# ---------------------------------------------------------------- which sinks, and what is imported


def test_csv_logger_and_no_logger_get_files_with_one_note(tmp_path):
    notes: list[str] = []
    for loggers in ([CSVLogger(tmp_path)], []):
        sinks = sinks_for(loggers, tmp_path / "featviz", None, lambda key, message: notes.append(key))
        assert [type(sink) for sink in sinks] == [FileSink]
    assert notes == ["no-tb", "no-tb"]  # the callback warns once per key


def test_a_neptune_logger_beside_tensorboard_gets_files_and_one_note(tmp_path):
    class NeptuneLogger(CSVLogger):
        """Named as Lightning's before 2.6 (2.6's raises when made: Neptune was sunset); chosen by class name."""

    notes: list[str] = []
    loggers = [TensorBoardLogger(tmp_path), NeptuneLogger(tmp_path)]
    sinks = sinks_for(loggers, tmp_path / "featviz", None, lambda key, message: notes.append(message))
    assert [type(sink) for sink in sinks] == [TensorBoardSink, FileSink]
    assert len(notes) == 1 and "NeptuneLogger" in notes[0] and str(tmp_path / "featviz") in notes[0]


_TENSORBOARD_ONLY = """
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import TinyNet, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset
from lightning_featviz import FeatureVisualizer
data = TensorDataset(torch.rand(64, 3, 32, 32), torch.arange(64) % 4)
visualizer = FeatureVisualizer(["pool"], overhead=None, k=3, maps=False)
trainer = tiny_trainer({root!r}, max_epochs=1, limit_train_batches=1, logger=TensorBoardLogger({root!r}),
                       callbacks=[visualizer])
trainer.fit(TinyNet(num_classes=4), DataLoader(data, batch_size=32), DataLoader(data, batch_size=32))
assert visualizer.history, "the callback did not run"
print(sorted(name for name in ("wandb", "mlflow", "comet_ml") if name in sys.modules))
"""


def test_a_tensorboard_run_imports_no_trackers_client(tmp_path):
    script = _TENSORBOARD_ONLY.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- what the tracker sinks share


def test_a_markdown_table_reads_back_as_the_values_it_was_made_from():
    from lightning_featviz.outputs.tables import markdown_rows
    from lightning_featviz.outputs.tracker import markdown_table

    rows = [
        {"rank": 1, "label": "cat", "share": 0.6, "correct": False},
        {"rank": 2, "label": "7", "share": 1.0, "correct": True},
    ]
    text = "\n".join(markdown_rows(rows, ["rank", "label", "share", "correct"])) + "\n\n3 more in the CSV file."
    table = markdown_table(text)
    assert table is not None and table.columns == ["rank", "label", "share", "correct"]
    assert table.rows == [[1, "cat", 0.6, False], [2, "7", 1.0, True]]  # each column of one type (W&B's rule)
    assert markdown_table("No image sits in another class's cluster.") is None


def test_the_page_for_a_tracker_inlines_every_image_it_shows(tmp_path):
    import numpy as np

    from lightning_featviz.outputs.sinks import encode_png
    from lightning_featviz.outputs.tracker import self_contained_page

    sink = FileSink(tmp_path)
    picture = encode_png(np.full((8, 12, 3), 200, dtype=np.uint8))
    for step in (3, 7):
        sink.log_metrics({"featviz/knn_purity@5/pool": 0.5}, step, epoch=step // 4)
        sink.log_image("featviz/tsne_2d/pool", picture, step)
        sink.log_image("featviz/neighbours/pool", picture, step)
    sink.finish_epoch()
    page = self_contained_page(tmp_path / "index.html")
    assert page.count("src='data:image/png;base64,") == 2  # the latest of each figure
    assert ".png'" not in page and "earlier:" not in page  # no file beside the page is referred to
