"""A static HTML page over what a :class:`~lightning_featviz.outputs.sinks.FileSink` wrote: open it without TensorBoard.

A page a person sends a colleague: what run it is (model, data, samples, classes, date, package version), a
headline in words (which layer separates the classes from which epoch; how many images sit in another class's
cluster), the kNN purity and accuracy of every layer per epoch (epochs ascending, the rest of the scalars folded
away), then the latest image of every figure in a grid — grouped by kind, layers in capture order, captioned with
layer and epoch, with links to the same figure at earlier epochs — and the wrong-cluster and label-issue lists as
tables with each row's image. Names on the page are words; the logged tag of a number is in its tooltip. Every path
is relative: the folder can be zipped, sent and opened from ``file://``.
"""

from __future__ import annotations

import html
import json
import re
import struct
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from lightning_featviz.outputs.files import write_atomically
from lightning_featviz.outputs.metrics_file import read_metrics
from lightning_featviz.outputs.report_words import (
    ABOUT_WORDS,
    COLUMN_WORDS,
    SECTIONS,
    TABLE_WORDS,
    figure_words,
    headline,
    scalar_words,
    when,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; color: #222; padding: 0 1.5em; }
header { border-bottom: 1px solid #ddd; padding-bottom: 0.6em; } h1 { margin: 0 0 0.3em; }
.identity { color: #444; margin: 0.2em 0; } .identity b { color: #111; font-weight: 600; }
.headline { font-size: 1.15em; margin: 0.6em 0; } .rule { color: #777; font-size: 0.85em; }
nav { margin: 0.8em 0; font-size: 0.9em; } nav a { margin-right: 1.2em; white-space: nowrap; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: middle; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1.2em 1.5em;
  align-items: start; }
figure { margin: 0; } figure.wide { grid-column: 1 / -1; } figure img { max-width: 100%; border: 1px solid #eee; }
img.thumb { width: 48px; height: 48px; image-rendering: pixelated; border: 0; display: block; }
figcaption { color: #555; font-size: 0.9em; } .earlier { font-size: 0.85em; color: #777; }
"""

_STEP = re.compile(r"step=(\d+)")

#: The folder beside a table's ``step=<step>.md`` that holds its rows' thumbnails: ``thumbnails_<step>``.
THUMBNAILS = "thumbnails_"
#: The run's identity, kept beside the page (written when the page is first given it).
ABOUT = "about.json"
#: A figure at least this wide (pixels) spans the whole grid row.
WIDE = 900


def write_html_report(
    root: str | Path, title: str = "lightning_featviz report", about: Mapping[str, object] | None = None
) -> Path:
    """Write ``root/index.html`` over the PNG figures, ``metrics.csv`` and Markdown tables under ``root``.

    Figures are found as ``root/<prefix>/<kind>/<layer...>/step=<step>.png`` (the :class:`FileSink`
    layout); the latest step of each is shown, earlier ones are linked. ``about`` names the run (keys of
    :data:`ABOUT_WORDS`: model, data, samples, classes, date, version); it is kept as ``root/about.json`` for the
    pages written after. Returns the page's path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if about is not None:
        write_atomically(root / ABOUT, json.dumps(dict(about), default=str))
    elif (root / ABOUT).exists():
        about = json.loads((root / ABOUT).read_text(encoding="utf-8"))
    epochs_of, values = _read_metrics(root / "metrics.csv")
    layers = list(dict.fromkeys(tag.split("/", 2)[2] for tag in values if "/knn_purity@" in tag))  # capture order
    figures: dict[str, list[tuple[Path, list[Path]]]] = defaultdict(list)
    texts: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted({path.parent for path in root.rglob("step=*.*")}):
        for suffix in (".png", ".md"):
            steps = sorted(folder.glob(f"step=*{suffix}"))  # the earliest first
            if not steps:
                continue
            relative = steps[-1].relative_to(root)
            kind = relative.parts[1] if len(relative.parts) > 2 else relative.parts[0]
            if suffix == ".png":
                figures[kind].append((steps[-1], steps[:-1]))
            else:
                texts[kind.removesuffix("_table")].append(steps[-1])
    kinds = [*[k for k in SECTIONS if k in figures or k in texts], *sorted((set(figures) | set(texts)) - set(SECTIONS))]
    latest = max(epochs_of.values(), default=None)
    flagged = _flagged(texts.get("wrong_cluster", []), root, epochs_of)
    contents = ["<a href='#scalars'>kNN purity and accuracy</a>"]
    contents += [f"<a href='#{kind}'>{html.escape(SECTIONS.get(kind, kind.replace('_', ' ')))}</a>" for kind in kinds]
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<header><h1>{html.escape(title)}</h1>{_identity(about)}",
        f"<p class='headline'>{html.escape(headline(values, layers, flagged))}</p>",
        "<p class='rule'>A layer <i>separates the classes</i> when its kNN purity reaches 90% of the best layer's "
        f"at the latest epoch{f' ({latest})' if latest is not None else ''}. Figures show that epoch; the links "
        "under each open it at earlier epochs.</p></header>",
        f"<nav>{' '.join(contents)}</nav>",
        *_metrics_tables(values, layers),
    ]
    for kind in kinds:
        parts.append(f"<h2 id='{kind}'>{html.escape(SECTIONS.get(kind, kind.replace('_', ' ')))}</h2>")
        order = {name: i for i, name in enumerate(["all_layers", *layers])}
        shown = sorted(figures.get(kind, []), key=lambda item: (order.get(_layer(item[0], root), len(order)), item[0]))
        cards = [_figure(path, earlier, root, epochs_of) for path, earlier in shown]
        if cards:
            parts.append(f"<div class='grid'>{''.join(cards)}</div>")
        for path in texts.get(kind, []):
            words = TABLE_WORDS.get(kind, "The list")
            parts.append(f"<h3>{html.escape(words)}: {html.escape(_layer(path, root))}, {when(path, epochs_of)}</h3>")
            thumbnails = path.parent / f"{THUMBNAILS}{path.stem.removeprefix('step=')}"
            parts.append(_markdown_table(path.read_text(encoding="utf-8"), root, thumbnails))
    page = root / "index.html"
    write_atomically(page, "\n".join(parts) + "\n")
    return page


def _layer(path: Path, root: Path) -> str:
    return "/".join(path.relative_to(root).parts[2:-1])


def _identity(about: Mapping[str, object] | None) -> str:
    """The run's identity as one line of words (nothing where the page was not told it)."""
    if not about:
        return ""
    items = [f"{words} <b>{html.escape(str(about[key]))}</b>" for key, words in ABOUT_WORDS.items() if key in about]
    return f"<p class='identity'>{' · '.join(items)}</p>"


def _figure(path: Path, earlier: list[Path], root: Path, epochs_of: dict[int, int]) -> str:
    caption = f"{figure_words(_layer(path, root) or path.parent.name)}, {when(path, epochs_of)}"
    links = " · ".join(
        f"<a href='{html.escape(p.relative_to(root).as_posix())}'>{html.escape(when(p, epochs_of))}</a>"
        for p in earlier
    )
    wide = " class='wide'" if _png_width(path) >= WIDE else ""
    return (
        f"<figure{wide}><img src='{html.escape(path.relative_to(root).as_posix())}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption>"
        + (f"<div class='earlier'>earlier: {links}</div>" if links else "")
        + "</figure>"
    )


def _png_width(path: Path) -> int:
    """A PNG's width in pixels, from its header (0 where it is not a PNG)."""
    with path.open("rb") as handle:
        head = handle.read(24)
    return int(struct.unpack(">I", head[16:20])[0]) if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _read_metrics(path: Path) -> tuple[dict[int, int], dict[str, dict[int, float]]]:
    """step -> epoch, and tag -> epoch -> value, from ``metrics.csv`` (tags in the order first logged; rows that do
    not read are named by the sink that wrote the file)."""
    epochs_of: dict[int, int] = {}
    values: dict[str, dict[int, float]] = {}
    for row in read_metrics(path)[0]:
        epochs_of[row.step] = row.epoch
        values.setdefault(row.tag, {})[row.epoch] = row.value
    return epochs_of, values


def _flagged(tables: list[Path], root: Path, epochs_of: dict[int, int]) -> tuple[int, str, str] | None:
    """(images flagged, layer, "epoch N") of the latest wrong-cluster table, counted from its rows and its
    "N more in the CSV file" line."""
    if not tables:
        return None
    text = tables[0].read_text(encoding="utf-8")
    rows = sum(1 for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line))
    more = re.search(r"(\d+) more in the CSV", text)
    return rows + (int(more.group(1)) if more else 0), _layer(tables[0], root), when(tables[0], epochs_of)


def _markdown_table(text: str, root: Path | None = None, thumbnails: Path | None = None) -> str:
    """A Markdown table (and the lines around it) as HTML, its columns named in words; a wrong-cluster list gains a
    ``why`` column, and a table an ``image`` column first where the folder ``thumbnails`` (under the page's folder
    ``root``) holds ``rank_<rank>.png`` for each of its rows."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip() for cell in row] for row in rows if not all(set(c.strip()) <= {"-", ":"} for c in row)]
    notes = [line for line in text.splitlines() if line.strip() and not line.strip().startswith("|")]
    out = [f"<p>{html.escape(line)}</p>" for line in notes]
    if not rows:
        return "\n".join(out)
    header, body = rows[0], rows[1:]
    at = {name: i for i, name in enumerate(header)}
    if {"label", "cluster", "neighbours_in_cluster"} <= set(header):
        header = [*header, "why"]
        body = [
            [
                *row,
                f"{row[at['neighbours_in_cluster']]} of its neighbours are {row[at['cluster']]}, "
                f"it is labelled {row[at['label']]}",
            ]
            for row in body
        ]
    # a column empty in every row (the paths of a dataset without files) is left out
    kept = [i for i in range(len(header)) if not body or any(row[i] for row in body)]
    cells = ["".join(f"<td class='text'>{html.escape(row[i])}</td>" for i in kept) for row in body]
    names = [COLUMN_WORDS.get(header[i], header[i].replace("_", " ")) for i in kept]
    rank = at.get("rank", -1)
    if root is not None and thumbnails is not None and body and rank >= 0 and all(r[rank].isdigit() for r in body):
        images = [thumbnails / f"rank_{int(row[rank]):03d}.png" for row in body]
        if all(image.exists() for image in images):
            names = ["image", *names]
            cells = [
                f"<td><img class='thumb' src='{html.escape(image.relative_to(root).as_posix())}' "
                f"alt='rank {html.escape(row[rank])}'></td>{row_cells}"
                for image, row, row_cells in zip(images, body, cells, strict=True)
            ]
    head = "".join(f"<th class='text'>{html.escape(name)}</th>" for name in names)
    table = "".join(f"<tr>{row_cells}</tr>" for row_cells in cells)
    return "\n".join([f"<table><tr>{head}</tr>{table}</table>", *out])


def _metrics_tables(values: dict[str, dict[int, float]], layers: list[str]) -> list[str]:
    """A layer x epoch table of kNN purity and accuracy, and one of every other scalar inside a <details>; epochs
    ascending, rows named in words (the tag in each row's tooltip)."""
    if not values:
        return []
    headline_tags = [
        tag for layer in layers for tag in values if tag.endswith(f"/{layer}") and re.search(r"/knn_(purity|acc)", tag)
    ]
    rest = [tag for tag in values if tag not in headline_tags]
    epochs = sorted({epoch for series in values.values() for epoch in series})
    tables = ["<h2 id='scalars'>kNN purity and accuracy per layer</h2>", _table(headline_tags, epochs, values)]
    if rest:
        tables.append(
            f"<details><summary>Every other number ({len(rest)})</summary>{_table(rest, epochs, values)}</details>"
        )
    return tables


def _table(tags: list[str], epochs: list[int], values: dict[str, dict[int, float]]) -> str:
    head = "".join(f"<th>epoch {epoch}</th>" for epoch in epochs)
    rows = "".join(
        f"<tr><td class='text' title='{html.escape(tag)}'>{html.escape(scalar_words(tag))}</td>"
        + "".join(f"<td>{values[tag][e]:.3f}</td>" if e in values[tag] else "<td></td>" for e in epochs)
        + "</tr>"
        for tag in tags
    )
    return f"<table><tr><th class='text'>layer: measure</th>{head}</tr>{rows}</table>"
