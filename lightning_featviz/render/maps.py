"""t-SNE maps drawn with Pillow: points coloured by class, one legend of class names, 3-D maps
seen from several angles inside a shaded box.

Points are drawn at twice the size and the picture halved (a box filter), which smooths their
edges; a 3-D map is projected orthographically and drawn back to front, farther points paler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lightning_featviz.render.canvas import (
    MAX_WIDTH,
    class_colours,
    fit_text,
    font,
    rgb,
    short_names,
    titled,
    type_px,
    with_names_key,
    wrap_text,
)

#: (elevation, azimuth) of the three views of a 3-D map: from the front, from the side, from above.
VIEW_ANGLES = ((20.0, -60.0), (20.0, 30.0), (85.0, -90.0))
SIDE_2D, SIDE_3D = 400, 330  # px of a panel's drawing area
GAP = 16  # px between panels
TITLE_PX, LEGEND_PX = 13, 12  # font sizes
LEGEND_ROWS = 25  # legend entries per column
SUPER = 2  # supersampling factor of the points
PANE, PANE_EDGE = (242, 242, 242), (190, 190, 190)  # a 3-D box's back walls


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


def _view(elevation: float, azimuth: float) -> np.ndarray:
    """(3, 3) rows: screen right, screen up, towards the viewer (matplotlib's angles, in degrees)."""
    e, a = np.radians(elevation), np.radians(azimuth)
    towards = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    return np.stack([right, np.cross(towards, right), towards])


def _normalised(points: np.ndarray) -> np.ndarray:
    """(N, c) points centred and scaled into [-1, 1]^c, the same scale on every axis."""
    low, high = points.min(axis=0), points.max(axis=0)
    half = float((high - low).max()) / 2 or 1.0
    return (points - (low + high) / 2) / half


def _panel(panel: MapPanel, colours: np.ndarray, diameter: float, angles: tuple[float, float] | None) -> Image.Image:
    """One panel's drawing area, drawn at :data:`SUPER` times its size; ``angles`` for a 3-D panel."""
    side = (SIDE_3D if angles else SIDE_2D) * SUPER
    picture = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(picture)
    points = _normalised(np.asarray(panel.points, dtype=float))
    if angles is None:  # 2-D: a frame, y up
        xy, paleness = points * [1, -1], np.full(len(points), 0.15)
        scale = side / 2 * 0.94
        draw.rectangle((0, 0, side - 1, side - 1), outline=(0, 0, 0), width=SUPER)
        order = np.arange(len(points))
    else:  # 3-D: the box's three back walls, then the points back to front
        view = _view(*angles)
        scale = side / 2 * 0.96 / np.sqrt(3)
        for axis in range(3):
            wall = -1.0 if view[2, axis] >= 0 else 1.0
            corners = np.zeros((4, 3))
            corners[:, axis] = wall
            corners[:, [a for a in range(3) if a != axis]] = [(-1, -1), (-1, 1), (1, 1), (1, -1)]
            on_screen = corners @ view[:2].T * [1, -1] * scale + side / 2
            draw.polygon([tuple(c) for c in on_screen], fill=PANE, outline=PANE_EDGE, width=SUPER)
        projected = points @ view.T
        xy, depth = projected[:, :2] * [1, -1], projected[:, 2]
        paleness = 0.1 + 0.55 * (depth.max() - depth) / (np.ptp(depth) or 1.0)  # farther: paler
        order = np.argsort(depth)
    centres = xy * scale + side / 2
    fills = rgb(colours[panel.labels], paleness)
    radius = diameter * SUPER / 2
    ringed = panel.ringed if panel.ringed is not None else np.zeros(len(points), bool)
    for i in order:
        x, y = centres[i]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(fills[i]))
    ring = radius * 2.5
    for x, y in centres[ringed]:
        draw.ellipse((x - ring, y - ring, x + ring, y + ring), outline=(0, 0, 0), width=SUPER)
    return picture.reduce(SUPER)


