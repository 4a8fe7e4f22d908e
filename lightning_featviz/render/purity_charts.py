"""Purity as charts drawn with matplotlib: the neighbourhood confusion matrix beside per-class purity, purity of
each class, and purity by depth (this epoch, and every layer × epoch).

Each ``*_figure`` returns the :class:`~matplotlib.figure.Figure` (:data:`~lightning_featviz.render.style.WIDTH_PX`
wide, at most twice as wide as tall, axes placed in pixels); each ``*_image`` draws it into an (H, W, 3) uint8
array and frees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_featviz.render.chart import (
    bars,
    colour_bar,
    colour_bar_px,
    columns_px,
    heatmap,
    key,
    key_px,
    name_columns,
    name_rows,
    names_width,
)
from lightning_featviz.render.colours import class_colours
from lightning_featviz.render.names import key_lines, short_names
from lightning_featviz.render.style import (
    INK,
    PAD,
    TEXT_PT,
    WIDTH_PX,
    axes_at,
    figure,
    line_px,
    pixels,
    text_size,
    title,
    title_px,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: px: the gap between a chart's axes, the width of a colour bar, the width of the per-class purity bars.
GAP, BAR_WIDTH, SIDE_BARS = 16, 14, 150
#: px a tick label sits from its axes (tick length and pad), and an axis label from its tick labels.
TICK, LABEL_GAP = 10, 6


def _below(names: float | None = None, xlabel: bool = True) -> float:
    """px below an axes for its tick labels (``names`` px of them: one upright line by default) and
    (``xlabel``) its axis label."""
    height = text_size("lp")[1]
    return TICK + (height if names is None else names) + (LABEL_GAP + height if xlabel else 0) + PAD


def _left(names: Sequence[str], ylabel: bool) -> float:
    """px left of an axes for its row names and (``ylabel``) its axis label, written upwards."""
    return PAD + (text_size("lp")[1] + LABEL_GAP if ylabel else 0) + names_width(names) + TICK


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title_text: str) -> Figure:
    """A (C, C) neighbourhood confusion matrix (rows: true class, columns: neighbours' classes, rows sum to 1)
    with its colour bar, beside bars of its diagonal, the per-class purity, rows lined up."""
    c, full = len(class_names), [str(n) for n in class_names]
    names = short_names(full)
    lines = key_lines(full, names)
    left = _left(names, ylabel=True)
    scale_label = "share of neighbours"
    right = GAP + BAR_WIDTH + colour_bar_px(scale_label) + GAP + SIDE_BARS + 2 * PAD
    side = float(np.clip(WIDTH_PX - left - right, 160, 440))
    head = title_px(title_text) + line_px() + 4
    below = max(_below(columns_px(names, side / max(c, 1))), _below())
    height = head + side + below + key_px(lines)
    fig = figure(height)
    title(fig, title_text)
    cell = side / max(c, 1)
    ax = axes_at(fig, left, head, side, side)
    image = heatmap(ax, confusion, "Blues", (cell, cell), annotate=True)
    name_rows(ax, names, cell)
    name_columns(ax, names, cell)
    ax.set_ylabel("true class", fontsize=TEXT_PT, color=INK, labelpad=LABEL_GAP)
    ax.set_xlabel("class of the neighbours", fontsize=TEXT_PT, color=INK, labelpad=LABEL_GAP)
    cax = axes_at(fig, left + side + GAP, head, BAR_WIDTH, side)
    colour_bar(fig, image, cax, scale_label)
    x = left + side + GAP + BAR_WIDTH + colour_bar_px(scale_label) + GAP
    bar_ax = axes_at(fig, x, head, WIDTH_PX - x - 2 * PAD, side)
    bars(bar_ax, np.diag(confusion), class_colours(c), "same-class share", cell, WIDTH_PX - x - 2 * PAD)
    bar_ax.set_yticks([])
    bar_ax.set_title("per-class purity", fontsize=TEXT_PT, color=INK, pad=4)
    key(fig, lines, head + side + below)
    return fig


def confusion_image(confusion: np.ndarray, class_names: Sequence[str], title_text: str) -> np.ndarray:
    """:func:`confusion_figure` as an (H, W, 3) uint8 image."""
    return pixels(confusion_figure(confusion, class_names, title_text))


def class_purity_figure(purity: np.ndarray, class_names: Sequence[str], title_text: str, shown: int = 30) -> Figure:
    """Bars of the (C,) per-class purity (NaN: no sample of the class): every class when C <= ``shown``,
    else the ``shown // 2`` lowest and the ``shown // 2`` highest, lowest first."""
    present = np.flatnonzero(np.isfinite(purity))
    order = present[np.argsort(purity[present], kind="stable")]
    if len(order) > shown:
        order = np.concatenate([order[: shown // 2], order[-(shown // 2) :]])
        heading = f"the {shown // 2} lowest and {shown // 2} highest of {len(present)} classes"
    else:
        order = np.arange(len(purity))
        heading = f"all {len(purity)} classes"
    full = [str(n) for n in class_names]
    short = short_names(full)
    lines = key_lines(full, short, order.tolist())
    names = [short[i] for i in order]
    left = _left(names, ylabel=False)
    head = title_px(title_text) + line_px() + 4
    fixed = head + _below() + key_px(lines)
    pitch = max(20.0, (WIDTH_PX / 2 - fixed) / max(len(order), 1))
    fig = figure(fixed + pitch * len(order))
    title(fig, title_text)
    span = WIDTH_PX - left - 3 * PAD
    ax = axes_at(fig, left, head, span, pitch * len(order))
    bars(ax, purity[order], class_colours(len(full))[order], "purity (same-class share of neighbours)", pitch, span)
    name_rows(ax, names, pitch)
    ax.set_title(heading, fontsize=TEXT_PT, color=INK, pad=4)
    key(fig, lines, head + pitch * len(order) + _below())
    return fig


def class_purity_image(purity: np.ndarray, class_names: Sequence[str], title_text: str, shown: int = 30) -> np.ndarray:
    """:func:`class_purity_figure` as an (H, W, 3) uint8 image."""
    return pixels(class_purity_figure(purity, class_names, title_text, shown))


def purity_depth_figure(
    layers: Sequence[str], purity: Sequence[float], history: np.ndarray, epochs: Sequence[int], k: int, epoch: int
) -> Figure:
    """Purity@k of each layer this epoch, in network order, beside the (L, E) layer × epoch ``history``
    (NaN: not measured) as a heatmap with its colour bar; rows lined up, named once."""
    from matplotlib import colormaps

    values = np.asarray(purity, dtype=float)
    title_text = f"Epoch {epoch}: kNN purity@{k} by depth"
    left = _left(layers, ylabel=False)
    head = title_px(title_text) + line_px() + 4
    fixed = head + _below()
    pitch = max(24.0, (WIDTH_PX / 2 - fixed) / max(len(layers), 1))
    rows = pitch * len(layers)
    fig = figure(fixed + rows)
    title(fig, title_text)
    bar_span = 190.0
    ax = axes_at(fig, left, head, bar_span, rows)
    bars(ax, values, colormaps["viridis"](np.nan_to_num(values)), f"purity@{k}", pitch, bar_span)
    name_rows(ax, layers, pitch)
    ax.set_title("this epoch", fontsize=TEXT_PT, color=INK, pad=4)
    scale_label = f"purity@{k}"
    x = left + bar_span + 2 * GAP
    span = WIDTH_PX - x - GAP - BAR_WIDTH - colour_bar_px(scale_label)
    across = axes_at(fig, x, head, span, rows)
    cell = span / max(len(epochs), 1)
    image = heatmap(across, history, "viridis", (cell, pitch), annotate=True)
    across.set_yticks([])
    name_columns(across, [str(e) for e in epochs], cell, turn=False)
    across.set_xlabel("epoch", fontsize=TEXT_PT, color=INK, labelpad=LABEL_GAP)
    across.set_title("every analysed epoch", fontsize=TEXT_PT, color=INK, pad=4)
    colour_bar(fig, image, axes_at(fig, x + span + GAP, head, BAR_WIDTH, rows), scale_label)
    return fig


def purity_depth_image(
    layers: Sequence[str], purity: Sequence[float], history: np.ndarray, epochs: Sequence[int], k: int, epoch: int
) -> np.ndarray:
    """:func:`purity_depth_figure` as an (H, W, 3) uint8 image."""
    return pixels(purity_depth_figure(layers, purity, history, epochs, k, epoch))
