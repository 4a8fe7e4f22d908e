"""Every layer on one chart: a layout for TensorBoard's Custom Scalars tab.

Time Series gives each scalar tag its own card with its own y-axis, one card per layer. The layout written here
makes one multiline chart of kNN purity and one of kNN accuracy with a line per layer, on the same axes. A
chart names its tags by regular expression (TensorBoard's ``MultilineChartContent``), so the layout needs
neither the layers nor k: it is written once per writer, before the first scalar, and holds for every epoch.
"""

from __future__ import annotations

import weakref
from typing import Any

#: The Custom Scalars tab's category of the charts.
CATEGORY = "featviz: every layer"
#: chart title -> the regular expression of its tags (``featviz/knn_purity@{k}/{layer}``, after any prefix
#: a logger adds).
CHARTS = {
    "kNN purity, every layer": r"featviz/knn_purity@[0-9]+/[^/]+$",
    "kNN accuracy, every layer": r"featviz/knn_accuracy@[0-9]+/[^/]+$",
}

_written: weakref.WeakSet[Any] = weakref.WeakSet()


def layout() -> dict[str, dict[str, list[Any]]]:
    """The layout, as ``SummaryWriter.add_custom_scalars`` takes it: ``{category: {title: ["Multiline", tags]}}``."""
    return {CATEGORY: {title: ["Multiline", [pattern]] for title, pattern in CHARTS.items()}}


def write_layout_once(writer: Any) -> None:
    """Write :func:`layout` with ``writer`` (torch's or tensorboardX's ``SummaryWriter``), once per writer."""
    if writer in _written or not callable(getattr(writer, "add_custom_scalars", None)):
        return
    writer.add_custom_scalars(layout())
    _written.add(writer)
