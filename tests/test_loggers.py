"""Every Lightning logger gets the figures, tables and page: W&B offline and MLflow on a local SQLite store, read
back through their own files and client; TensorBoard beside W&B gets the same; CSV and no logger get files."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyNet, read_events, tiny_trainer
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


def _fit(root: Path, digits_val: Any, loggers: list[Any]) -> None:
    """Two epochs of TinyNet on 120 validation digits, logged to ``loggers``."""
    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 360)), digits_val.classes)
    torch.manual_seed(0)
    tiny_trainer(root, logger=loggers, callbacks=[_visualizer()]).fit(TinyNet(), datamodule=data)


# ---------------------------------------------------------------- W&B (offline) beside TensorBoard


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, digits_val) -> Path:
    """TensorBoard and W&B (offline) on one two-epoch run; the W&B run's offline folder."""
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            patch.setenv(name, str(root / name.lower()))
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        loggers = [TensorBoardLogger(root / "tb"), WandbLogger(project="featviz", save_dir=str(root / "wandb_dir"))]
        try:
            _fit(root, digits_val, loggers)
        finally:
            wandb.finish()
    (run,) = (root / "wandb_dir" / "wandb").glob("offline-run-*")
    return run


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
    files = list((wandb_run / "files" / "media" / "images" / "featviz").rglob("*.png"))
    assert len(files) >= 2 * len(images)


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


def test_wandb_gets_the_page_self_contained_and_the_csvs_as_an_artifact(wandb_run):
    pages = _media_steps(_history(wandb_run), "html-file")
    assert len(pages["featviz/page"]) == 2
    (latest,) = [p for p in (wandb_run / "files" / "media" / "html").rglob("*.html") if p.stat().st_size][-1:]
    page = latest.read_text()
    assert "data:image/png;base64," in page and "src='featviz/" not in page
    artifacts = [a for a in _records(wandb_run, "artifact") if a.name == "featviz_csv"]
    assert len(artifacts) == 2
    names = {entry.path for entry in artifacts[-1].manifest.contents}
    assert "featviz_wrong_cluster/epoch_001_pool.csv" in names
    assert "featviz_label_issues/epoch_001_pool.csv" in names


def test_tensorboard_beside_wandb_gets_the_same_figures_at_the_same_steps(wandb_run):
    events = read_events(wandb_run.parents[2] / "tb")
    in_tensorboard = {tag: [event.step for event in events.Images(tag)] for tag in events.Tags()["images"]}
    assert in_tensorboard == _media_steps(_history(wandb_run), "image-file")


# ---------------------------------------------------------------- MLflow on a local SQLite store


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, digits_val) -> tuple[Any, str, Path]:
    """A two-epoch run logged to MLflow on a SQLite store; its client, run id and folder."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    logger = MLFlowLogger("featviz", tracking_uri=uri, artifact_location=str(root / "artifacts"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # MLFlowLogger: "@" dropped from the metric names
        _fit(root, digits_val, [logger])
    return MlflowClient(uri), logger.run_id, root


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
    client, run_id, _ = mlflow_run
    images = _image_steps(client, run_id)
    steps = images["featviz/tsne_2d/pool"]
    assert len(steps) == 2 and steps[0] < steps[1]
    assert images["featviz/neighbours/pool"] == steps
    history = client.get_metric_history(run_id, "featviz/tsne_trustworthiness5/pool/2d")
    assert sorted(metric.step for metric in history) == steps
    assert client.get_metric_history(run_id, "featviz/knn_purity5/pool")  # MLFlowLogger's own, beside them


def test_mlflow_run_holds_the_csvs_the_map_points_and_the_page(mlflow_run):
    client, run_id, root = mlflow_run
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
    # MLflow on a database keeps nothing on disk (trainer.log_dir is None): the files go under the root dir
    assert (root / "featviz_wrong_cluster" / "epoch_001_pool.csv").is_file() and (root / "featviz_dashboard").is_dir()


@pytest.mark.slow
def test_mlflow_ui_shows_a_featviz_image_and_the_page(mlflow_run):
    """The real ``mlflow ui`` on the run's SQLite store, in headless Chromium: the run's Artifacts tab previews the
    2-D map of ``pool`` (a ``log_image`` file) and the page ``featviz/index.html`` with every image loaded."""
    from browser import browser, mlflow_ui, need_browser, wait_for
    from selenium.webdriver.common.by import By

    need_browser()
    client, run_id, root = mlflow_run
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


def _image_artifacts(client: Any, run_id: str) -> list[str]:
    """The file names of the full-size images ``log_image`` kept, in step order within each key."""
    names = [entry.path.rsplit("/", 1)[-1] for entry in client.list_artifacts(run_id, "images")]
    return sorted((name for name in names if name.endswith(".png")), key=lambda name: int(name.split("+")[2]))


# ---------------------------------------------------------------- which sinks, and what is imported


def test_csv_logger_and_no_logger_get_files_with_one_note(tmp_path):
    notes: list[str] = []
    for loggers in ([CSVLogger(tmp_path)], []):
        sinks = sinks_for(loggers, tmp_path / "featviz", None, lambda key, message: notes.append(key))
        assert [type(sink) for sink in sinks] == [FileSink]
    assert notes == ["no-tb", "no-tb"]  # the callback warns once per key


def test_a_comet_logger_beside_tensorboard_gets_files_and_one_note(tmp_path):
    class CometLogger(CSVLogger):
        """Named as Lightning's: the adapters choose by class name (no comet_ml here)."""

    notes: list[str] = []
    loggers = [TensorBoardLogger(tmp_path), CometLogger(tmp_path)]
    sinks = sinks_for(loggers, tmp_path / "featviz", None, lambda key, message: notes.append(message))
    assert [type(sink) for sink in sinks] == [TensorBoardSink, FileSink]
    assert len(notes) == 1 and "CometLogger" in notes[0] and str(tmp_path / "featviz") in notes[0]


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
print(sorted(name for name in ("wandb", "mlflow") if name in sys.modules))
"""


def test_a_tensorboard_run_imports_neither_wandb_nor_mlflow(tmp_path):
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
