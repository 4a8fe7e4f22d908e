"""Matplotlib figures sized for a TensorBoard image card: one width, one type scale, pixels out.

Every chart is a :class:`matplotlib.figure.Figure` on an Agg canvas (never pyplot, so no global state and
no window), :data:`WIDTH_PX` wide at :data:`DPI`, with its axes placed in pixels by the chart itself (no
``tight_layout``: placing them costs nothing, and it keeps every text inside the canvas by construction).
:func:`pixels` draws a figure into an (H, W, 3) uint8 array and frees it.

Matplotlib is imported inside the functions that draw: importing the package (the callback, the report's
modules) does not import it, and neither does an epoch that only captures and searches.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

#: px per inch of every figure.
DPI = 100
#: px: every chart's width. TensorBoard's card-width setting goes up to 735 px, where the chart is shown
#: at its own size; on a narrower card it is scaled down as a whole, type and all.
WIDTH_PX = 720
#: The type scale (points): every text of a chart (ticks, labels, legends, cell values) and its titles.
TEXT_PT, TITLE_PT = 10.0, 12.0
#: px between a chart's parts, and around it.
PAD = 8
#: The colour of text and lines, and of a cell with no value.
INK = "#222222"
NAN_GREY = "#e1e1e1"


def figure(height_px: float, width_px: float = WIDTH_PX) -> Figure:
    """A white figure of ``width_px`` × ``height_px`` px on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, round(height_px) / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def pixels(fig: Figure) -> np.ndarray:
    """``fig`` drawn, as an (H, W, 3) uint8 array; the figure is cleared (its artists freed) after."""
    fig.canvas.draw()
    image = np.array(fig.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
    fig.clear()
    return image


@lru_cache(maxsize=1)
def _renderer() -> RendererAgg:
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, DPI)


@lru_cache(maxsize=4096)
def text_size(text: str, points: float = TEXT_PT) -> tuple[float, float]:
    """(width, height) px of one line of ``text`` in ``points`` type at :data:`DPI`, as matplotlib draws it
    (the height of a line: ascent of "l" and descent of "p", as matplotlib lays lines out)."""
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=points)
    width, _, _ = _renderer().get_text_width_height_descent(text or " ", prop, ismath=False)
    _, height, _ = _renderer().get_text_width_height_descent("lp", prop, ismath=False)
    return float(width), float(height)


def line_px(points: float = TEXT_PT) -> float:
    """px between the baselines of two lines of ``points`` type (matplotlib's line spacing, 1.2)."""
    return text_size("lp", points)[1] * 1.2


def fitted(text: str, width_px: float, points: float = TEXT_PT, middle: bool = False) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width_px`` px: at its end, or (``middle``)
    in its middle, keeping its start and end (``encoder.lay…11.mlp``)."""
    if text_size(text, points)[0] <= width_px:
        return text
    head, tail = (text[: (len(text) + 1) // 2], text[(len(text) + 1) // 2 :]) if middle else (text, "")
    while head and text_size(f"{head}…{tail}", points)[0] > width_px:
        if middle and len(tail) >= len(head):
            tail = tail[1:]
        else:
            head = head[:-1]
    return f"{head}…{tail}"


def wrapped(text: str, width_px: float, points: float = TITLE_PT, max_lines: int = 2) -> str:
    """``text`` broken at spaces into lines no wider than ``width_px`` px (at most ``max_lines``, the last
    cut short), joined by newlines."""
    words, lines = text.split(" "), list[str]()
    while words and len(lines) < max_lines - 1:
        line = words.pop(0)
        while words and text_size(f"{line} {words[0]}", points)[0] <= width_px:
            line += f" {words.pop(0)}"
        lines.append(line)
    if words:
        lines.append(" ".join(words))
    return "\n".join(fitted(line, width_px, points) for line in lines)


def title(fig: Figure, text: str | None) -> float:
    """Write ``text`` centred at the top of ``fig`` (wrapped onto two lines where it is wider than the
    figure); the px it takes, 0 without a title."""
    if not text:
        return 0.0
    width, height = fig.bbox.width, fig.bbox.height
    lines = wrapped(text, width - 2 * PAD, TITLE_PT)
    fig.text(0.5, 1 - PAD / height, lines, ha="center", va="top", fontsize=TITLE_PT, color=INK)
    return PAD + lines.count("\n") * line_px(TITLE_PT) + text_size("lp", TITLE_PT)[1] + PAD


def title_px(text: str | None, width_px: float = WIDTH_PX) -> float:
    """The px :func:`title` takes for ``text`` in a figure ``width_px`` wide."""
    if not text:
        return 0.0
    lines = wrapped(text, width_px - 2 * PAD, TITLE_PT).count("\n")
    return PAD + lines * line_px(TITLE_PT) + text_size("lp", TITLE_PT)[1] + PAD


def axes_at(fig: Figure, left: float, top: float, width: float, height: float, projection: str | None = None) -> Any:
    """Axes (of ``projection``: "3d" for a 3-D one) at ``left``, ``top`` (px from the figure's top-left corner),
    ``width`` × ``height`` px."""
    w, h = fig.bbox.width, fig.bbox.height
    return fig.add_axes((left / w, 1 - (top + height) / h, width / w, height / h), projection=projection)


def point_px(points: int, side_px: float) -> float:
    """The diameter (px) of a scatter's points: ``points`` of them in a square ``side_px`` wide cover about an
    eighth of it (so clusters read as areas, and points as points), within 1.5 and 8 px."""
    return float(np.clip(0.4 * side_px / np.sqrt(max(points, 1)), 1.5, 8.0))


def area_pt2(diameter_px: float) -> float:
    """matplotlib's scatter size (points²) of a marker ``diameter_px`` px across."""
    return (diameter_px * 72 / DPI) ** 2
