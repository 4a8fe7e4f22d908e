"""Tables as files and text: CSV files with a header, and Markdown tables for TensorBoard's text tab."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_csv(path: str | Path, columns: Sequence[str], table: Iterable[dict[str, object]]) -> None:
    """Write ``table`` (dicts with ``columns`` keys) as CSV with a header, making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(table)


def markdown_rows(table: Sequence[dict[str, object]], columns: Sequence[str]) -> list[str]:
    """A Markdown table's lines: the header of ``columns``, then one line per row of ``table``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
