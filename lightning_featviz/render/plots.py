"""Rendering: arrays in, figures and RGB images out. Nothing here computes statistics.

Every picture of an epoch is drawn with Pillow, in milliseconds where matplotlib took seconds:
neighbour grids here, the confusion matrices and purity-by-depth chart from
:mod:`lightning_featviz.render.chart`'s parts, t-SNE maps in :mod:`lightning_featviz.render.map_plot`. The
``*_figure`` functions wrap a picture in a matplotlib figure for users who want one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from lightning_featviz.render.canvas import (
    MAX_WIDTH,
    class_colours,
    fit_text,
    font,
    image_figure,
    rgb,
    short_names,
    titled,
    type_px,
    with_names_key,
    wrap_text,
)
from lightning_featviz.render.chart import (
    HEADING_PX,
    LABEL_PX,
    bar_chart,
    colour_bar,
    colours_of,
    headed,
    heatmap,
    side_by_side,
)

QUERY_COLOUR = (31, 119, 180)  # blue
SAME_COLOUR = (44, 160, 44)  # green
OTHER_COLOUR = (214, 39, 40)  # red
CELL = 64  # px a thumbnail is enlarged to, about
BORDER = 4  # px around each thumbnail
GAP = 8  # px between neighbours; the query column has twice more
PANEL_GAP = 32  # px between panels
CAPTION_PX, ROW_CAPTION_PX, TITLE_PX = 11, 13, 16  # font sizes


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


def _panel_width(grid: NeighbourGrid) -> int:
    """px of one :func:`_compose` panel: the query column and the k neighbour columns."""
    t, k = grid.query_images.shape[-1], grid.neighbour_labels.shape[1]
    return GAP + (k + 1) * (t * max(1, round(CELL / t)) + 2 * BORDER + GAP) + 2 * GAP


def _compose(grid: NeighbourGrid, shown_width: int | None = None) -> np.ndarray:
    """One panel as an (H, W, 3) uint8 image: thumbnails enlarged to about :data:`CELL` px (by a
    whole factor, nearest neighbour) in coloured borders, each captioned below, under a title.

    Type grows with ``shown_width``, the width of the whole picture the panel goes into (the
    panel's own by default), so it reads at TensorBoard's card width (:func:`type_px`); a row's
    caption wraps onto a second line rather than being cut."""
    q, k = grid.neighbour_labels.shape
    t = grid.query_images.shape[-1]
    scale = max(1, round(CELL / t))
    cell = t * scale + 2 * BORDER
    width = _panel_width(grid)
    title_px, row_px = type_px(shown_width or width, TITLE_PX), type_px(shown_width or width, ROW_CAPTION_PX)
    caption_px = min(type_px(shown_width or width, CAPTION_PX), 16)  # under a cell: room for 'query: 3'
    captions = [wrap_text(text, font(row_px), width - 2 * GAP, max_lines=2) for text in (grid.row_captions or [])]
    headline = max((len(lines) for lines in captions), default=0) * (row_px + 4) + (4 if captions else 0)
    pitch_x, pitch_y = cell + GAP, headline + cell + caption_px + 8
    title = wrap_text(grid.title, font(title_px), width - 2 * GAP)  # a long title wraps onto 2 lines
    top = len(title) * (title_px + 4) + 6
    canvas = np.full((top + q * pitch_y, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[tuple[float, float], str, str, int, tuple[int, int, int]]] = []  # xy, anchor, text, px, colour
    for n, words in enumerate(title):
        texts.append(((width / 2, 2 + n * (title_px + 4)), "mt", words, title_px, (0, 0, 0)))
    for row in range(q):
        y = top + row * pitch_y + headline
        for n, line in enumerate(captions[row] if captions else []):
            texts.append(((GAP, y - headline + n * (row_px + 4)), "lt", line, row_px, (0, 0, 0)))
        cells = [(GAP, grid.query_images[row], int(grid.query_labels[row]), QUERY_COLOUR, "query:")]
        for col in range(k):
            label = int(grid.neighbour_labels[row, col])
            colour, mark = (SAME_COLOUR, "✓") if label == int(grid.query_labels[row]) else (OTHER_COLOUR, "✗")
            cells.append((3 * GAP + (col + 1) * pitch_x, grid.neighbour_images[row, col], label, colour, mark))
        for x, image, label, colour, mark in cells:
            canvas[y : y + cell, x : x + cell] = colour
            pixels = image.permute(1, 2, 0).numpy().repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[y + BORDER : y + cell - BORDER, x + BORDER : x + cell - BORDER] = pixels
            caption = fit_text(f"{mark} {grid.class_names[label]}", font(caption_px), pitch_x)
            texts.append(((x + cell / 2, y + cell + 2), "mt", caption, caption_px, colour))
    panel = Image.fromarray(canvas)
    draw = ImageDraw.Draw(panel)
    for xy, anchor, text, size, colour in texts:
        draw.text(xy, text, fill=colour, font=font(size), anchor=anchor)
    return np.asarray(panel)


def neighbour_grid_image(panels: Sequence[NeighbourGrid], suptitle: str | None = None) -> np.ndarray:
    """The given neighbour grids side by side (one panel = one layer), as an (H, W, 3) uint8 image.

    Drawn with Pillow, not matplotlib: an epoch's grids cost milliseconds instead of a second.
    """
    widths = [_panel_width(panel) for panel in panels]
    together = sum(widths) + PANEL_GAP * (len(panels) - 1)
    images = [_compose(panel, together if together <= MAX_WIDTH else max(widths)) for panel in panels]
    width = sum(image.shape[1] for image in images) + PANEL_GAP * (len(images) - 1)
    if width > MAX_WIDTH:  # too wide for a screen: one panel under the other
        width = max(image.shape[1] for image in images)
        canvas = np.full((sum(i.shape[0] for i in images) + PANEL_GAP * (len(images) - 1), width, 3), 255, np.uint8)
        y = 0
        for image in images:
            canvas[y : y + image.shape[0], : image.shape[1]] = image
            y += image.shape[0] + PANEL_GAP
        return titled(canvas, suptitle)
    height = max(image.shape[0] for image in images)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for image in images:
        canvas[: image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + PANEL_GAP
    return titled(canvas, suptitle)


def neighbour_grid_figure(panels: Sequence[NeighbourGrid], suptitle: str | None = None) -> Figure:
    """:func:`neighbour_grid_image` as a matplotlib figure (100 dpi, one figure pixel per image pixel)."""
    return image_figure(neighbour_grid_image(panels, suptitle))


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _legible(draw: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """A chart drawn by ``draw(label_px, heading_px)`` at the charts' own type sizes, then, where it
    came out wide enough to shrink much on a TensorBoard card, again with type sized for the width
    it comes out at (:func:`type_px`)."""
    size, heading = LABEL_PX, HEADING_PX
    image = draw(size, heading)
    for _ in range(4):  # larger type widens the chart a little: until the type suits the width it makes
        wanted = max(size, type_px(image.shape[1], LABEL_PX)), max(heading, type_px(image.shape[1], HEADING_PX))
        if wanted == (size, heading):
            break
        size, heading = wanted
        image = draw(size, heading)
    return image


def confusion_image(confusion: np.ndarray, class_names: Sequence[str], title: str) -> np.ndarray:
    """A (C, C) neighbourhood confusion matrix (rows: true class, columns: neighbours' classes,
    rows sum to 1) beside a bar chart of its diagonal, the per-class purity: an (H, W, 3) uint8 image."""
    c, full = len(class_names), class_names
    class_names = short_names(class_names)
    pitch = int(np.clip(480 // max(c, 1), 12, 48))

    def draw(size: int, heading: int) -> np.ndarray:
        matrix = heatmap(
            confusion,
            class_names,
            class_names,
            "Blues",
            (pitch, pitch),
            "true class",
            "class of the neighbours",
            c <= 20,
            size,
        )
        purity = np.diag(confusion)
        bars = bar_chart(purity, class_names, rgb(class_colours(c)), pitch, "purity (same-class share)", size)
        scale = colour_bar("Blues", c * pitch, "share of neighbours", size)
        pictures = [headed(matrix, "", heading), headed(scale, "", heading), headed(bars, "per-class purity", heading)]
        return side_by_side(pictures)

    return titled(with_names_key(_legible(draw), full, class_names), title)


def class_purity_image(purity: np.ndarray, class_names: Sequence[str], title: str, shown: int = 30) -> np.ndarray:
    """Bars of the (C,) per-class purity (NaN: no sample of the class): every class when C <= ``shown``,
    else the ``shown // 2`` lowest and the ``shown // 2`` highest, lowest first. An (H, W, 3) uint8 image."""
    present = np.flatnonzero(np.isfinite(purity))
    order = present[np.argsort(purity[present], kind="stable")]
    if len(order) > shown:
        order = np.concatenate([order[: shown // 2], order[-(shown // 2) :]])
        heading = f"the {shown // 2} lowest and {shown // 2} highest of {len(present)} classes"
    else:
        order = np.arange(len(purity))
        heading = f"all {len(purity)} classes"
    colours = rgb(class_colours(len(class_names)))[order]
    short = short_names(class_names)
    names = [short[i] for i in order]

    def draw(size: int, heading_px: int) -> np.ndarray:
        bars = bar_chart(purity[order], names, colours, 24, "purity (same-class share)", size)
        return side_by_side([headed(bars, heading, heading_px)])

    return titled(with_names_key(_legible(draw), class_names, short, order.tolist()), title)


def purity_depth_image(
    layers: Sequence[str], purity: Sequence[float], history: np.ndarray, epochs: Sequence[int], k: int, epoch: int
) -> np.ndarray:
    """Purity@k of each layer this epoch, in network order, beside the (L, E) layer × epoch
    ``history`` as a heatmap: an (H, W, 3) uint8 image."""
    pitch = 36
    cell_width = int(np.clip(480 // max(len(epochs), 1), 4, 48))

    def draw(size: int, heading: int) -> np.ndarray:
        bars = bar_chart(purity, layers, colours_of(np.asarray(purity), "viridis"), pitch, f"kNN purity@{k}", size)
        across = heatmap(
            history,
            layers,
            [str(e) for e in epochs],
            "viridis",
            (cell_width, pitch),
            "",
            "epoch",
            cell_width >= 36,
            size,
        )
        scale = colour_bar("viridis", len(layers) * pitch, f"purity@{k}", size)
        pictures = [
            headed(bars, f"Epoch {epoch}: purity by depth", heading),
            headed(across, "purity across the run", heading),
            headed(scale, "", heading),
        ]
        return side_by_side(pictures)

    return _legible(draw)
