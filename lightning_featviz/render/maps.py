"""t-SNE maps drawn with matplotlib: points coloured by class (the tab's colours), one legend, flagged points
ringed; a 3-D map seen from several angles in a row.

Panels are square and share the figure's :data:`~lightning_featviz.render.style.WIDTH_PX`: one map beside its
legend, several in a grid over a legend in columns. A point's size follows how many points share how much
room (:func:`~lightning_featviz.render.style.point_px`); the legend's markers are drawn at that size, or at a
size that reads. t-SNE's axes carry no meaning, so maps have no ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_featviz.render.chart import key, key_px
from lightning_featviz.render.colours import class_colours
from lightning_featviz.render.names import key_lines, short_names
from lightning_featviz.render.style import (
    INK,
    PAD,
    TEXT_PT,
    WIDTH_PX,
    area_pt2,
    axes_at,
    figure,
    fitted,
    line_px,
    pixels,
    point_px,
    text_size,
    title,
    title_px,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: (elevation, azimuth) of the three views of a 3-D map: from the front, from the side, from above.
VIEW_ANGLES = ((20.0, -60.0), (20.0, 30.0), (85.0, -90.0))
GAP = 12  # px between panels
LEGEND_ROWS = 20  # legend entries per column beside a single map
LEGEND_ENTRIES = 40  # legend entries at most (the others are counted)
RING = "black"  # the ring around a flagged point


@dataclass
class MapPanel:
    """What one t-SNE panel shows.

    Attributes:
        title: panel title (the layer).
        points: (N, 2) or (N, 3) map coordinates.
        labels: (N,) class ids.
        class_names: name of each class id.
        ringed: optional (N,) bool, points to ring in black (samples flagged as suspicious, say).
        subtitle: optional second line of the title (purity, say).
    """

    title: str
    points: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str]
    ringed: np.ndarray | None = None
    subtitle: str = ""


def _normalised(points: np.ndarray) -> np.ndarray:
    """(N, c) points centred and scaled into [-1, 1]^c, the same scale on every axis."""
    low, high = points.min(axis=0), points.max(axis=0)
    half = float((high - low).max()) / 2 or 1.0
    return (points - (low + high) / 2) / half


def _legend_entries(names: Sequence[str], shown: list[int], flagged: bool) -> list[tuple[str, int]]:
    """(text, class id or -1 for the ring, -2 for the count of the rest) of the legend, in order."""
    entries = [(str(names[c]), c) for c in shown[:LEGEND_ENTRIES]]
    if len(shown) > LEGEND_ENTRIES:
        entries.append((f"and {len(shown) - LEGEND_ENTRIES} more classes", -2))
    return entries + ([("flagged (wrong cluster)", -1)] if flagged else [])


def _entry_px(text: str) -> float:
    """px one legend entry takes across: marker, gap, text, gap to the next column."""
    return 14 + 6 + text_size(fitted(text, 200))[0] + 12


def _draw_panel(ax: Any, panel: MapPanel, colours: np.ndarray, diameter: float, angles: tuple[float, float] | None):  # noqa: ANN202
    """Draw ``panel``'s points on ``ax`` (a 3-D axes when ``angles``)."""
    points = _normalised(np.asarray(panel.points, dtype=float))
    labels = np.asarray(panel.labels)
    size = area_pt2(diameter)
    if angles is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours[labels], linewidths=0)
        ax.set_xlim(-1.06, 1.06)
        ax.set_ylim(-1.06, 1.06)
        ringed = panel.ringed
        if ringed is not None and ringed.any():
            ring = max(2.5 * diameter, 7.0)
            ax.scatter(
                points[ringed, 0],
                points[ringed, 1],
                s=area_pt2(ring),
                facecolors="none",
                edgecolors=RING,
                linewidths=0.7,
            )
    else:
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], s=size, c=colours[labels], linewidths=0, depthshade=True)
        ax.view_init(*angles)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_zlim(-1, 1)
        ax.set_box_aspect(None, zoom=0.95)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])  # t-SNE coordinates mean nothing: the box shows the shape
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.line.set_linewidth(0.6)
    if angles is None:
        ax.set_xticks([])
        ax.set_yticks([])


def _view_name(view: tuple[float, float]) -> str:
    names = {VIEW_ANGLES[0]: "from the front", VIEW_ANGLES[1]: "from the side", VIEW_ANGLES[2]: "from above"}
    return names.get(view, f"elevation {view[0]:.0f}°, azimuth {view[1]:.0f}°")


