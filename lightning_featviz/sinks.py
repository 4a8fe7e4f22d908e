"""Where images and metrics go: a TensorBoard ``SummaryWriter``, or plain files as a fallback."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from lightning_featviz.html_report import write_html_report
from lightning_featviz.projector import ProjectorEntry, write_projector


class Sink(Protocol):
    #: True when scalars logged with ``LightningModule.log`` reach this sink through its logger.
    receives_module_metrics: bool

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an (H, W, 3) uint8 RGB image."""

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Log scalar values."""

    def log_embeddings(self, entries: Sequence[ProjectorEntry], folder: str) -> None:
        """Write projector embeddings under ``folder`` (relative to the sink's directory)."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Log a Markdown text."""

    def finish_epoch(self) -> None:
        """Called after an epoch's report is written."""


class TensorBoardSink:
    """Writes into the ``SummaryWriter`` of a TensorBoard logger."""

    receives_module_metrics = True

    def __init__(self, writer: Any):
        self.writer = writer

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def log_embeddings(self, entries: Sequence[ProjectorEntry], folder: str) -> None:
        log_dir = getattr(self.writer, "log_dir", None) or self.writer.get_logdir()
        write_projector(log_dir, entries, folder)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def finish_epoch(self) -> None:
        self.writer.flush()


def file_name(tag: str) -> str:
    """A file-name-safe form of a tag or layer name."""
    return re.sub(r"[^A-Za-z0-9._@=-]+", "_", tag)


class FileSink:
    """Writes images as ``<root>/<tag>/step=<step>.png``, metrics to ``<root>/metrics.csv``/``.jsonl``, and
    after each epoch ``<root>/index.html``, a page that shows them (projector files only when ``embeddings``)."""

    receives_module_metrics = False

    def __init__(self, root: str | Path, embeddings: bool = True):
        self.root, self.embeddings = Path(root), embeddings

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"step={step:07d}.png")

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        csv_path = self.root / "metrics.csv"
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["epoch", "step", "tag", "value"])
            writer.writerows([epoch, step, tag, value] for tag, value in metrics.items())
        with (self.root / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps({"epoch": epoch, "step": step, **metrics}) + "\n")

    def log_embeddings(self, entries: Sequence[ProjectorEntry], folder: str) -> None:
        if self.embeddings:
            write_projector(self.root, entries, folder)

    def log_text(self, tag: str, text: str, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step={step:07d}.md").write_text(text + "\n", encoding="utf-8")

    def finish_epoch(self) -> None:
        write_html_report(self.root)


def tensorboard_writers(loggers: Iterable[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every logger that has one (TensorBoard loggers, from any namespace)."""
    writers = []
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if callable(getattr(experiment, "add_image", None)) and callable(getattr(experiment, "add_figure", None)):
            writers.append(experiment)
    return writers
