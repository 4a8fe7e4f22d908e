"""Where an epoch's results go: the one sink interface (:class:`Sink`; with the run's files, :class:`FolderSink`),
a TensorBoard ``SummaryWriter``, or plain files as a fallback."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from lightning_featviz.outputs import events
from lightning_featviz.outputs.custom_scalars import write_layout_once
from lightning_featviz.outputs.files import write_atomically
from lightning_featviz.outputs.html_report import THUMBNAILS, write_html_report
from lightning_featviz.outputs.metrics_file import append_metrics
from lightning_featviz.outputs.projector import ProjectorEntry

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


class FolderFiles(Protocol):
    """Files of a format owned elsewhere (the FEATVIZ tab's), written by ``write`` under the folder it is given."""

    def write(self, folder: Path) -> object:
        """Write the files under ``folder`` (each through :func:`~.files.write_atomically`)."""


@runtime_checkable
class FolderSink(Sink, Protocol):
    """A sink that also keeps the run's files beside its event files (:class:`~.run_folder.RunFolder`): the
    report hands it tables, projector entries and the FEATVIZ tab's files instead of writing them itself."""

    def log_csv(self, name: str, columns: Sequence[str], rows: Iterable[Mapping[str, object]], step: int) -> str:
        """Write ``rows`` (dicts with ``columns`` keys) as ``<name>.csv`` with a header; return its path."""

    def log_projector(self, folders: Sequence[str], entries: Sequence[ProjectorEntry], replace_prefix: str) -> None:
        """Write projector ``entries`` into each of ``folders`` (replacing the entries named ``replace_prefix...``)."""

    def log_folder_files(self, files: FolderFiles, step: int) -> None:
        """Have ``files`` written under the run's folder."""


class TensorBoardSink:
    """Writes into the log dir of a TensorBoard logger's ``SummaryWriter``, through the callback's own event file
    (:mod:`~lightning_featviz.outputs.events`): a full disk costs the callback's outputs, never the logger's."""

    receives_module_metrics = True

    def __init__(self, writer: Any):
        self.writer = writer
        self.projector_dir = str(getattr(writer, "log_dir", None) or writer.get_logdir())

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        # The PNG is made already, off the training process: sent as it is, not decoded and encoded again.
        encoded = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=image.png)
        self._add(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        from torch.utils.tensorboard.summary import scalar

        for tag, value in metrics.items():
            self._add(scalar(tag, float(value)), step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        from torch.utils.tensorboard.summary import text as text_summary

        self._add(text_summary(tag, text), step)

    def _add(self, summary: Any, step: int) -> None:
        write_layout_once(self.projector_dir)  # every layer's purity and accuracy on one chart (Custom Scalars)
        events.add_summary(self.projector_dir, summary, step)

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Nothing: TensorBoard shows the flagged images in the wrong-cluster gallery figure."""

    def finish_epoch(self) -> None:
        events.flush(self.projector_dir)


def file_name(tag: str) -> str:
    """A file-name-safe form of a tag or layer name."""
    return re.sub(r"[^A-Za-z0-9._@=-]+", "_", tag)


class FileSink:
    """Writes images as ``<root>/<tag>/step=<step>.png``, metrics to ``<root>/metrics.csv``/``.jsonl``, and
    after each epoch ``<root>/index.html``, a page that shows them (projector files only when ``embeddings``)."""

    receives_module_metrics = False

    def __init__(self, root: str | Path, embeddings: bool = True, about: Mapping[str, object] | None = None):
        self.root = Path(root)
        self.projector_dir = str(self.root) if embeddings else None
        self.about = about  # the run's identity at the top of index.html (model, data, samples, ...)

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"step={step:07d}.png", image.png)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        # The files are rewritten without the bad rows: each is named once.
        for bad in append_metrics(self.root, metrics, step, epoch):
            warnings.warn(f"FeatureVisualizer dropped the unreadable {bad} (a write cut short?).", stacklevel=2)

    def log_text(self, tag: str, text: str, step: int) -> None:
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")))
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"step={step:07d}.md", text + "\n")

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Write ``<root>/<tag>/thumbnails_<step>/rank_<r>.png`` for the table's rows r = 1, 2, ..."""
        folder = self.root.joinpath(*(file_name(part) for part in tag.split("/")), f"{THUMBNAILS}{step:07d}")
        folder.mkdir(parents=True, exist_ok=True)
        for rank, image in enumerate(images, start=1):
            write_atomically(folder / f"rank_{rank:03d}.png", image.png)

    def finish_epoch(self) -> None:
        write_html_report(self.root, about=self.about)


def tensorboard_writers(loggers: Iterable[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every logger that has one (TensorBoard loggers, from any namespace)."""
    writers = []
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if callable(getattr(experiment, "add_image", None)) and callable(getattr(experiment, "add_figure", None)):
            writers.append(experiment)
    return writers


#: Lightning loggers that could show images but have no adapter here: they get files and one note.
FILES_ONLY_LOGGERS = ("CometLogger", "NeptuneLogger")


def logger_named(logger: Any, name: str) -> bool:
    """Whether ``logger`` is a ``name`` (a class of that name in its MRO: both Lightning namespaces, subclasses)."""
    return any(cls.__name__ == name for cls in type(logger).__mro__)


def tracker_sinks(loggers: Iterable[Any], pages: Path) -> list[Sink]:
    """A sink for every W&B and MLflow logger among ``loggers`` (their modules, and so their clients, are
    imported only here); each logs the page that a :class:`FileSink` writes under ``pages``."""
    sinks: list[Sink] = []
    for logger in loggers:
        if logger_named(logger, "WandbLogger"):
            from lightning_featviz.outputs.wandb_sink import WandbSink

            sinks.append(WandbSink(logger.experiment, pages))
        elif logger_named(logger, "MLFlowLogger"):
            from lightning_featviz.outputs.mlflow_sink import MlflowSink

            sinks.append(MlflowSink(logger.experiment, logger.run_id, pages))
    return sinks


def sinks_for(
    loggers: Iterable[Any],
    root: Path,
    report_dir: str | Path | None,
    warn: Callable[[str, str], None],
    about: Mapping[str, object] | None = None,
) -> list[Sink]:
    """Where rank 0 writes: every TensorBoard writer among ``loggers``, every W&B and MLflow run (with files under
    ``root`` first, the page they log is made from those), else files under ``root`` (saying so with
    ``warn(key, message)``); and the static report's folder ``report_dir`` when set. ``about`` names the run at the
    top of the files' pages."""
    loggers = list(loggers)
    report: list[Sink] = [FileSink(report_dir, embeddings=False, about=about)] if report_dir is not None else []
    writers = tensorboard_writers(loggers)
    trackers = tracker_sinks(loggers, root)
    sinks: list[Sink] = [TensorBoardSink(w) for w in writers]
    files_only = [name for logger in loggers for name in FILES_ONLY_LOGGERS if logger_named(logger, name)]
    if files_only and (writers or trackers):
        message = (
            f"{', '.join(files_only)} gets FeatureVisualizer's scalars only; its figures, tables and page are "
            f"written under {root} too (index.html opens them)."
        )
        warn("files-only", message)
    if trackers or files_only or not writers:
        sinks.append(FileSink(root, embeddings=not writers, about=about))  # before the trackers: they log its page
    if not writers and not trackers:
        warn(
            "no-tb",
            "No TensorBoard logger among trainer.loggers; FeatureVisualizer writes PNG figures, "
            f"metrics.csv and index.html under {root}.",
        )
    return [*sinks, *trackers, *report]
