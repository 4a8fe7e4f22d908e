"""What the experiment-tracker sinks (W&B, MLflow, Comet) share: tables, the files an epoch wrote, the static page
made into one self-contained file a tracker can show, and the background writer their client calls run on.

A tracker sink is a :class:`~lightning_featviz.outputs.sinks.Sink` that also takes tables (each layer's 2-D map
as points, the neighbour lists) and files (the CSV exports); :class:`TrackerSink` says so, and the report's
destination checks it. A tracker sink collects an epoch's client calls and hands them, at ``finish_epoch``, to one
:class:`~lightning_featviz.outputs.tracker_writer.TrackerWriter`: its daemon thread makes them, so a slow tracker
never holds up training.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from lightning_featviz.outputs.sinks import EncodedImage, Sink


@dataclass
class Table:
    """A table: column names, and rows of plain values (str, int, float, bool) in that order; a column may hold
    images instead (:class:`~lightning_featviz.outputs.sinks.EncodedImage`, e.g. thumbnails), which the trackers
    that show images in tables show and the others leave out (:meth:`without_images`).

    Attributes:
        columns: C names.
        rows: R rows of C values each.
    """

    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)

    def column(self, name: str) -> list[object]:
        """The R values of column ``name``."""
        at = self.columns.index(name)
        return [row[at] for row in self.rows]

    def without_images(self) -> Table:
        """This table less its columns of images (for a CSV file)."""
        keep = [
            at for at in range(len(self.columns)) if not any(isinstance(row[at], EncodedImage) for row in self.rows)
        ]
        return Table([self.columns[at] for at in keep], [[row[at] for at in keep] for row in self.rows])

    def csv(self) -> str:
        """This table, less its images, as CSV text with a header."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        plain = self.without_images()
        writer.writerow(plain.columns)
        writer.writerows(plain.rows)
        return buffer.getvalue()


@runtime_checkable
class TrackerSink(Sink, Protocol):
    """A sink that also keeps tables and files (an experiment tracker)."""

    def log_table(self, tag: str, table: Table, step: int) -> None:
        """Log a table of values (a layer's map as points: ``index``, ``x``, ``y``, ``label``, ...)."""

    def log_files(self, paths: Sequence[str], step: int) -> None:
        """Keep files the epoch wrote (its CSV exports), named by their folder and file name."""

    def log_tab_page(self, page: str, step: int) -> None:
        """Keep the FEATVIZ tab as one HTML page (:mod:`lightning_featviz.dashboard.standalone`), at the end of a
        fit, where the tracker shows HTML: the heatmap, the maps with their epoch slider, the inspector."""


def log_tables_and_files(sink: Sink, tables: Sequence[tuple[str, Table]], files: Sequence[str], step: int) -> None:
    """Hand ``tables`` ((tag, table) pairs) and ``files`` to ``sink`` where it is a :class:`TrackerSink`."""
    if isinstance(sink, TrackerSink):
        for tag, table in tables:
            sink.log_table(tag, table, step)
        sink.log_files(files, step)


def parsed_column(cells: Sequence[str]) -> list[object]:
    """A Markdown table's column as the values it shows, of one type (a tracker's table refuses mixed ones):
    ints where every cell is one, else floats, else bools (``True``/``False``), else the texts."""
    for kind in (int, float):
        try:
            return [kind(cell) for cell in cells]
        except ValueError:
            pass
    if cells and set(cells) <= {"True", "False"}:
        return [cell == "True" for cell in cells]
    return list(cells)


def markdown_table(text: str) -> Table | None:
    """The first Markdown table in ``text`` (as the report's texts write them), or None where it has none."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    cells = [row for row in cells if not all(set(cell) <= {"-", ":"} for cell in row)]  # the |---| line
    if not cells:
        return None
    header, body = cells[0], [row for row in cells[1:] if len(row) == len(cells[0])]
    columns = [parsed_column([row[at] for row in body]) for at in range(len(header))]
    return Table(header, [list(row) for row in zip(*columns, strict=True)] if body else [])


def thumbnail_images(images: Sequence[EncodedImage]) -> list[object]:
    """PIL images of encoded thumbnails (what tracker clients take)."""
    from PIL import Image

    return [Image.open(io.BytesIO(image.png)).convert("RGB") for image in images]


_IMAGE_SOURCE = re.compile(r"src='([^']+\.png)'")
_EARLIER = re.compile(r"<div class='earlier'>.*?</div>", re.DOTALL)
_NOTE = (
    "<p><em>This copy of the page holds the latest epoch's figures; the tracker's own image panels step through "
    "every epoch.</em></p>"
)


def self_contained_page(page: Path) -> str:
    """The static page ``page`` (:func:`~lightning_featviz.outputs.html_report.write_html_report`) as one HTML
    text: each PNG it shows inlined as a ``data:`` address, the links to earlier epochs' files dropped (a tracker
    shows the page alone, without the folder beside it)."""
    folder = page.parent

    def inline(match: re.Match[str]) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f"src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}'"

    text = _EARLIER.sub("", page.read_text(encoding="utf-8"))
    text = text.replace("; the links under each open the same figure at earlier epochs.", ".")
    text = text.replace("</h1>", "</h1>" + _NOTE, 1)
    return _IMAGE_SOURCE.sub(inline, text)