def _legend(
    names: Sequence[str], shown: list[int], colours: np.ndarray, flagged: bool, size: int = LEGEND_PX
) -> Image.Image:
    """Class colours and names (then the flagged ring), :data:`LEGEND_ROWS` to a column, in ``size`` px type."""
    typeface, pitch, grow = font(size), size + 8, size / LEGEND_PX
    entries = [(fit_text(str(names[c]), typeface, 130 * grow), c) for c in shown] + (
        [("flagged", -1)] if flagged else []
    )
    columns = [entries[i : i + LEGEND_ROWS] for i in range(0, len(entries), LEGEND_ROWS)]
    dot = round(5 * grow)
    widths = [2 * dot + 14 + int(max(typeface.getlength(text) for text, _ in column)) + 12 for column in columns]
    picture = Image.new("RGB", (sum(widths) + 8, pitch * len(columns[0]) + 8), "white")
    draw = ImageDraw.Draw(picture)
    x = 8
    for column, width in zip(columns, widths, strict=True):
        for row, (text, c) in enumerate(column):
            y = 4 + row * pitch + pitch / 2
            if c >= 0:
                draw.ellipse((x, y - dot, x + 2 * dot, y + dot), fill=tuple(rgb(colours[c])))
            else:
                draw.ellipse((x - 1, y - dot - 1, x + 2 * dot + 1, y + dot + 1), outline=(0, 0, 0), width=1)
            draw.text((x + 2 * dot + 8, y), text, fill=(0, 0, 0), font=typeface, anchor="lm")
        x += width
    return picture


def map_image(
    panels: Sequence[MapPanel],
    suptitle: str | None = None,
    columns: int = 4,
    angles: Sequence[tuple[float, float]] = VIEW_ANGLES,
) -> np.ndarray:
    """t-SNE maps as an (H, W, 3) uint8 image: points coloured by class, one legend of class names.

    2-D panels are laid out ``columns`` to a row; a 3-D panel takes a row of its own, seen from
    each of ``angles`` (elevation, azimuth), so its shape reads in a still image.
    """
    three_d = panels[0].points.shape[1] == 3
    views: list[tuple[float, float] | None] = list(angles) if three_d else [None]
    cells = [(panel, view) for panel in panels for view in views]
    cols = len(views) if three_d else min(len(panels), columns)
    rows = -(-len(cells) // cols)
    side = SIDE_3D if three_d else SIDE_2D
    shown = sorted({int(label) for panel in panels for label in np.unique(panel.labels)})
    names = short_names(panels[0].class_names)
    colours = class_colours(max(len(names), max(shown) + 1))
    diameter = float(np.clip(np.sqrt(6000 / max(len(panels[0].points), 1)), 2.5, 8))
    flagged = any(panel.ringed is not None and panel.ringed.any() for panel in panels)
    legend_px, wanted = LEGEND_PX, cols
    for _ in range(2):  # the legend's type grows with the picture's width, which the legend widens
        legend = _legend(names, shown, colours, flagged, legend_px)
        if not three_d:  # wrap into rows rather than grow wider than a screen
            cols = max(1, min(wanted, (MAX_WIDTH - legend.width) // (side + GAP)))
            rows = -(-len(cells) // cols)
        width = cols * side + (cols - 1) * GAP + GAP + legend.width
        if type_px(width, LEGEND_PX) <= legend_px:
            break
        legend_px = type_px(width, LEGEND_PX)
    title_px = type_px(width, TITLE_PX)
    angle = "elevation {:.0f}°, azimuth {:.0f}°".format
    titles = [
        wrap_text(panel.title if view is None or view == views[0] else angle(*view), font(title_px), side)
        for panel, view in cells
    ]
    title_height = max(len(lines) for lines in titles) * (title_px + 4) + 6  # a long title wraps onto 2 lines
    height = max(rows * (title_height + side) + (rows - 1) * GAP, legend.height)
    picture = Image.new("RGB", (width, height), "white")
    draw, typeface = ImageDraw.Draw(picture), font(title_px)
    for n, (panel, view) in enumerate(cells):
        x, y = (n % cols) * (side + GAP), (n // cols) * (title_height + side + GAP)
        for line, text in enumerate(titles[n]):
            draw.text((x + side / 2, y + 2 + line * (title_px + 4)), text, fill=(0, 0, 0), font=typeface, anchor="mt")
        picture.paste(_panel(panel, colours, diameter, view), (x, y + title_height))
    picture.paste(legend, (width - legend.width, (height - legend.height) // 2))
    return titled(with_names_key(np.asarray(picture), panels[0].class_names, names, shown), suptitle)
