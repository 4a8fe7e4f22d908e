"""MLflow: an epoch's report logged into the run of a Lightning ``MLFlowLogger``, through its ``MlflowClient``.

- each figure with ``MlflowClient.log_image(run_id, image, key=tag, step=step)``: the run page's image charts
  step through the epochs with their slider;
- the scalars the callback does not log through ``LightningModule.log`` (map quality, wrong-cluster shares) as
  metrics at the step, named as ``MLFlowLogger`` names the others (characters MLflow refuses, like ``@``,
  dropped: ``featviz/knn_purity10/avgpool``);
- the wrong-cluster and label-issue lists as Markdown artifacts ``<tag>/step_<step>.md``, each layer's 2-D map
  as a CSV artifact ``<map tag>/points/step_<step>.csv``, and the CSV exports under ``featviz/<folder>/``;
- the static page (:mod:`~lightning_featviz.outputs.html_report`), self-contained, as the artifact
  ``featviz/index.html`` (replaced each epoch): MLflow's artifact view shows it; at the end of the fit the FEATVIZ
  tab as one page (heatmap, maps with their epoch slider, inspector, review), ``featviz/tab.html``.

``mlflow`` is imported only when an ``MLFlowLogger`` is in use (its client comes from the logger). Every client
call is made on the :class:`~lightning_featviz.outputs.tracker_writer.TrackerWriter`'s thread: a remote server's
uploads never hold up training.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_featviz.outputs.sinks import EncodedImage
from lightning_featviz.outputs.tracker import Table, self_contained_page, thumbnail_images
from lightning_featviz.outputs.tracker_writer import QueuedTracker, TrackerWriter

#: The artifact path of the static page.
PAGE_ARTIFACT = "featviz/index.html"
#: The artifact path of the FEATVIZ tab as one page.
TAB_ARTIFACT = "featviz/tab.html"


def mlflow_key(tag: str) -> str:
    """``tag`` as MLflow takes a metric or image key: the characters ``MLFlowLogger`` drops, dropped."""
    return re.sub(r"[^a-zA-Z0-9_/. -]+", "", tag)


class MlflowSink(QueuedTracker):
    """Logs into an MLflow run; its client calls are made on the ``writer``'s thread.

    Args:
        client: the ``mlflow.MlflowClient`` (``MLFlowLogger.experiment``).
        run_id: the run (``MLFlowLogger.run_id``).
        pages: the folder whose ``index.html`` (written there by a :class:`FileSink` earlier in the epoch's sink
            list) is logged as the page; None for no page.
        writer: the thread the client calls are made on; None: at once, in the caller's.
    """

    tracker = "MLflow"

    def __init__(self, client: Any, run_id: str, pages: Path | None = None, writer: TrackerWriter | None = None):
        super().__init__(writer)
        self.client, self.run_id, self.pages = client, run_id, pages

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        self.later(self._log_image, mlflow_key(tag), image, step)

    def _log_image(self, key: str, image: EncodedImage, step: int) -> None:
        (picture,) = thumbnail_images([image])
        self.client.log_image(self.run_id, picture, key=key, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        self._epoch = epoch
        if not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = [Metric(mlflow_key(tag), float(value), now, step) for tag, value in metrics.items()]
        self.later(self.client.log_batch, self.run_id, metrics=logged)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.later(self.client.log_text, self.run_id, text + "\n", f"{mlflow_key(tag)}/step_{step:07d}.md")

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Nothing: the page shows each row's image beside the list."""

    def log_table(self, tag: str, table: Table, step: int) -> None:
        self.later(self.client.log_text, self.run_id, table.csv(), f"{mlflow_key(tag)}/step_{step:07d}.csv")

    def log_files(self, paths: Sequence[str], step: int) -> None:
        for path in paths:
            self.later(self.client.log_artifact, self.run_id, path, f"featviz/{Path(path).parent.name}")

    def log_tab_page(self, page: str, step: int) -> None:
        self.later(self.client.log_text, self.run_id, page, TAB_ARTIFACT)
        self.send()

    def finish_epoch(self) -> None:
        page = self.pages / "index.html" if self.pages is not None else None
        if page is not None and page.is_file():  # read now: the next epoch rewrites it
            self.later(self.client.log_text, self.run_id, self_contained_page(page), PAGE_ARTIFACT)
        self.send()
