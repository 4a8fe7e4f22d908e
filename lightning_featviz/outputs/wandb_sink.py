"""Weights & Biases: an epoch's report logged into the run of a Lightning ``WandbLogger`` (its ``experiment``).

Everything of an epoch goes out in one ``run.log`` call at :meth:`WandbSink.finish_epoch`, with
``trainer/global_step`` (the step axis ``WandbLogger`` defines for every key), so W&B's media panels step
through the epochs with their slider:

- each figure as a ``wandb.Image`` under its tag (``featviz/tsne_2d/avgpool``);
- the wrong-cluster and label-issue lists as ``wandb.Table`` (the wrong-cluster one with each row's image);
- each layer's 2-D map as a ``wandb.Table`` of points (``index``, ``x``, ``y``, ``label``, ...) under
  ``<map tag>/points``, which W&B's scatter plot draws (``x`` against ``y``, coloured by ``label``);
- the static page (:mod:`~lightning_featviz.outputs.html_report`) as ``wandb.Html`` under ``featviz/page``;
- the CSV exports as one artifact per run, a version per epoch (``featviz_csv``, alias ``epoch_<n>``).

``wandb`` is imported here only, so only when a ``WandbLogger`` is in use. ``run.log`` hands the data to
W&B's own background process: nothing here waits for an upload.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_featviz.outputs.sinks import EncodedImage
from lightning_featviz.outputs.tracker import Table, markdown_table, self_contained_page, thumbnail_images

#: The key of the static page.
PAGE_KEY = "featviz/page"
#: The name of the run's artifact that holds the CSV exports.
CSV_ARTIFACT = "featviz_csv"


class WandbSink:
    """Logs into a W&B run.

    Args:
        run: the ``wandb`` run (``WandbLogger.experiment``).
        pages: the folder whose ``index.html`` (written there by a :class:`FileSink` earlier in the epoch's sink
            list) is logged as the page; None for no page.
    """

    receives_module_metrics = True  # WandbLogger logs LightningModule.log's scalars
    projector_dir = None

    def __init__(self, run: Any, pages: Path | None = None):
        self.run, self.pages = run, pages
        self._row: dict[str, Any] = {}
        self._images: dict[str, EncodedImage] = {}
        self._texts: dict[str, str] = {}
        self._thumbnails: dict[str, Sequence[EncodedImage]] = {}
        self._files: list[str] = []
        self._step, self._epoch = 0, 0

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        self._images[tag] = image  # handed over as its PNG file at finish_epoch: no decoding, no encoding again
        self._step = step

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        self._row.update(metrics)
        self._step, self._epoch = step, epoch

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._texts[tag] = text
        self._step = step

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        self._thumbnails[tag] = images

    def log_table(self, tag: str, table: Table, step: int) -> None:
        import wandb

        columns: list[Any] = list(table.columns)
        self._row[tag] = wandb.Table(columns=columns, data=table.rows)
        self._step = step

    def log_files(self, paths: Sequence[str], step: int) -> None:
        self._files.extend(paths)

    def finish_epoch(self) -> None:
        import wandb

        for tag, text in self._texts.items():
            table = markdown_table(text)
            if table is None:
                continue
            columns: list[Any] = list(table.columns)
            rows = table.rows
            thumbnails = self._thumbnails.get(tag, [])
            if thumbnails and len(thumbnails) >= len(rows):  # the table's rows, in order
                columns = ["image", *columns]
                images = thumbnail_images(thumbnails[: len(rows)])
                rows = [[wandb.Image(image), *row] for image, row in zip(images, rows, strict=True)]
            self._row[tag] = wandb.Table(columns=columns, data=rows)
        page = self.pages / "index.html" if self.pages is not None else None
        if page is not None and page.is_file():
            self._row[PAGE_KEY] = wandb.Html(self_contained_page(page), inject=False)
        with tempfile.TemporaryDirectory() as folder:  # wandb.Image copies each file into the run when logged
            for at, (tag, image) in enumerate(self._images.items()):
                png = Path(folder) / f"{at}.png"
                png.write_bytes(image.png)
                self._row[tag] = wandb.Image(str(png))
            if self._row:
                self.run.log({**self._row, "trainer/global_step": self._step})
        if self._files:
            artifact = wandb.Artifact(CSV_ARTIFACT, type="featviz")
            for path in self._files:
                artifact.add_file(path, name=f"{Path(path).parent.name}/{Path(path).name}")
            self.run.log_artifact(artifact, aliases=[f"epoch_{self._epoch}"])
        self._row, self._images, self._texts, self._thumbnails, self._files = {}, {}, {}, {}, []
