"""Neighbour grids: each query image followed by its k nearest neighbours, marked same or other class.

Image mosaics are drawn with Pillow (thumbnails enlarged by whole factors, borders and captions need no axes);
the charts and t-SNE maps, with matplotlib (:mod:`lightning_featviz.render.purity_charts`,
:mod:`lightning_featviz.render.maps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from lightning_featviz.render.canvas import (
    MAX_WIDTH,
    fit_text,
    font,
    titled,
    type_px,
    wrap_text,
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
