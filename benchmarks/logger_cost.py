"""Seconds the W&B and MLflow sinks take to write one epoch's figures and page, where the report is written.

Reads the latest figures of a run's file folder (default: the run ``docs/make_logger_screenshots.py`` makes, its
``featviz/`` folder: 17 figures of 3 layers, 2-D maps) and writes them, with the page, through ``MlflowSink`` (a
fresh local SQLite store) and ``WandbSink`` (an offline run), three epochs each; prints each epoch's seconds. W&B's
``run.log`` hands the files to its own process: what is timed is what the report's thread waits for.

    python docs/make_logger_screenshots.py && python benchmarks/logger_cost.py [--figures DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from lightning_featviz.outputs.sinks import EncodedImage


def latest_figures(folder: Path) -> list[tuple[str, EncodedImage]]:
    """(tag, PNG) of the latest step of every figure under a FileSink's ``folder``."""
    figures = []
    for kind in sorted({path.parent for path in folder.rglob("step=*.png")}):
        path = max(kind.glob("step=*.png"))
        width, height = Image.open(path).size
        figures.append((str(kind.relative_to(folder)), EncodedImage(path.read_bytes(), height, width)))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=Path("/tmp/featviz_logger_screens/featviz"))
    args = parser.parse_args()
    figures = latest_figures(args.figures)
    kib = sum(len(image.png) for _, image in figures) // 1024
    print(f"{len(figures)} figures, {kib} KiB of PNG, and the page of {args.figures}")
    scratch = Path(tempfile.mkdtemp())

    from mlflow import MlflowClient

    from lightning_featviz.outputs.mlflow_sink import MlflowSink

    client = MlflowClient(f"sqlite:///{scratch}/mlflow.db")
    run_id = client.create_run(client.create_experiment("cost", artifact_location=str(scratch / "a"))).info.run_id
    sinks: list[tuple[str, Any]] = [("MLflow (local SQLite store)", MlflowSink(client, run_id, args.figures))]
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ[name] = str(scratch / name.lower())
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    import wandb

    from lightning_featviz.outputs.wandb_sink import WandbSink

    run = wandb.init(project="cost")
    sinks.append(("W&B (offline)", WandbSink(run, args.figures)))
    for name, sink in sinks:
        for epoch in range(3):
            started = time.perf_counter()
            for tag, image in figures:
                sink.log_image(tag, image, step=epoch)
            sink.finish_epoch()
            print(f"{name}: epoch {epoch}: {time.perf_counter() - started:.2f} s")
    wandb.finish()


if __name__ == "__main__":
    main()
