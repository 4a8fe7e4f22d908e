"""A static HTML page over what a :class:`~lightning_featviz.outputs.sinks.FileSink` wrote: open it without TensorBoard.

The page opens with a table of contents, then the kNN purity and accuracy of every layer per epoch
(the rest of the scalars folded away), then the latest image of every figure — grouped by kind, in
the order the layers were captured, captioned with layer and epoch, with links to the same figure
at earlier epochs — and the wrong-cluster list as an HTML table with each image and the reason in words. Every
path is relative: the folder can be zipped, sent and opened from ``file://``.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path

from lightning_featviz.outputs.files import write_atomically
from lightning_featviz.outputs.metrics_file import read_metrics

#: Figure kinds in the order a reader wants them, with a heading each; others follow in name order.
SECTIONS = {
    "purity_by_depth": "Purity by depth",
    "purity_by_class": "Purity of each class",
    "neighbours": "Neighbour grids: each query, then its k nearest neighbours",
    "tsne_2d": "t-SNE maps (2-D)",
    "tsne_3d": "t-SNE maps (3-D)",
    "wrong_cluster": "Images in the wrong semantic cluster",
    "neighbour_confusion": "Neighbourhood confusion",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
nav { background: #f6f6f6; padding: 0.5em 1.5em; border-radius: 6px; } nav li { margin: 0.2em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
img.thumb { width: 48px; height: 48px; image-rendering: pixelated; border: 0; display: block; }
figcaption { color: #555; font-size: 0.9em; } .earlier { font-size: 0.85em; color: #777; }
"""

_STEP = re.compile(r"step=(\d+)")

#: The folder beside a table's ``step=<step>.md`` that holds its rows' thumbnails: ``thumbnails_<step>``.
THUMBNAILS = "thumbnails_"


def write_html_report(root: str | Path, title: str = "lightning_featviz report") -> Path:
    """Write ``root/index.html`` over the PNG figures, ``metrics.csv`` and Markdown tables under ``root``.

    Figures are found as ``root/<prefix>/<kind>/<layer...>/step=<step>.png`` (the :class:`FileSink`
    layout); the latest step of each is shown, earlier ones are linked. Returns the page's path.
    """
    root = Path(root)
    epochs_of = _epochs_of_steps(root / "metrics.csv")
    figures: dict[str, list[tuple[Path, list[Path]]]] = defaultdict(list)
    texts: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted({path.parent for path in root.rglob("step=*.*")}):
        for suffix in (".png", ".md"):
            steps = sorted(folder.glob(f"step=*{suffix}"), reverse=True)  # the latest first
            if not steps:
                continue
            relative = steps[0].relative_to(root)
            kind = relative.parts[1] if len(relative.parts) > 2 else relative.parts[0]
            if suffix == ".png":
                figures[kind].append((steps[0], steps[1:]))
            else:
                texts[kind.removesuffix("_table")].append(steps[0])
    kinds = [*[k for k in SECTIONS if k in figures or k in texts], *sorted((set(figures) | set(texts)) - set(SECTIONS))]
    contents = ["<li><a href='#scalars'>kNN purity and accuracy per layer</a></li>"]
    contents += [f"<li><a href='#{kind}'>{html.escape(SECTIONS.get(kind, kind))}</a></li>" for kind in kinds]
    latest = max(epochs_of.values(), default=None)
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Figures of the latest epoch{f' ({latest})' if latest is not None else ''}; "
        "the links under each open the same figure at earlier epochs.</p>",
        f"<nav><strong>Contents</strong><ul>{''.join(contents)}</ul></nav>",
        *_metrics_tables(root / "metrics.csv"),
    ]
    for kind in kinds:
        parts.append(f"<h2 id='{kind}'>{html.escape(SECTIONS.get(kind, kind))}</h2>")
        for path, earlier in sorted(figures.get(kind, []), key=lambda item: item[0].stat().st_mtime_ns):
            layer = "/".join(path.relative_to(root).parts[2:-1]) or kind
            caption = f"{layer}, {_when(path, epochs_of)}"
            links = " · ".join(
                f"<a href='{html.escape(p.relative_to(root).as_posix())}'>{html.escape(_when(p, epochs_of))}</a>"
                for p in earlier
            )
            parts.append(
                f"<figure><img src='{html.escape(path.relative_to(root).as_posix())}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption>"
                + (f"<div class='earlier'>earlier: {links}</div>" if links else "")
                + "</figure>"
            )
        for path in texts.get(kind, []):
            layer = "/".join(path.relative_to(root).parts[2:-1])
            parts.append(f"<h3>The list: {html.escape(layer)}, {html.escape(_when(path, epochs_of))}</h3>")
            thumbnails = path.parent / f"{THUMBNAILS}{path.stem.removeprefix('step=')}"
            parts.append(_markdown_table(path.read_text(encoding="utf-8"), root, thumbnails))
    page = root / "index.html"
    write_atomically(page, "\n".join(parts) + "\n")
    return page


