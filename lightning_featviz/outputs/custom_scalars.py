"""Every layer on one chart: a layout for TensorBoard's Custom Scalars tab.

Time Series gives each scalar tag its own card with its own y-axis, one card per layer. The layout written here
makes one multiline chart of kNN purity and one of kNN accuracy with a line per layer, on the same axes. A
chart names its tags by regular expression (TensorBoard's ``MultilineChartContent``), so the layout needs
neither the layers nor k: it is written once per writer, before the first scalar, and holds for every epoch.
"""

from __future__ import annotations

from typing import Any

from lightning_featviz.outputs import events

#: The Custom Scalars tab's category of the charts.
CATEGORY = "featviz: every layer"
#: chart title -> the regular expression of its tags (``featviz/knn_purity@{k}/{layer}``, after any prefix
#: a logger adds).
CHARTS = {
    "kNN purity, every layer": r"featviz/knn_purity@[0-9]+/[^/]+$",
    "kNN accuracy, every layer": r"featviz/knn_accuracy@[0-9]+/[^/]+$",
}

_written: set[str] = set()  # log dirs whose layout this process wrote


def layout() -> dict[str, dict[str, list[Any]]]:
    """The layout, as ``SummaryWriter.add_custom_scalars`` takes it: ``{category: {title: ["Multiline", tags]}}``."""
    return {CATEGORY: {title: ["Multiline", [pattern]] for title, pattern in CHARTS.items()}}


def write_layout_once(log_dir: str) -> None:
    """Write :func:`layout` into the callback's own event file in ``log_dir`` (never through the logger's writer: see
    :mod:`~lightning_featviz.outputs.events`), once per log dir and process.

    Raises:
        OSError: the disk has no room for it (nothing is marked written: the next call tries again).
    """
    if log_dir in _written:
        return
    from torch.utils.tensorboard.summary import custom_scalars

    events.add_summary(log_dir, custom_scalars(layout()), 0)
    _written.add(log_dir)
