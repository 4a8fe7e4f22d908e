"""Rendering: arrays in, figures and RGB images out. Nothing here computes statistics.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas, so no pyplot
global state is touched and nothing needs closing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

QUERY_COLOUR = (31, 119, 180)  # blue
SAME_COLOUR = (44, 160, 44)  # green
OTHER_COLOUR = (214, 39, 40)  # red
BORDER = 3  # px of the composite image, around each thumbnail
GAP = 4  # px between neighbours; the query column has three times more


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
    """

    title: str
    query_images: Tensor
    neighbour_images: Tensor
    query_labels: Tensor
    neighbour_labels: Tensor
    class_names: Sequence[str]


def _short(name: str, width: int = 11) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _compose(grid: NeighbourGrid) -> tuple[np.ndarray, list[tuple[float, float, str, tuple[int, int, int]]]]:
    """Paste thumbnails with coloured borders into one white canvas; return it and its captions."""
    q, k = grid.neighbour_labels.shape
    t = grid.query_images.shape[-1]
    cell = t + 2 * BORDER
    caption = int(0.45 * cell)
    pitch_x, pitch_y = cell + GAP, cell + caption
    width = (k + 1) * pitch_x + 2 * GAP
    canvas = np.full((q * pitch_y, width, 3), 255, dtype=np.uint8)
    captions = []
    for row in range(q):
        y = row * pitch_y
        cells = [(0, grid.query_images[row], int(grid.query_labels[row]), QUERY_COLOUR, "query")]
        for col in range(k):
            label = int(grid.neighbour_labels[row, col])
            same = label == int(grid.query_labels[row])
            colour, mark = (SAME_COLOUR, "✓") if same else (OTHER_COLOUR, "✗")
            cells.append((3 * GAP + (col + 1) * pitch_x, grid.neighbour_images[row, col], label, colour, mark))
        for x, image, label, colour, mark in cells:
            canvas[y : y + cell, x : x + cell] = colour
            canvas[y + BORDER : y + BORDER + t, x + BORDER : x + BORDER + t] = image.permute(1, 2, 0).numpy()
            name = _short(str(grid.class_names[label]))
            text = f"query: {name}" if mark == "query" else f"{mark} {name}"
            captions.append((x + cell / 2, y + cell + 1, text, colour))
    return canvas, captions


def _draw_grid(ax: Axes, grid: NeighbourGrid, fontsize: float) -> None:
    canvas, captions = _compose(grid)
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, colour in captions:
        ax.text(x, y, text, ha="center", va="top", fontsize=fontsize, color=np.array(colour) / 255)
    ax.set_title(grid.title, fontsize=fontsize * 1.6)
    ax.set_axis_off()


def neighbour_grid_figure(panels: Sequence[NeighbourGrid], suptitle: str | None = None) -> Figure:
    """One figure with the given neighbour grids side by side (one panel = one layer)."""
    q, k = panels[0].neighbour_labels.shape
    panel_width, panel_height = 0.72 * (k + 1.5), 0.88 * q + 0.45
    fig = Figure(
        figsize=(panel_width * len(panels), panel_height + (0.4 if suptitle else 0)), dpi=100, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, grid in zip(axes, panels, strict=True):
        _draw_grid(ax, grid, fontsize=6.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
