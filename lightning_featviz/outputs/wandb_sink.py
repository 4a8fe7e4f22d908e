"""Weights & Biases: an epoch's report logged into the run of a Lightning ``WandbLogger`` (its ``experiment``).

Everything of an epoch goes out in one ``run.log`` call at :meth:`WandbSink.finish_epoch`, with
``trainer/global_step`` (the step axis ``WandbLogger`` defines for every key), so W&B's media panels step
through the epochs with their slider:

- each figure as a ``wandb.Image`` under its tag (``featviz/tsne_2d/avgpool``);
- the wrong-cluster and label-issue lists as ``wandb.Table`` (each row's image first), and each layer's neighbour
  lists (``featviz/neighbours/<layer>/table``: each query's image and label, then each neighbour's);
- each layer's 2-D map as a ``wandb.Table`` of points (``index``, ``x``, ``y``, ``label``, ...) under
  ``<map tag>/points``, which W&B's scatter plot draws (``x`` against ``y``, coloured by ``label``);
- the static page (:mod:`~lightning_featviz.outputs.html_report`) as ``wandb.Html`` under ``featviz/page``, and at
  the end of the fit the FEATVIZ tab as one page (heatmap, maps with their epoch slider, inspector, review) under
  ``featviz/tab``;
- the CSV exports as one artifact per run, a version per epoch (``featviz_csv``, alias ``epoch_<n>``).

``wandb`` is imported here only, so only when a ``WandbLogger`` is in use. The epoch's ``run.log`` is made on the
:class:`~lightning_featviz.outputs.tracker_writer.TrackerWriter`'s thread, and hands the data to W&B's own
background process: nothing in training waits for it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_featviz.outputs.sinks import EncodedImage
from lightning_featviz.outputs.tracker import Table, markdown_table, self_contained_page, thumbnail_images
from lightning_featviz.outputs.tracker_writer import QueuedTracker, TrackerWriter

#: The key of the static page.
PAGE_KEY = "featviz/page"
#: The key of the FEATVIZ tab as one page.
TAB_KEY = "featviz/tab"
#: The name of the run's artifact that holds the CSV exports.
CSV_ARTIFACT = "featviz_csv"


class WandbSink(QueuedTracker):
    """Logs into a W&B run; the epoch's ``run.log`` is made on the ``writer``'s thread.

    Args:
        run: the ``wandb`` run (``WandbLogger.experiment``).
        pages: the folder whose ``index.html`` (written there by a :class:`FileSink` earlier in the epoch's sink
            list) is logged as the page; None for no page.
        writer: the thread the client calls are made on; None: at once, in the caller's.
    """

    tracker = "W&B"

    def __init__(self, run: Any, pages: Path | None = None, writer: TrackerWriter | None = None):
        super().__init__(writer)
        self.run, self.pages = run, pages
        self._row: dict[str, float] = {}
        self._images: dict[str, EncodedImage] = {}
        self._texts: dict[str, str] = {}
        self._thumbnails: dict[str, Sequence[EncodedImage]] = {}
        self._tables: dict[str, Table] = {}
        self._files: list[str] = []
        self._step = 0

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        self._images[tag] = image  # handed over as its PNG file: no decoding, no encoding again
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
        self._tables[tag] = table
        self._step = step

    def log_files(self, paths: Sequence[str], step: int) -> None:
        self._files.extend(paths)

    def log_tab_page(self, page: str, step: int) -> None:
        self.later(self._log_tab_page, page, step)
        self.send()

    def _log_tab_page(self, page: str, step: int) -> None:
        import wandb

        self.run.log({TAB_KEY: wandb.Html(page, inject=False), "trainer/global_step": step})

    def finish_epoch(self) -> None:
        tables = dict(self._tables)
        for tag, text in self._texts.items():  # the lists, each row's thumbnail first where there is one per row
            table = markdown_table(text)
            thumbnails = self._thumbnails.get(tag, [])
            if table is not None and thumbnails and len(thumbnails) >= len(table.rows):
                images: list[object] = list(thumbnails[: len(table.rows)])
                rows = [[image, *row] for image, row in zip(images, table.rows, strict=True)]
                table = Table(["image", *table.columns], rows)
            if table is not None:
                tables[tag] = table
        page = self.pages / "index.html" if self.pages is not None else None
        html = (
            self_contained_page(page) if page is not None and page.is_file() else None
        )  # read now: the next epoch rewrites it
        self.later(
            self._log, dict(self._row), dict(self._images), tables, html, list(self._files), self._step, self._epoch
        )
        self._row, self._images, self._texts, self._thumbnails, self._tables, self._files = {}, {}, {}, {}, {}, []
        self.send()

    def _log(
        self,
        scalars: dict[str, float],
        images: dict[str, EncodedImage],
        tables: dict[str, Table],
        page: str | None,
        files: list[str],
        step: int,
        epoch: int,
    ) -> None:
        """One ``run.log`` of the epoch's scalars, figures, tables and page; the CSV exports as an artifact."""
        import wandb

        row: dict[str, Any] = dict(scalars)
        row |= {tag: wandb.Table(columns=list(table.columns), data=wandb_rows(table)) for tag, table in tables.items()}
        if page is not None:
            row[PAGE_KEY] = wandb.Html(page, inject=False)
        with tempfile.TemporaryDirectory() as folder:  # wandb.Image copies each file into the run when logged
            for at, (tag, image) in enumerate(images.items()):
                png = Path(folder) / f"{at}.png"
                png.write_bytes(image.png)
                row[tag] = wandb.Image(str(png))
            if row:
                self.run.log({**row, "trainer/global_step": step})
        if files:
            artifact = wandb.Artifact(CSV_ARTIFACT, type="featviz")
            for path in files:
                artifact.add_file(path, name=f"{Path(path).parent.name}/{Path(path).name}")
            self.run.log_artifact(artifact, aliases=[f"epoch_{epoch}"])


def wandb_rows(table: Table) -> list[list[Any]]:
    """The table's rows as ``wandb.Table`` data: each image cell a ``wandb.Image``."""
    import wandb

    cells = [cell for row in table.rows for cell in row if isinstance(cell, EncodedImage)]
    pictures = dict(zip(map(id, cells), thumbnail_images(cells), strict=True))
    return [[wandb.Image(pictures[id(c)]) if isinstance(c, EncodedImage) else c for c in row] for row in table.rows]
