"""Chart parts drawn with matplotlib on axes placed by the caller: a heatmap of shares, its colour bar,
horizontal bars of shares, and the key of shortened class names.

Values are shares in [0, 1]; NaN cells are grey. Every text is :data:`~lightning_featviz.render.style.TEXT_PT`
and upright; where names would overlap, only every n-th is written (the names of a long axis), and where a
cell is too small for its value, no value is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_featviz.render.style import INK, NAN_GREY, PAD, TEXT_PT, fitted, line_px, text_size

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

#: px a name on a chart's axis is cut to, at most.
NAME_PX = 150


def every(pitch_px: float, label_px: float) -> int:
    """Write every n-th label along an axis where labels ``label_px`` long sit ``pitch_px`` apart: this n."""
    return max(1, math.ceil((label_px + 2) / max(pitch_px, 1e-9)))


def names_width(names: Sequence[str]) -> float:
    """px of the widest of ``names`` as an axis writes them (cut to :data:`NAME_PX`)."""
    return max((text_size(fitted(str(n), NAME_PX, middle=True))[0] for n in names), default=0.0)


def name_rows(ax: Axes, names: Sequence[str], pitch_px: float) -> None:
    """Name the rows 0, 1, ... of ``ax`` (top to bottom), every n-th where they are closer than a line."""
    step = every(pitch_px, line_px() - 2)
    ticks = list(range(0, len(names), step))
    ax.set_yticks(ticks, [fitted(str(names[t]), NAME_PX, middle=True) for t in ticks], fontsize=TEXT_PT)


def upwards(names: Sequence[str], pitch_px: float) -> bool:
    """Whether columns ``pitch_px`` apart are named upwards: where their names, all longer than one
    character, would touch written upright, and a line of text fits between two columns."""
    widest = max((text_size(fitted(str(n), NAME_PX, middle=True))[0] for n in names), default=0.0)
    single = all(len(str(n)) <= 1 for n in names)
    return not single and widest + 4 > pitch_px and pitch_px >= line_px()


def columns_px(names: Sequence[str], pitch_px: float) -> float:
    """px below an axes that :func:`name_columns` takes for ``names`` (without the tick)."""
    return names_width(names) if upwards(names, pitch_px) else text_size("lp")[1]


def name_columns(ax: Axes, names: Sequence[str], pitch_px: float, turn: bool = True) -> None:
    """Name the columns 0, 1, ... of ``ax``: upright, or (``turn``) upwards where names would touch
    (:func:`upwards`), and only every n-th where neither fits."""
    labels = [fitted(str(n), NAME_PX, middle=True) for n in names]
    if turn and upwards(names, pitch_px):
        ax.set_xticks(range(len(names)), labels, fontsize=TEXT_PT, rotation=90)
        return
    step = every(pitch_px, max((text_size(n)[0] for n in labels), default=0.0) + 4)
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [labels[t] for t in ticks], fontsize=TEXT_PT)


def heatmap(
    ax: Axes,
    matrix: np.ndarray,
    cmap: str,
    cell_px: tuple[float, float],
    annotate: bool = True,
) -> AxesImage:
    """Draw the (R, C) shares of ``matrix`` as cells of ``cmap`` (NaN grey) on ``ax``, row 0 on top; each
    cell's value written in it where ``annotate`` and the (width, height) ``cell_px`` hold it. The image, for
    a colour bar."""
    from matplotlib import colormaps

    scale = colormaps[cmap].with_extremes(bad=NAN_GREY)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=scale, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.tick_params(labelsize=TEXT_PT, length=3, colors=INK)
    width, height = cell_px
    if annotate and width >= text_size("0.00")[0] + 4 and height >= text_size("0")[1]:
        rgba = scale(np.nan_to_num(matrix))
        luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        for (r, c), value in np.ndenumerate(matrix):
            if np.isfinite(value) and value >= 0.005:
                ink = "white" if luminance[r, c] < 0.5 else "black"
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", color=ink, fontsize=TEXT_PT)
    return image


def colour_bar(fig: Figure, image: AxesImage, cax: Axes, label: str) -> None:
    """A colour bar of ``image`` in ``cax`` (a narrow, tall axes), ticked every 0.2 and labelled upwards."""
    bar = fig.colorbar(image, cax=cax, ticks=np.linspace(0, 1, 6))
    bar.ax.set_yticklabels(["0", "0.2", "0.4", "0.6", "0.8", "1"])
    bar.ax.tick_params(labelsize=TEXT_PT, length=3, colors=INK)
    bar.set_label(fitted(label, cax.bbox.height), fontsize=TEXT_PT, color=INK)
    bar.outline.set_linewidth(0.6)


def colour_bar_px(label: str) -> float:
    """px right of a colour bar's axes that its ticks and label take."""
    return 3 + 4 + text_size("0.8")[0] + 4 + text_size(label)[1] + PAD


def bars(ax: Axes, values: np.ndarray, colours: np.ndarray, xlabel: str, pitch_px: float, span_px: float) -> None:
    """Horizontal bars of the (R,) shares ``values`` from 0 to 1 on ``ax``, row 0 on top, in ``colours``
    (R, 3 or 4); each value written at its bar's end (inside a long bar, beside a short one, always within
    x = 1) where a row is a line high. NaN rows are left empty."""
    rows = np.arange(len(values))
    ax.barh(rows, np.nan_to_num(values), height=0.72, color=colours, edgecolor="none")
    ax.set_xlim(0, 1)
    ax.set_ylim(len(values) - 0.5, -0.5)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
    ax.tick_params(labelsize=TEXT_PT, length=3, colors=INK)
    ax.set_xlabel(xlabel, fontsize=TEXT_PT, color=INK)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if pitch_px < text_size("0")[1]:
        return
    room = (text_size("0.00")[0] + 6) / span_px  # a value's width, as a share of the axis
    for row, value in zip(rows, values, strict=True):
        if not np.isfinite(value):
            continue
        inside = value > room + 0.02
        x, ha = (value - 0.01, "right") if inside else (value + 0.01, "left")
        luminance = float(np.asarray(colours[row])[:3] @ np.array([0.299, 0.587, 0.114]))
        ink = ("white" if luminance < 0.55 else "black") if inside else INK
        ax.text(x, float(row), f"{value:.2f}", ha=ha, va="center", color=ink, fontsize=TEXT_PT)


def key(fig: Figure, lines: Sequence[str], top_px: float) -> None:
    """Write ``lines`` (the key of shortened names) from ``top_px`` px below the figure's top, one a line."""
    height, width = fig.bbox.height, fig.bbox.width
    for n, line in enumerate(lines):
        y = 1 - (top_px + n * line_px()) / height
        fig.text(PAD / width, y, fitted(line, width - 2 * PAD), ha="left", va="top", fontsize=TEXT_PT, color=INK)


def key_px(lines: Sequence[str]) -> float:
    """px :func:`key` takes for ``lines`` (0 for none)."""
    return len(lines) * line_px() + PAD if lines else 0.0
