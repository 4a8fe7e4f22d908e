"""A static HTML page over what a :class:`~lightning_featviz.sinks.FileSink` wrote: open it without TensorBoard.

The page shows the scalars of every epoch as a table (kNN purity and accuracy per layer up front,
the rest folded away), then the latest image of every figure, grouped by kind and in the order
the layers were captured, and the latest text tables.
"""

from __future__ import annotations

import csv
import html
from collections import defaultdict
from pathlib import Path

#: Figure kinds in the order a reader wants them, with a heading each; others follow in name order.
SECTIONS = {
    "purity_by_depth": "Purity by depth",
    "neighbours": "Neighbour grids: each query, then its k nearest neighbours",
    "tsne_2d": "t-SNE maps (2-D)",
    "tsne_3d": "t-SNE maps (3-D)",
    "wrong_cluster": "Images in the wrong semantic cluster",
    "neighbour_confusion": "Neighbourhood confusion",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def write_html_report(root: str | Path, title: str = "lightning_featviz report") -> Path:
    """Write ``root/index.html`` over the PNG figures, ``metrics.csv`` and Markdown tables under ``root``.

    Figures are found as ``root/<prefix>/<kind>/<layer...>/step=<step>.png`` (the :class:`FileSink`
    layout); the latest step of each is shown. Returns the page's path.
    """
    root = Path(root)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>"]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts += _metrics_tables(root / "metrics.csv")
    figures: dict[str, list[Path]] = defaultdict(list)
    texts: list[Path] = []
    for folder in sorted({path.parent for path in root.rglob("step=*.*")}):
        latest = max(folder.glob("step=*.*"))
        relative = latest.relative_to(root)
        if latest.suffix == ".png":
            figures[relative.parts[1] if len(relative.parts) > 2 else relative.parts[0]].append(latest)
        elif latest.suffix == ".md":
            texts.append(latest)
    for kind in [*[k for k in SECTIONS if k in figures], *sorted(set(figures) - set(SECTIONS))]:
        parts.append(f"<h2>{html.escape(SECTIONS.get(kind, kind))}</h2>")
        for path in sorted(figures[kind], key=lambda p: p.stat().st_mtime_ns):
            caption = "/".join(path.relative_to(root).parts[1:-1]) + f" ({path.stem})"
            source = html.escape(path.relative_to(root).as_posix())
            parts.append(
                f"<figure><img src='{source}' loading='lazy'><figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    for path in texts:
        kind, *layer = path.relative_to(root).parts[1:-1]
        heading = f"{kind.replace('_', ' ').capitalize()}: {'/'.join(layer)}"
        parts.append(f"<h2>{html.escape(heading)}</h2><pre>{html.escape(path.read_text(encoding='utf-8'))}</pre>")
    page = root / "index.html"
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page


def _metrics_tables(path: Path) -> list[str]:
    """An epoch x tag table of the headline scalars, and one of every other scalar inside a <details>."""
    if not path.exists():
        return []
    values: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            values[row["tag"]][int(row["epoch"])] = float(row["value"])
    headline = [tag for tag in values if "/knn_purity@" in tag or "/knn_accuracy@" in tag]
    rest = sorted(set(values) - set(headline))
    epochs = sorted({epoch for series in values.values() for epoch in series})
    tables = ["<h2>kNN purity and accuracy per layer</h2>", _table(headline, epochs, values)]
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
