"""The wrong-cluster and label-issue tables of an epoch, written as CSV files and shown as Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from lightning_featviz.analysis import label_issues, wrong_cluster
from lightning_featviz.outputs.tables import markdown_rows, write_csv


def write_wrong_cluster_csv(path: str | Path, table: Sequence[dict[str, object]]) -> None:
    """Write flagged samples (dicts with :data:`.wrong_cluster.CSV_COLUMNS` keys) as CSV with a header."""
    write_csv(path, wrong_cluster.CSV_COLUMNS, table)


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


def write_label_issue_csv(path: str | Path, table: Iterable[dict[str, object]]) -> None:
    """Write :func:`.label_issue_rows` as CSV with a header (streamed: a generator is never held whole)."""
    write_csv(path, label_issues.CSV_COLUMNS, table)


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
