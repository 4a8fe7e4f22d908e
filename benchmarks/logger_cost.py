"""Seconds the W&B, MLflow and Comet sinks take to write one epoch's figures and page: what the report's thread
waits for (collecting the calls, reading the page, queueing them) and what the trackers' writer thread then spends.

Reads the latest figures of a run's file folder (default: the run ``docs/make_logger_screenshots.py`` makes, its
``featviz/`` folder: 17 figures of 3 layers, 2-D maps) and writes them, with the page, through ``MlflowSink`` (a
fresh local SQLite store), ``WandbSink`` (an offline run) and ``CometSink`` (an offline experiment), each on its own
``TrackerWriter``, three epochs each; prints each epoch's two times. W&B's ``run.log`` hands the files to its own
process and Comet's calls to its own thread: the writer's time is what their clients take before that.

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
from lightning_featviz.outputs.tracker_writer import TrackerWriter


def latest_figures(folder: Path) -> list[tuple[str, EncodedImage]]:
    """(tag, PNG) of the latest step of every figure under a FileSink's ``folder``."""
    figures = []
    for kind in sorted({path.parent for path in folder.rglob("step=*.png")}):
        path = max(kind.glob("step=*.png"))
        width, height = Image.open(path).size
        figures.append((str(kind.relative_to(folder)), EncodedImage(path.read_bytes(), height, width)))
    return figures


def mlflow_sink(scratch: Path, pages: Path, writer: TrackerWriter) -> Any:
    from mlflow import MlflowClient

    from lightning_featviz.outputs.mlflow_sink import MlflowSink

    client = MlflowClient(f"sqlite:///{scratch}/mlflow.db")
    run_id = client.create_run(client.create_experiment("cost", artifact_location=str(scratch / "a"))).info.run_id
    return MlflowSink(client, run_id, pages, writer)


def wandb_sink(scratch: Path, pages: Path, writer: TrackerWriter) -> Any:
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ[name] = str(scratch / name.lower())
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    import wandb

    from lightning_featviz.outputs.wandb_sink import WandbSink

    return WandbSink(wandb.init(project="cost"), pages, writer)


def comet_sink(scratch: Path, pages: Path, writer: TrackerWriter) -> Any:
    os.environ.update(COMET_DISABLE_AUTO_LOGGING="1", COMET_CONFIG=str(scratch / "no.config"))
    import comet_ml

    from lightning_featviz.outputs.comet_sink import CometSink

    quiet = dict(log_code=False, log_env_details=False, log_git_metadata=False, log_git_patch=False)
    config = comet_ml.ExperimentConfig(offline_directory=str(scratch / "comet"), auto_output_logging=False, **quiet)
    return CometSink(comet_ml.start(project="cost", online=False, experiment_config=config), pages, writer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=Path("/tmp/featviz_logger_screens/featviz"))
    args = parser.parse_args()
    figures = latest_figures(args.figures)
    kib = sum(len(image.png) for _, image in figures) // 1024
    print(f"{len(figures)} figures, {kib} KiB of PNG, and the page of {args.figures}")
    scratch = Path(tempfile.mkdtemp())
    for name, make in (
        ("MLflow (local SQLite store)", mlflow_sink),
        ("W&B (offline)", wandb_sink),
        ("Comet (offline)", comet_sink),
    ):
        writer = TrackerWriter()
        sink = make(scratch, args.figures, writer)
        for epoch in range(3):
            started = time.perf_counter()
            sink.log_metrics({}, step=epoch, epoch=epoch)
            for tag, image in figures:
                sink.log_image(tag, image, step=epoch)
            sink.finish_epoch()
            waited, before = time.perf_counter() - started, writer.seconds
            writer.drain(timeout=600)
            print(
                f"{name}: epoch {epoch}: the report waits {waited:.3f} s, the writer's thread takes "
                f"{writer.seconds - before:.2f} s"
            )
        if name.startswith("W&B"):
            sink.run.finish()
        elif name.startswith("Comet"):
            sink.experiment.end()


if __name__ == "__main__":
    main()
