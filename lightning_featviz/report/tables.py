"""The tables of an epoch: the wrong-cluster and label-issue tables shown as Markdown (the rows' thumbnails beside
them; their CSV files are the run folder's: :mod:`.exports`), each layer's 2-D map as a table of points for the
trackers that draw their own scatter plots (W&B's table panel, MLflow's table artifacts), and the maps' measures
as scalars."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from lightning_featviz.analysis import label_issues, wrong_cluster
from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.wrong_cluster import WrongCluster
from lightning_featviz.capture.bank import BankData
from lightning_featviz.outputs.sinks import EncodedImage, encode_png
from lightning_featviz.outputs.tables import markdown_rows
from lightning_featviz.outputs.tracker import Table

#: Rows of the wrong-cluster list shown as a table (TensorBoard's text tab, the static report); the CSV has all.
MAX_TABLE_ROWS = 50


def markdown_table(table: Sequence[dict[str, object]], max_rows: int = MAX_TABLE_ROWS) -> str:
    """The first ``max_rows`` rows as a Markdown table (TensorBoard's text tab renders it)."""
    if not table:
        return "No image sits in another class's cluster."
    lines = markdown_rows(table[:max_rows], [c for c in wrong_cluster.CSV_COLUMNS if c != "k"])
    if len(table) > max_rows:
        lines.append(f"\n{len(table) - max_rows} more in the CSV file.")
    return "\n".join(lines)


def table_thumbnails(bank: BankData, rows: Tensor) -> list[EncodedImage]:
    """The thumbnails of the bank's ``rows`` (R,) (a table's rows, in its order), as PNGs."""
    return [encode_png(image) for image in bank.thumbnails[rows].permute(0, 2, 3, 1).numpy()]


#: Rows of the label-issue list shown in TensorBoard's text tab (the CSV file has them all).
MARKDOWN_ROWS = 20


def label_issue_markdown(top: Sequence[dict[str, object]], total: int) -> str:
    """The ``top`` rows of :func:`.label_issue_rows` as a Markdown table (TensorBoard's text tab), noting
    the ``total`` rows of the CSV file."""
    if not top:
        return "No samples scored."
    lines = markdown_rows(top, [c for c in label_issues.CSV_COLUMNS if c != "path"])
    lines.append(f"\n{total} samples in all in the CSV file, highest score first.")
    return "\n".join(lines)


#: The columns of a map's table.
POINT_COLUMNS = ["index", "x", "y", "label", "prediction", "wrong_cluster"]


def map_point_table(
    layer_maps: LayerMaps, bank: BankData, class_names: Sequence[str], flagged: WrongCluster | None
) -> Table | None:
    """The (M, 2) 2-D map of a layer as M rows of :data:`POINT_COLUMNS` (None without a 2-D map).

    ``prediction`` is empty where the model's output was not seen; ``wrong_cluster`` names the class whose
    cluster a flagged sample sits in, empty for the rest.
    """
    if 2 not in layer_maps.maps:
        return None
    points = layer_maps.maps[2]
    rows = np.arange(len(bank)) if layer_maps.rows is None else layer_maps.rows
    cluster = [""] * len(bank)
    if flagged is not None:
        for row, other in zip(flagged.rows.tolist(), flagged.cluster.tolist(), strict=True):
            cluster[row] = class_names[other]
    indices, labels, preds = bank.indices.tolist(), bank.labels.tolist(), bank.preds.tolist()
    table = Table(list(POINT_COLUMNS))
    for (x, y), row in zip(points.tolist(), rows.tolist(), strict=True):
        pred = class_names[preds[row]] if preds[row] >= 0 else ""
        table.rows.append([indices[row], round(x, 4), round(y, 4), class_names[labels[row]], pred, cluster[row]])
    return table


def map_point_tables(
    maps: dict[str, LayerMaps],
    bank: BankData,
    class_names: Sequence[str],
    flagged: dict[str, WrongCluster],
    tag: Callable[..., str],
) -> list[tuple[str, Table]]:
    """Each layer's :func:`map_point_table`, tagged ``tag("tsne_2d", layer, "points")``
    (``featviz/tsne_2d/<layer>/points``)."""
    tables = []
    for layer, layer_maps in maps.items():
        points = map_point_table(layer_maps, bank, class_names, flagged.get(layer))
        if points is not None:
            tables.append((tag("tsne_2d", layer, "points"), points))
    return tables


def map_scalars(maps: dict[str, LayerMaps], tag: Callable[..., str]) -> dict[str, float]:
    """Each layer's map quality by tag: trustworthiness (and a sampled estimate's standard error, above
    4,000 mapped points), the purity in the map and how far it moved since the last epoch."""
    metrics = {
        tag(measure, layer, f"{d}d"): values[d]
        for layer, layer_maps in maps.items()
        for measure, values in (
            ("tsne_trustworthiness", layer_maps.trust),
            ("tsne_purity", layer_maps.purity),
            ("tsne_displacement", layer_maps.displacement),
        )
        for d in values
    }
    return metrics | {
        tag("tsne_trustworthiness_error", layer, f"{d}d"): error
        for layer, layer_maps in maps.items()
        for d, error in layer_maps.trust_error.items()
        if error > 0
    }
