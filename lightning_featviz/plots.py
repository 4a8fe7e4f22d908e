"""Rendering: arrays in, figures and RGB images out. Nothing here computes statistics.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas, so no pyplot
global state is touched and nothing needs closing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

QUERY_COLOUR = (31, 119, 180)  # blue
SAME_COLOUR = (44, 160, 44)  # green
OTHER_COLOUR = (214, 39, 40)  # red
CELL = 64  # px a thumbnail is enlarged to, about
BORDER = 4  # px around each thumbnail
GAP = 8  # px between neighbours; the query column has twice more
PANEL_GAP = 32  # px between panels
CAPTION_PX, ROW_CAPTION_PX, TITLE_PX, SUPTITLE_PX = 11, 13, 16, 19  # font sizes


@dataclass
class NeighbourGrid:
    """What one neighbour-grid panel shows: Q query rows, each followed by k neighbours.

    Attributes:
        title: panel title (the layer name, say).
        query_images: (Q, 3, T, T) uint8.
        neighbour_images: (Q, k, 3, T, T) uint8.
        query_labels: (Q,) class ids.
        neighbour_labels: (Q, k) class ids.
        class_names: name of each class id.
        row_captions: optional (Q,) sentences, each shown above its row.
    """

    title: str
    query_images: Tensor
    neighbour_images: Tensor
    query_labels: Tensor
    neighbour_labels: Tensor
    class_names: Sequence[str]
    row_captions: Sequence[str] | None = None


def _short(name: str, width: int = 11) -> str:
    """``name`` cut to ``width`` characters, with ``$`` escaped: matplotlib would read ``$...$`` as maths."""
    name = name if len(name) <= width else name[: width - 1] + "…"
    return name.replace("$", r"\$")


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's own font, so it is always there) at ``size`` px."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")), size)


def _fit(text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width`` px."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _compose(grid: NeighbourGrid) -> np.ndarray:
    """One panel as an (H, W, 3) uint8 image: thumbnails enlarged to about :data:`CELL` px (by a
    whole factor, nearest neighbour) in coloured borders, each captioned below, under a title."""
    q, k = grid.neighbour_labels.shape
    t = grid.query_images.shape[-1]
    scale = max(1, round(CELL / t))
    cell = t * scale + 2 * BORDER
    headline = ROW_CAPTION_PX + 8 if grid.row_captions is not None else 0
    pitch_x, pitch_y = cell + GAP, headline + cell + CAPTION_PX + 8
    top = TITLE_PX + 10
    width = GAP + (k + 1) * pitch_x + 2 * GAP
    canvas = np.full((top + q * pitch_y, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[tuple[float, float], str, str, int, tuple[int, int, int]]] = []  # xy, anchor, text, px, colour
    texts.append(((width / 2, 2), "mt", _fit(grid.title, _font(TITLE_PX), width), TITLE_PX, (0, 0, 0)))
    for row in range(q):
        y = top + row * pitch_y + headline
        if grid.row_captions is not None:
            line = _fit(grid.row_captions[row], _font(ROW_CAPTION_PX), width - GAP)
            texts.append(((GAP, y - headline), "lt", line, ROW_CAPTION_PX, (0, 0, 0)))
        cells = [(GAP, grid.query_images[row], int(grid.query_labels[row]), QUERY_COLOUR, "query:")]
        for col in range(k):
            label = int(grid.neighbour_labels[row, col])
            colour, mark = (SAME_COLOUR, "✓") if label == int(grid.query_labels[row]) else (OTHER_COLOUR, "✗")
            cells.append((3 * GAP + (col + 1) * pitch_x, grid.neighbour_images[row, col], label, colour, mark))
        for x, image, label, colour, mark in cells:
            canvas[y : y + cell, x : x + cell] = colour
            pixels = image.permute(1, 2, 0).numpy().repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[y + BORDER : y + cell - BORDER, x + BORDER : x + cell - BORDER] = pixels
            caption = _fit(f"{mark} {grid.class_names[label]}", _font(CAPTION_PX), pitch_x)
            texts.append(((x + cell / 2, y + cell + 2), "mt", caption, CAPTION_PX, colour))
    panel = Image.fromarray(canvas)
    draw = ImageDraw.Draw(panel)
    for xy, anchor, text, size, colour in texts:
        draw.text(xy, text, fill=colour, font=_font(size), anchor=anchor)
    return np.asarray(panel)


def neighbour_grid_image(panels: Sequence[NeighbourGrid], suptitle: str | None = None) -> np.ndarray:
    """The given neighbour grids side by side (one panel = one layer), as an (H, W, 3) uint8 image.

    Drawn with Pillow, not matplotlib: an epoch's grids cost milliseconds instead of a second.
    """
    images = [_compose(panel) for panel in panels]
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + PANEL_GAP * (len(images) - 1)
    top = SUPTITLE_PX + 14 if suptitle else 0
    canvas = np.full((top + height, width, 3), 255, dtype=np.uint8)
    x = 0
    for image in images:
        canvas[top : top + image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + PANEL_GAP
    if not suptitle:
        return canvas
    composite = Image.fromarray(canvas)
    font = _font(SUPTITLE_PX)
    ImageDraw.Draw(composite).text((width / 2, 4), _fit(suptitle, font, width), fill=(0, 0, 0), font=font, anchor="mt")
    return np.asarray(composite)


def neighbour_grid_figure(panels: Sequence[NeighbourGrid], suptitle: str | None = None) -> Figure:
    """:func:`neighbour_grid_image` as a matplotlib figure (100 dpi, one figure pixel per image pixel)."""
    image = neighbour_grid_image(panels, suptitle)
    fig = Figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    return fig


#: (elevation, azimuth) of the three views of a 3-D map: from the front, from the side, from above.
VIEW_ANGLES = ((20.0, -60.0), (20.0, 30.0), (85.0, -90.0))


@dataclass
class MapPanel:
    """What one t-SNE panel shows.

    Attributes:
        title: panel title (layer, purity).
        points: (N, 2) or (N, 3) map coordinates.
        labels: (N,) class ids.
        class_names: name of each class id.
        ringed: optional (N,) bool, points to ring in black (samples flagged as suspicious, say).
    """

    title: str
    points: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str]
    ringed: np.ndarray | None = None


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA colours, one per class id: tab10 / tab20 when they suffice, else a spread of turbo."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= 20:
        return colormaps["tab20"](np.arange(num_classes))
    return colormaps["turbo"](np.linspace(0.03, 0.97, num_classes))


def _draw_map(ax: Axes, panel: MapPanel, colours: np.ndarray, size: float, fontsize: float) -> None:
    coords: list[Any] = [panel.points[:, d] for d in range(panel.points.shape[1])]
    ax.scatter(*coords, c=colours[panel.labels], s=size, linewidths=0, alpha=0.85, rasterized=True)  # type: ignore[misc]
    if panel.ringed is not None and panel.ringed.any():
        ringed = [c[panel.ringed] for c in coords]
        ax.scatter(*ringed, s=size * 6, facecolors="none", edgecolors="black", linewidths=0.9)  # type: ignore[misc]
    ax.set_title(panel.title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.points.shape[1] == 3:
        ax.set_zticks([])  # type: ignore[attr-defined]


def map_figure(
    panels: Sequence[MapPanel],
    suptitle: str | None = None,
    columns: int = 4,
    angles: Sequence[tuple[float, float]] = VIEW_ANGLES,
) -> Figure:
    """t-SNE maps, points coloured by class, with one legend of class names for the whole figure.

    2-D panels are laid out ``columns`` to a row; a 3-D panel takes a row of its own, seen from
    each of ``angles`` (elevation, azimuth), so its shape reads in a still image.
    """
    three_d = panels[0].points.shape[1] == 3
    rows, cols = (len(panels), len(angles)) if three_d else (-(-len(panels) // columns), min(len(panels), columns))
    side = 3.4 if three_d else 4.2
    shown = sorted({int(label) for panel in panels for label in np.unique(panel.labels)})
    names = panels[0].class_names
    legend_columns = 1 + (len(shown) - 1) // 25
    fig = Figure(figsize=(side * cols + 1.3 * legend_columns + 0.6, side * rows + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    colours = class_colours(max(len(names), max(shown) + 1))
    size = float(np.clip(3000 / max(len(panels[0].points), 1), 1.5, 25)) * (2 if three_d else 1)
    for row, panel in enumerate(panels):
        if three_d:
            for col, (elevation, azimuth) in enumerate(angles):
                ax = fig.add_subplot(rows, cols, row * cols + col + 1, projection="3d")
                title = panel.title if col == 0 else f"elevation {elevation:.0f}°, azimuth {azimuth:.0f}°"
                _draw_map(ax, replace(panel, title=title), colours, size, 9)
                ax.view_init(elev=elevation, azim=azimuth)
        else:
            _draw_map(fig.add_subplot(rows, cols, row + 1), panel, colours, size, 10)
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=6, color=colours[c], label=_short(str(names[c]), 18))
        for c in shown
    ]
    if any(panel.ringed is not None and panel.ringed.any() for panel in panels):
        handles.append(
            Line2D(
                [], [], marker="o", linestyle="", markersize=8, markerfacecolor="none", color="black", label="flagged"
            )
        )
    fig.legend(handles=handles, loc="outside right center", ncols=legend_columns, fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """A (C, C) neighbourhood confusion matrix (rows: true class, columns: neighbours' classes,
    rows sum to 1) beside a bar chart of its diagonal, the per-class purity."""
    c = len(class_names)
    names = [_short(str(n), 16) for n in class_names]
    side = float(np.clip(0.45 * c + 1.5, 3.5, 12))
    fig = Figure(figsize=(side + 3.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    matrix_ax, bar_ax = fig.subplots(1, 2, width_ratios=[side, 2.6])
    image = matrix_ax.imshow(confusion, cmap="Blues", vmin=0, vmax=1)
    matrix_ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=8)
    matrix_ax.set_yticks(range(c), names, fontsize=8)
    matrix_ax.set(xlabel="class of the neighbours", ylabel="true class")
    if c <= 20:
        for (row, col), value in np.ndenumerate(confusion):
            if value >= 0.005:
                colour = "white" if value > 0.6 else "black"
                annotation = matrix_ax.text(
                    col, row, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=colour
                )
                annotation.set_in_layout(False)  # inside its cell: the layout need not measure it
    fig.colorbar(image, ax=matrix_ax, shrink=0.7, label="share of neighbours")
    purity = np.diag(confusion)
    bar_ax.barh(range(c), purity, color=class_colours(c))
    bar_ax.set_yticks(range(c), names, fontsize=8)
    bar_ax.invert_yaxis()
    bar_ax.set(xlim=(0, 1), xlabel="purity (same-class share)", title="per-class purity")
    fig.suptitle(title, fontsize=11)
    return fig


def purity_depth_figure(
    layers: Sequence[str], purity: Sequence[float], history: np.ndarray, epochs: Sequence[int], k: int, epoch: int
) -> Figure:
    """Purity@k against layer order for this epoch, and the (L, E) layer × epoch ``history`` as a heatmap."""
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    line_ax, heat_ax = fig.subplots(1, 2)
    line_ax.plot(range(len(layers)), purity, marker="o")
    line_ax.set_xticks(range(len(layers)), [_short(n, 14) for n in layers], rotation=30, ha="right")
    line_ax.set(ylim=(0, 1.02), ylabel=f"kNN purity@{k}", title=f"Epoch {epoch}: purity by depth")
    line_ax.grid(alpha=0.3)
    image = heat_ax.imshow(history, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    heat_ax.set_yticks(range(len(layers)), [_short(n, 14) for n in layers])
    heat_ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=8 if len(epochs) < 30 else 5)
    heat_ax.set(xlabel="epoch", title="purity across the run")
    fig.colorbar(image, ax=heat_ax, label=f"purity@{k}")
    return fig
