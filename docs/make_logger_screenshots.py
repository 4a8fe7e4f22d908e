"""Regenerate docs/loggers.md's MLflow screenshots, and list what a W&B offline run holds, from one short fresh run.

    python docs/make_logger_screenshots.py [--logdir /tmp/featviz_logger_screens] [--epochs 2]

Trains ResNet-18 from scratch on the built-in digits (300 kept validation samples, k = 10, layers ``input``,
``layer2``, ``avgpool``, 2-D maps) with the callback, logging to MLflow on a SQLite store and to W&B in offline
mode at once (no network), unless the log dir has that run already. Then starts ``mlflow ui`` on a loopback port,
drives Debian's Chromium headless (as the browser tests do; see tests/browser.py) and saves, cropped and
palette-compressed:

- ``screen_mlflow_page.png``: the run's Artifacts tab previewing ``featviz/index.html``, the static page;
- ``screen_mlflow_tab.png``: the same tab previewing ``featviz/tab.html``, the FEATVIZ tab as one page;
- ``screen_mlflow_map.png``: the same tab previewing the last epoch's 2-D map of ``avgpool`` (a ``log_image`` file).

Last it prints what the W&B offline run folder holds (media files by kind, artifacts by name).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
sys.path.insert(0, str(ROOT / "tests"))
from browser import browser, mlflow_ui, wait_for  # noqa: E402


def train(log_dir: Path, epochs: int) -> tuple[str, str]:
    """Fit with MLflow and W&B (offline) loggers; the MLflow store and run id."""
    import wandb
    from pytorch_lightning.loggers import MLFlowLogger, WandbLogger

    from lightning_featviz import FeatureVisualizer, MapOptions, ResourceOptions
    from lightning_featviz.demo.model import ClassificationData, ImageClassifier

    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        os.environ[name] = str(log_dir / name.lower())
    os.environ["WANDB_MODE"] = "offline"
    data = ClassificationData.digits()
    data.val = Subset(data.val, range(300))
    layers = {"input": "input", "model.layer2": "layer2", "model.avgpool": "avgpool"}
    visualizer = FeatureVisualizer(
        layers,
        k=10,
        max_samples=300,
        maps=MapOptions(dims=[2], every_n_epochs=1),
        overhead=None,  # every epoch's figures and maps, whatever the machine's speed
        resources=ResourceOptions(background=False),
    )
    store = f"sqlite:///{log_dir}/mlflow.db"
    mlflow = MLFlowLogger("featviz", tracking_uri=store, artifact_location=str(log_dir / "artifacts"))
    loggers = [mlflow, WandbLogger(project="featviz", save_dir=str(log_dir))]
    torch.manual_seed(0)
    trainer = pl.Trainer(
        default_root_dir=log_dir,
        max_epochs=epochs,
        limit_train_batches=60,
        logger=loggers,
        callbacks=[visualizer],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(ImageClassifier(num_classes=10), datamodule=data)
    wandb.finish()
    return store, str(mlflow.run_id)


def save(driver: Any, name: str, element: Any, width: int = 1100) -> None:
    """Screenshot the page cropped to ``element``, shrunk to ``width``, palette-compressed."""
    left, top, right, bottom = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]", element
    )
    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    ratio = picture.width / driver.execute_script("return window.innerWidth")
    picture = picture.crop(tuple(round(v * ratio) for v in (left, top, right, bottom)))
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.Resampling.LANCZOS)
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(IMAGES / name, optimize=True)
    print(f"wrote docs/images/{name} ({(IMAGES / name).stat().st_size // 1024} KiB)")


def screenshots(store: str, run_id: str) -> None:
    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By

    client = MlflowClient(store)
    experiment = client.get_run(run_id).info.experiment_id
    names = [entry.path.rsplit("/", 1)[-1] for entry in client.list_artifacts(run_id, "images")]
    maps = sorted((n for n in names if n.startswith("featviz~tsne_2d~avgpool+") and n.endswith(".png")), key=len)
    last_map = max(maps, key=lambda name: int(name.split("+")[2]))

    def node(driver: Any, name: str) -> Any:
        selector = f"[data-testid='artifact-tree-node'][artifact-name='{name}']"
        return wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, selector), f"artifact {name}")[0]

    with mlflow_ui(store) as url, browser(1400, 1000) as driver:
        driver.get(f"{url}/#/experiments/{experiment}/runs/{run_id}/artifacts")
        node(driver, "featviz").click()
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):  # the assistant panel
            close.click()
        node(driver, "index.html").click()
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".mlflow-artifact-right iframe"), "the page")
        time.sleep(3)
        main = driver.find_element(By.CSS_SELECTOR, "main") if driver.find_elements(By.CSS_SELECTOR, "main") else None
        save(driver, "screen_mlflow_page.png", main or driver.find_element(By.TAG_NAME, "body"))
        node(driver, "tab.html").click()
        frame = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".mlflow-artifact-right iframe"), "the tab")
        driver.switch_to.frame(frame[0])
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "the tab to draw")
        driver.switch_to.default_content()
        time.sleep(2)
        save(driver, "screen_mlflow_tab.png", main or driver.find_element(By.TAG_NAME, "body"))
        node(driver, "images").click()
        node(driver, last_map).click()
        wait_for(
            lambda: [
                image
                for image in driver.find_elements(By.CSS_SELECTOR, ".mlflow-artifact-right img")
                if driver.execute_script("return arguments[0].naturalWidth", image) > 100
            ],
            "the map",
        )
        time.sleep(2)
        save(driver, "screen_mlflow_map.png", main or driver.find_element(By.TAG_NAME, "body"))


def wandb_summary(log_dir: Path) -> None:
    """What the W&B offline run folder holds: media files by kind and key, the artifacts' names."""
    (run,) = (log_dir / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    files = [path for path in media.rglob("*") if path.is_file()]
    kinds = Counter(path.relative_to(media).parts[0] for path in files)
    print(f"W&B offline run {run.name}: media files by kind {dict(sorted(kinds.items()))}")
    for kind in sorted(kinds):
        # <key>_<W&B step>_<hash>.<ext>, under media/<kind>/
        keys = Counter(
            str(path.relative_to(media / kind).parent / path.name.rsplit("_", 2)[0])
            for path in files
            if path.relative_to(media).parts[0] == kind
        )
        print(f"  {kind}: {len(keys)} keys, files per key {sorted(set(keys.values()))}: {', '.join(sorted(keys))}")


def last_run(store: str) -> str | None:
    """The id of the latest run in the MLflow store, None for none."""
    from mlflow import MlflowClient

    experiment = MlflowClient(store).get_experiment_by_name("featviz")
    if experiment is None:
        return None
    runs = MlflowClient(store).search_runs([experiment.experiment_id], order_by=["start_time DESC"], max_results=1)
    return str(runs[0].info.run_id) if runs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, default=Path("/tmp/featviz_logger_screens"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    args.logdir.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{args.logdir}/mlflow.db"
    found = last_run(store) if (args.logdir / "mlflow.db").exists() else None  # the run of an earlier call
    store, run_id = (store, found) if found is not None else train(args.logdir, args.epochs)
    screenshots(store, run_id)
    wandb_summary(args.logdir)


if __name__ == "__main__":
    main()
