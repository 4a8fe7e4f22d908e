"""Charts drawn with Pillow: a heatmap with its colour bar, horizontal bars, laid side by side.

Enough for the neighbourhood confusion matrices and the purity-by-depth chart, which are drawn
every epoch: matplotlib took about 0.3 s a chart (layout, ticks, text), these take milliseconds.
Values are shares in [0, 1]; NaN cells are grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lightning_featviz.render.canvas import fit_text, font
from lightning_featviz.render.colours import ColourTable, scale_colours

LABEL_PX, HEADING_PX = 11, 14  # font sizes
NAN_GREY = (225, 225, 225)
INK = (0, 0, 0)
MARGIN = 6  # px around a chart's parts


def colours_of(values: np.ndarray, cmap: ColourTable) -> np.ndarray:
    """(...) values in [0, 1] (NaN allowed) -> (..., 3) uint8 colours of the scale ``cmap``; NaN grey."""
    values = np.asarray(values, dtype=float)
    rgb = scale_colours(cmap, np.nan_to_num(values))
    rgb[np.isnan(values)] = NAN_GREY
    return rgb


def _vertical(text: str, size: int) -> Image.Image:
    """``text`` written bottom to top, on white."""
    typeface = font(size)
    height = max(size + 4, int(typeface.getbbox(text or " ")[3]) + 2)  # room for descenders at any size
    picture = Image.new("RGB", (int(typeface.getlength(text)) + 2, height), "white")
    ImageDraw.Draw(picture).text((1, 1), text, fill=INK, font=typeface)
    return picture.transpose(Image.Transpose.ROTATE_90)


def heatmap(
    matrix: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    cmap: ColourTable,
    cell: tuple[int, int],
    row_title: str,
    col_title: str,
    annotate: bool,
    size: int = LABEL_PX,
) -> Image.Image:
    """An (R, C) matrix of shares as coloured (width, height) ``cell``s, rows named on the left and
    columns below (written upwards); each cell's value written in it where ``annotate``; text in ``size`` px
    type (names smaller where a cell is). Cell rows start at the top edge, so charts with the same
    row pitch line up beside it."""
    rows, cols = matrix.shape
    width, height = cell
    label_px = min(size, max(height - 2, 7))
    typeface = font(label_px)
    row_labels = [fit_text(str(n), typeface, 110 * size / LABEL_PX) for n in row_names]
    col_font = font(min(size, max(width - 2, 7)))
    col_labels = [_vertical(fit_text(str(n), col_font, 90 * size / LABEL_PX), label_px) for n in col_names]
    left = size + 10 + int(max(typeface.getlength(n) for n in row_labels)) + MARGIN
    below = max(label.height for label in col_labels) + size + 12
    title_font = font(size + 1)
    half_title = title_font.getlength(col_title) / 2
    middle = max(left + cols * width / 2, half_title + 2)  # under the cells, or as near as the title fits
    picture = Image.new(
        "RGB", (max(left + cols * width, math.ceil(middle + half_title)) + MARGIN, rows * height + below), "white"
    )
    cells = colours_of(matrix, cmap).repeat(height, axis=0).repeat(width, axis=1)
    picture.paste(Image.fromarray(cells), (left, 0))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((left - 1, 0, left + cols * width, rows * height), outline=INK)
    for r, name in enumerate(row_labels):
        draw.text((left - MARGIN, r * height + height / 2), name, fill=INK, font=typeface, anchor="rm")
    step = max(1, -(-max(label.width for label in col_labels) // width))  # skip labels that would overlap
    for c in range(0, cols, step):
        label = col_labels[c]
        picture.paste(label, (left + c * width + (width - label.width) // 2, rows * height + 3))
    if annotate:
        value_font = font(max(7, min(10, width // 4)))
        luminance = colours_of(matrix, cmap) @ np.array([0.299, 0.587, 0.114]) / 255
        for (r, c), value in np.ndenumerate(matrix):
            if np.isfinite(value) and value >= 0.005:
                ink = "white" if luminance[r, c] < 0.5 else "black"
                xy = (left + c * width + width / 2, r * height + height / 2)
                draw.text(xy, f"{value:.2f}", fill=ink, font=value_font, anchor="mm")
    draw.text((middle, picture.height - 2), col_title, fill=INK, font=title_font, anchor="md")
    title = _vertical(row_title, size + 1)
    picture.paste(title, (2, max(0, (rows * height - title.height) // 2)))
    return picture


def colour_bar(cmap: ColourTable, height: int, label: str, size: int = LABEL_PX) -> Image.Image:
    """A vertical bar of ``cmap`` from 0 (bottom) to 1 (top), ``height`` px, ticked at 0, 0.5 and 1
    (``size`` px type)."""
    bar_width, typeface = 14, font(size)
    shades = colours_of(np.linspace(1, 0, height)[:, None], cmap).repeat(bar_width, axis=1)
    picture = Image.new("RGB", (bar_width + 2 * size + 2 * MARGIN, height + size), "white")
    top = size // 2
    picture.paste(Image.fromarray(shades), (MARGIN, top))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((MARGIN - 1, top - 1, MARGIN + bar_width, top + height), outline=INK)
    for value in (0.0, 0.5, 1.0):
        y = top + (height - 1) * (1 - value)
        draw.line((MARGIN + bar_width, y, MARGIN + bar_width + 3, y), fill=INK)
        draw.text((MARGIN + bar_width + 5, y), f"{value:g}", fill=INK, font=typeface, anchor="lm")
    title = _vertical(label, size)
    canvas = Image.new("RGB", (picture.width + title.width + 2, max(picture.height, title.height)), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(title, (picture.width, max(0, (height - title.height) // 2)))  # a long label makes it taller
    return canvas


def bar_chart(
    values: Sequence[float] | np.ndarray,
    names: Sequence[str],
    colours: np.ndarray,
    pitch: int,
    xlabel: str,
    size: int = LABEL_PX,
) -> Image.Image:
    """Horizontal bars from 0 to 1, one ``pitch`` px row per value (the first on top), each named on
    the left and, where there is room, its value at its end; ``colours`` (R, 3) uint8; text in
    ``size`` px type (names smaller where a row is)."""
    label_px = min(size, max(pitch - 2, 7))
    typeface, span = font(label_px), 220
    labels = [fit_text(str(n), typeface, 110 * size / LABEL_PX) for n in names]
    left = int(max(typeface.getlength(n) for n in labels)) + 2 * MARGIN
    left = max(left, int(font(size + 1).getlength(xlabel) - span) // 2 + MARGIN)  # room for the axis label
    height = len(values) * pitch
    picture = Image.new("RGB", (left + span + 4 * size, height + 2 * size + 14), "white")
    draw = ImageDraw.Draw(picture)
    for x in (0.25, 0.5, 0.75, 1.0):
        draw.line((left + x * span, 0, left + x * span, height), fill=(230, 230, 230))
    for r, (value, label) in enumerate(zip(values, labels, strict=True)):
        middle = r * pitch + pitch / 2
        draw.text((left - MARGIN, middle), label, fill=INK, font=typeface, anchor="rm")
        if not np.isfinite(value):
            continue
        thickness = max(1, int(pitch * 0.35))
        end = left + float(np.clip(value, 0, 1)) * span
        draw.rectangle((left, middle - thickness, end, middle + thickness), fill=tuple(int(v) for v in colours[r]))
        if pitch >= 14:
            draw.text((end + 3, middle), f"{value:.2f}", fill=INK, font=font(size - 1), anchor="lm")
    draw.line((left, 0, left, height), fill=INK)
    draw.line((left, height, left + span, height), fill=INK)
    for x in (0.0, 0.5, 1.0):
        draw.line((left + x * span, height, left + x * span, height + 3), fill=INK)
        draw.text((left + x * span, height + 4), f"{x:g}", fill=INK, font=font(size), anchor="mt")
    draw.text((left + span / 2, picture.height - 2), xlabel, fill=INK, font=font(size + 1), anchor="md")
    return picture


def headed(picture: Image.Image, heading: str, size: int = HEADING_PX) -> Image.Image:
    """``picture`` under a centred ``heading`` in ``size`` px type."""
    typeface = font(size)
    width = max(picture.width, int(typeface.getlength(heading)) + 8)  # a heading is never cut short
    canvas = Image.new("RGB", (width, picture.height + size + 10), "white")
    ImageDraw.Draw(canvas).text((width / 2, 3), heading, fill=INK, font=typeface, anchor="mt")
    canvas.paste(picture, ((width - picture.width) // 2, size + 10))
    return canvas


def side_by_side(pictures: Sequence[Image.Image], gap: int = 24) -> np.ndarray:
    """Pictures in a row, top-aligned, as one (H, W, 3) uint8 image."""
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return np.asarray(canvas)
