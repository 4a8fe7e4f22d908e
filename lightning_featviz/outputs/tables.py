"""Tables as files and text: CSV files with a header, and Markdown tables for TensorBoard's text tab."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lightning_featviz.outputs.files import write_atomically


def write_csv(path: str | Path, columns: Sequence[str], table: Iterable[Mapping[str, object]]) -> None:
    """Write ``table`` (dicts with ``columns`` keys) as CSV with a header, making its folder; whole or not at all."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(table)
    write_atomically(path, text.getvalue(), durable=True)


def markdown_rows(table: Sequence[dict[str, object]], columns: Sequence[str]) -> list[str]:
    """A Markdown table's lines: the header of ``columns``, then one line per row of ``table``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