def _epochs_of_steps(path: Path) -> dict[int, int]:
    """step -> epoch, from ``metrics.csv``."""
    return {row.step: row.epoch for row in read_metrics(path)[0]}


def _when(path: Path, epochs_of: dict[int, int]) -> str:
    """``"epoch 3"`` for a ``step=…`` file (``"step 120"`` where the epoch is not known)."""
    match = _STEP.search(path.name)
    if match is None:
        return path.stem
    step = int(match.group(1))
    return f"epoch {epochs_of[step]}" if step in epochs_of else f"step {step}"


def _markdown_table(text: str, root: Path | None = None, thumbnails: Path | None = None) -> str:
    """A Markdown table (and the lines around it) as HTML; a wrong-cluster list gains a ``why`` column,
    and an ``image`` column first where the folder ``thumbnails`` (under the page's folder ``root``)
    holds ``rank_<rank>.png`` for each of its rows."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip() for cell in row] for row in rows if not all(set(c.strip()) <= {"-", ":"} for c in row)]
    notes = [line for line in text.splitlines() if line.strip() and not line.strip().startswith("|")]
    out = [f"<p>{html.escape(line)}</p>" for line in notes]
    if not rows:
        return "\n".join(out)
    header, body = rows[0], rows[1:]
    why = {"label", "cluster", "neighbours_in_cluster"} <= set(header)
    if why:
        at = {name: i for i, name in enumerate(header)}
        header = [*header, "why"]
        body = [
            [
                *row,
                f"{row[at['neighbours_in_cluster']]} of its neighbours are {row[at['cluster']]}, "
                f"it is labelled {row[at['label']]}",
            ]
            for row in body
        ]
    cells = ["".join(f"<td class='text'>{html.escape(cell)}</td>" for cell in row) for row in body]
    rank = header.index("rank") if "rank" in header else -1
    if root is not None and thumbnails is not None and body and rank >= 0 and all(r[rank].isdigit() for r in body):
        images = [thumbnails / f"rank_{int(row[rank]):03d}.png" for row in body]
        if all(image.exists() for image in images):
            header = ["image", *header]
            cells = [
                f"<td><img class='thumb' src='{html.escape(image.relative_to(root).as_posix())}' "
                f"alt='rank {html.escape(row[rank])}'></td>{row_cells}"
                for image, row, row_cells in zip(images, body, cells, strict=True)
            ]
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    table = "".join(f"<tr>{row_cells}</tr>" for row_cells in cells)
    return "\n".join([f"<table><tr>{head}</tr>{table}</table>", *out])


def _metrics_tables(path: Path) -> list[str]:
    """An epoch x tag table of the headline scalars, and one of every other scalar inside a <details>."""
    rows = read_metrics(path)[0]  # rows that do not read are named by the sink that wrote the file
    if not rows:
        return []
    values: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        values[row.tag][row.epoch] = row.value
    headline = [tag for tag in values if "/knn_purity@" in tag or "/knn_accuracy@" in tag]
    rest = sorted(set(values) - set(headline))
    epochs = sorted({epoch for series in values.values() for epoch in series}, reverse=True)  # the latest first
    tables = ["<h2 id='scalars'>kNN purity and accuracy per layer</h2>", _table(headline, epochs, values)]
    if rest:
        tables.append(
            f"<details><summary>Every other scalar ({len(rest)})</summary>{_table(rest, epochs, values)}</details>"
        )
    return tables


def _table(tags: list[str], epochs: list[int], values: dict[str, dict[int, float]]) -> str:
    head = "".join(f"<th>epoch {epoch}</th>" for epoch in epochs)
    rows = "".join(
        f"<tr><td>{html.escape(tag)}</td>"
        + "".join(f"<td>{values[tag][e]:.3f}</td>" if e in values[tag] else "<td></td>" for e in epochs)
        + "</tr>"
        for tag in tags
    )
    return f"<table><tr><th>tag</th>{head}</tr>{rows}</table>"
