"""Comet: an epoch's report logged into the experiment of a Lightning ``CometLogger`` (its ``experiment``).

- each figure with ``experiment.log_image(png, name=tag, step=step)``: the experiment's **Graphics** tab steps
  through the epochs with its slider (the PNG handed over as it is, never decoded and encoded again);
- the scalars the callback does not log through ``LightningModule.log`` (map quality, wrong-cluster shares) with
  ``log_metrics`` at the step;
- the wrong-cluster and label-issue lists, each layer's 2-D map as points and its neighbour lists as CSV assets
  ``<tag>/step_<step>.csv`` (logged with their step; Comet's asset and table views open them), the CSV exports as
  assets ``featviz/<folder>/<file>``;
- the static page (:mod:`~lightning_featviz.outputs.html_report`), self-contained, in the experiment's **HTML** tab
  (``log_html``, replaced each epoch) and as the asset ``featviz/index.html``; at the end of the fit the FEATVIZ tab
  as one page (heatmap, maps with their epoch slider, inspector, review), the asset ``featviz/tab.html``.

``comet_ml`` is never imported here: every call goes through the logger's own experiment, online or offline (an
offline experiment keeps it all in the archive it writes when it ends). The calls are made on the
:class:`~lightning_featviz.outputs.tracker_writer.TrackerWriter`'s thread, and Comet uploads on its own.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_featviz.outputs.sinks import EncodedImage
from lightning_featviz.outputs.tracker import Table, markdown_table, self_contained_page
from lightning_featviz.outputs.tracker_writer import QueuedTracker, TrackerWriter

#: The asset name of the static page.
PAGE_ASSET = "featviz/index.html"
#: The asset name of the FEATVIZ tab as one page.
TAB_ASSET = "featviz/tab.html"


class CometSink(QueuedTracker):
    """Logs into a Comet experiment.

    Args:
        experiment: the ``comet_ml`` experiment (``CometLogger.experiment``).
        pages: the folder whose ``index.html`` (written there by a :class:`FileSink` earlier in the epoch's sink
            list) is logged as the page; None for no page.
        writer: the thread the client calls are made on; None: at once, in the caller's.
    """

    tracker = "Comet"

    def __init__(self, experiment: Any, pages: Path | None = None, writer: TrackerWriter | None = None):
        super().__init__(writer)
        self.experiment, self.pages = experiment, pages

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        self.later(self._log_image, tag, image, step)

    def _log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        self.experiment.log_image(io.BytesIO(image.png), name=tag, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        self._epoch = epoch
        if metrics:
            self.later(
                self.experiment.log_metrics, {tag: float(v) for tag, v in metrics.items()}, step=step, epoch=epoch
            )

    def log_text(self, tag: str, text: str, step: int) -> None:
        table = markdown_table(text)
        if table is not None:
            self.log_table(tag, table, step)
        else:  # a list with no row ("No image sits in another class's cluster.")
            self.later(self.experiment.log_text, text, step=step, metadata={"tag": tag})

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Nothing: the page shows each row's image beside the list."""

    def log_table(self, tag: str, table: Table, step: int) -> None:
        self.later(self.experiment.log_asset_data, table.csv(), name=f"{tag}/step_{step:07d}.csv", step=step)

    def log_files(self, paths: Sequence[str], step: int) -> None:
        for path in paths:
            name = f"featviz/{Path(path).parent.name}/{Path(path).name}"
            self.later(self.experiment.log_asset, path, file_name=name, step=step)

    def log_tab_page(self, page: str, step: int) -> None:
        self.later(self.experiment.log_asset_data, page, name=TAB_ASSET, overwrite=True, step=step)
        self.send()

    def finish_epoch(self) -> None:
        page = self.pages / "index.html" if self.pages is not None else None
        if page is not None and page.is_file():  # read now: the next epoch rewrites it
            text = self_contained_page(page)
            self.later(self.experiment.log_html, text, clear=True)
            self.later(self.experiment.log_asset_data, text, name=PAGE_ASSET, overwrite=True)
        self.send()