def map_figure(
    panels: Sequence[MapPanel],
    suptitle: str | None = None,
    columns: int = 4,
    angles: Sequence[tuple[float, float]] = VIEW_ANGLES,
) -> Figure:
    """t-SNE maps: points coloured by class, one legend of class names (and of the ring of flagged points).

    2-D panels are laid out up to ``columns`` to a row (as many to a row as leave the last row least empty); a
    3-D panel takes a row of its own, seen from each of ``angles`` (elevation, azimuth), so its shape reads in
    a still image. One 2-D panel has its legend beside it; several have it below.
    """
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)

    three_d = panels[0].points.shape[1] == 3
    views: list[tuple[float, float] | None] = list(angles) if three_d else [None]
    cells = [(panel, view) for panel in panels for view in views]
    if three_d:
        cols = len(views)
    else:
        cols = math.ceil(len(panels) / math.ceil(len(panels) / max(1, min(columns, len(panels)))))
    rows = math.ceil(len(cells) / cols)
    full = [str(n) for n in panels[0].class_names]
    names = short_names(full)
    shown = sorted({int(label) for panel in panels for label in np.unique(panel.labels)})
    colours = class_colours(max(len(names), max(shown) + 1))
    flagged = any(panel.ringed is not None and panel.ringed.any() for panel in panels)
    entries = _legend_entries(names, shown, flagged)
    lines = key_lines(full, names, shown)
    beside = len(cells) == 1 and len(entries) <= LEGEND_ROWS  # else below, in columns across the figure
    specials = sum(c < 0 for _, c in entries)  # the count of the rest, the ring: below, a row each
    widest = max(_entry_px(text) for text, c in entries if beside or c >= 0)
    if beside:  # the legend right of the one map
        legend_cols, legend_height = 1, 0.0
        side = min(WIDTH_PX - 3 * PAD - widest, 520.0)
    else:
        side = (WIDTH_PX - 2 * PAD - (cols - 1) * GAP) / cols
        if len(cells) == 1:
            side = min(side, 440.0)
        legend_cols = int(np.clip((WIDTH_PX - 2 * PAD) // widest, 1, 10))
        legend_rows = math.ceil((len(entries) - specials) / legend_cols) + specials
        legend_height = legend_rows * line_px() * 1.3 + PAD
    head = title_px(suptitle)
    panel_title = 2 * line_px() + 4  # the layer, then its purity
    height = head + rows * (panel_title + side) + (rows - 1) * GAP + legend_height + key_px(lines) + PAD
    if beside:
        height = max(height, head + len(entries[:LEGEND_ROWS]) * line_px() * 1.3 + 2 * PAD + key_px(lines))
    fig = figure(max(height, WIDTH_PX / 2))
    title(fig, suptitle)
    diameter = point_px(len(panels[0].points), side)
    left = (WIDTH_PX - side) / 2 if len(cells) == 1 and not beside else PAD  # one map over its legend: centred
    for n, (panel, view) in enumerate(cells):
        x, y = left + (n % cols) * (side + GAP), head + (n // cols) * (panel_title + side + GAP)
        ax = axes_at(fig, x, y + panel_title, side, side, "3d" if view is not None else None)
        _draw_panel(ax, panel, colours, diameter, view)
        first = view is None or view == views[0]
        heading = fitted(panel.title, side, middle=True) if first else _view_name(view)  # type: ignore[arg-type]
        below = fitted(panel.subtitle, side) if first else ""
        fig.text(
            (x + side / 2) / WIDTH_PX,
            1 - y / fig.bbox.height,
            f"{heading}\n{below}" if below else heading,
            ha="center",
            va="top",
            fontsize=TEXT_PT,
            color=INK,
        )
    legend_top = head + rows * (panel_title + side + GAP) - GAP + PAD
    _legend(
        fig,
        entries,
        colours,
        diameter,
        legend_cols,
        widest,
        (PAD + side + PAD, head + PAD) if beside else (PAD, legend_top),
        beside,
    )
    key(fig, lines, fig.bbox.height - key_px(lines))
    return fig


def _legend(
    fig: Figure,
    entries: list[tuple[str, int]],
    colours: np.ndarray,
    diameter: float,
    columns: int,
    width: float,
    at: tuple[float, float],
    down: bool,
) -> None:
    """The legend's entries in ``columns`` columns ``width`` px wide, from ``at`` (px from the top-left
    corner): down each column first (``down``: beside a single map), else along each row (below several)."""
    marker = max(diameter, 7.0)
    rows = math.ceil(len(entries) / columns)
    pitch = line_px() * 1.3
    height = fig.bbox.height
    for n, (text, c) in enumerate(entries):
        col, row = (n // rows, n % rows) if down else (n % columns, n // columns)
        if c < 0 and not down:  # the count of the rest and the ring: a row each, after the classes
            classes = sum(e >= 0 for _, e in entries)
            col, row = 0, math.ceil(classes / columns) + n - classes
        x, y = at[0] + col * width, at[1] + row * pitch + pitch / 2
        fx, fy = (x + 7) / WIDTH_PX, 1 - y / height
        if c >= 0:
            fig.add_artist(_dot(fig, fx, fy, marker, colours[c], filled=True))
        elif c == -1:
            fig.add_artist(_dot(fig, fx, fy, max(2.5 * diameter, 7.0), RING, filled=False))
        fig.text((x + 20) / WIDTH_PX, fy, fitted(text, 200), ha="left", va="center", fontsize=TEXT_PT, color=INK)


def _dot(fig: Figure, x: float, y: float, diameter_px: float, colour: Any, filled: bool) -> Any:
    """A circle ``diameter_px`` across centred on (``x``, ``y``) in figure coordinates."""
    from matplotlib.patches import Ellipse

    return Ellipse(
        (x, y),
        diameter_px / fig.bbox.width,
        diameter_px / fig.bbox.height,
        transform=fig.transFigure,
        facecolor=colour if filled else "none",
        edgecolor="none" if filled else colour,
        linewidth=0.7,
    )


def map_image(
    panels: Sequence[MapPanel],
    suptitle: str | None = None,
    columns: int = 4,
    angles: Sequence[tuple[float, float]] = VIEW_ANGLES,
) -> np.ndarray:
    """:func:`map_figure` as an (H, W, 3) uint8 image."""
    return pixels(map_figure(panels, suptitle, columns, angles))
