"""Where images and metrics go: a TensorBoard ``SummaryWriter``, or plain files as a fallback."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from lightning_featviz.outputs.custom_scalars import write_layout_once
from lightning_featviz.outputs.html_report import THUMBNAILS, write_html_report

PNG_LEVEL = 3  # zlib level: a quarter of the time of Pillow's default (6), for about 10 % more bytes


@dataclass(frozen=True)
class EncodedImage:
    """An RGB image as PNG bytes, with its size."""

    png: bytes
    height: int
    width: int

    def decode(self) -> np.ndarray:
        """The (H, W, 3) uint8 pixels."""
        return np.asarray(Image.open(io.BytesIO(self.png)).convert("RGB"))


def encode_png(image: np.ndarray) -> EncodedImage:
    """An (H, W, 3) uint8 RGB image, encoded."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return EncodedImage(buffer.getvalue(), image.shape[0], image.shape[1])


class Sink(Protocol):
    #: True when scalars logged with ``LightningModule.log`` reach this sink through its logger.
    receives_module_metrics: bool

    @property
    def projector_dir(self) -> str | None:
        """Where projector files go (the projector reads them from there), or None for none."""

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        """Log an RGB image."""

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Log scalar values."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Log a Markdown text."""

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Keep the thumbnails of the rows of the table logged as text under ``tag``, in its order."""

    def finish_epoch(self) -> None:
        """Called after an epoch's report is written."""


class TensorBoardSink:
    """Writes into the ``SummaryWriter`` of a TensorBoard logger."""

    receives_module_metrics = True

    def __init__(self, writer: Any):
        self.writer = writer
        self.projector_dir = str(getattr(writer, "log_dir", None) or writer.get_logdir())
        write_layout_once(writer)  # every layer's purity and accuracy on one chart (Custom Scalars)

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not isinstance(self.writer, SummaryWriter):  # tensorboardX's: its own protobuf classes
            self.writer.add_image(tag, image.decode(), global_step=step, dataformats="HWC")
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        # add_image takes pixels only; the PNG is made already, off the training process.
        encoded = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=image.png)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Nothing: TensorBoard shows the flagged images in the wrong-cluster gallery figure."""

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
        self.root = Path(root)
        self.projector_dir = str(self.root) if embeddings else None

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step={step:07d}.png").write_bytes(image.png)

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

    def log_text(self, tag: str, text: str, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step={step:07d}.md").write_text(text + "\n", encoding="utf-8")

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Write ``<root>/<tag>/thumbnails_<step>/rank_<r>.png`` for the table's rows r = 1, 2, ..."""
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")), f"{THUMBNAILS}{step:07d}")
        folder.mkdir(parents=True, exist_ok=True)
        for rank, image in enumerate(images, start=1):
            (folder / f"rank_{rank:03d}.png").write_bytes(image.png)

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


def sinks_for(
    loggers: Iterable[Any], root: Path, report_dir: str | Path | None, warn: Callable[[str, str], None]
) -> list[Sink]:
    """Where rank 0 writes: every TensorBoard writer among ``loggers``, else files under ``root`` (saying so with
    ``warn(key, message)``); and the static report's folder ``report_dir`` when set."""
    report: list[Sink] = [FileSink(report_dir, embeddings=False)] if report_dir is not None else []
    writers = tensorboard_writers(loggers)
    if writers:
        return [*(TensorBoardSink(w) for w in writers), *report]
    warn(
        "no-tb",
        "No TensorBoard logger among trainer.loggers; FeatureVisualizer writes PNG figures, "
        f"metrics.csv and index.html under {root}.",
    )
    return [FileSink(root), *report]
