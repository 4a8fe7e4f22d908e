"""A file sink's ``metrics.csv`` and ``metrics.jsonl``: read back row by row, checked, and rewritten whole.

Both files are small (a few rows per layer per epoch), so each epoch rewrites them whole through
:func:`~lightning_featviz.outputs.files.write_atomically` instead of appending: a row cut short by a kill or a
full disk is named once and dropped, and can never glue itself to the next row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lightning_featviz.outputs.files import write_atomically

HEADER = ("epoch", "step", "tag", "value")


class MetricRow(NamedTuple):
    """One scalar of ``metrics.csv``."""

    epoch: int
    step: int
    tag: str
    value: float


def read_metrics(path: str | Path) -> tuple[list[MetricRow], list[int]]:
    """The rows of ``metrics.csv`` that read as (int, int, text, number), and the line numbers of those that
    do not (a wrong header counts as line 1); no file: nothing."""
    path = Path(path)
    if not path.exists():
        return [], []
    rows: list[MetricRow] = []
    bad: list[int] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for number, cells in enumerate(csv.reader(handle), start=1):
            if number == 1:
                if tuple(cells) != HEADER:
                    bad.append(1)
                continue
            row = _row(cells)
            if row is None:
                bad.append(number)
            else:
                rows.append(row)
    return rows, bad


def _row(cells: list[str]) -> MetricRow | None:
    if len(cells) != len(HEADER):
        return None
    try:
        row = MetricRow(int(cells[0]), int(cells[1]), cells[2], float(cells[3]))
    except ValueError:
        return None
    return row if row.tag else None


def write_metrics(path: str | Path, rows: list[MetricRow]) -> None:
    """Write ``metrics.csv`` whole: the header, then ``rows``."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(HEADER)
    writer.writerows(rows)
    write_atomically(path, text.getvalue(), durable=True)


def read_records(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects of ``metrics.jsonl`` (one a line), and the numbers of the lines that are not one."""
    path = Path(path)
    if not path.exists():
        return [], []
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``metrics.jsonl`` whole, one JSON object a line."""
    write_atomically(path, "".join(json.dumps(record) + "\n" for record in records), durable=True)


def append_metrics(root: Path, metrics: Mapping[str, float], step: int, epoch: int) -> list[str]:
    """Add one epoch's ``metrics`` to ``root/metrics.csv`` and ``root/metrics.jsonl``, rewriting both whole (a row
    of the same step and tag is replaced, a record of the same step joined); return ``"<file>: line(s) [...]"``
    for each file that had lines that do not read (they are dropped)."""
    csv_path, json_path = root / "metrics.csv", root / "metrics.jsonl"
    rows, bad_rows = read_metrics(csv_path)
    new = [MetricRow(epoch, step, tag, float(value)) for tag, value in metrics.items()]
    replaced = {(row.step, row.tag) for row in new}
    write_metrics(csv_path, [row for row in rows if (row.step, row.tag) not in replaced] + new)
    records, bad_records = read_records(json_path)
    same = [record for record in records if record.get("step") == step]  # the epoch's earlier part: joined
    others = [record for record in records if record.get("step") != step]
    write_records(json_path, [*others, {**(same[0] if same else {}), "epoch": epoch, "step": step, **metrics}])
    return [f"{path}: line(s) {lines}" for path, lines in ((csv_path, bad_rows), (json_path, bad_records)) if lines]
