"""The dataset cartography figure (Swayamdipta et al., EMNLP 2020), drawn with matplotlib: each tracked sample at
its confidence (the mean probability of its given label over the analysed epochs) against its variability (that
probability's standard deviation over them), one panel per layer in layer order, each with the samples in that
layer's wrong cluster in red over the rest in grey: the same points in every panel, so the panels show which
samples each layer puts among another class, from the input (by colour and shape) to the last layer (by meaning).

:func:`cartography_figure` returns the :class:`~matplotlib.figure.Figure`
(:data:`~lightning_featviz.render.style.WIDTH_PX` wide, axes placed in pixels); :func:`cartography_image` draws
it into an (H, W, 3) uint8 array and frees it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

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
    wrapped,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The colours of the samples flagged and of the rest.
FLAGGED, OTHERS = "#d62728", "#9a9a9a"
#: Panels to a row at most, the px between them, and the largest panel's side.
COLUMNS, GAP, MAX_SIDE = 3, 16, 420.0
#: Read below the panels.
HINTS = (
    "red: in the layer's wrong cluster. Low confidence, low variability: against its label every epoch "
    "(the likeliest label errors); high variability: ambiguous, or learnt late."
)


def cartography_figure(
    confidence: np.ndarray, variability: np.ndarray, flagged: Mapping[str, np.ndarray], title_text: str
) -> Figure:
    """The (S,) ``confidence`` (x, in [0, 1]) against the (S,) ``variability`` (y) of S samples (NaN: not seen,
    left out), one panel per layer of ``flagged`` (layer -> (S,) bool, in the order given), its flagged samples
    drawn last, in red, and counted in the panel's title."""
    seen = np.isfinite(confidence) & np.isfinite(variability)
    layers = list(flagged) or [""]
    cols = math.ceil(len(layers) / math.ceil(len(layers) / min(COLUMNS, len(layers))))
    rows = math.ceil(len(layers) / cols)
    text_height = text_size("lp")[1]
    tick_width = text_size("0.00")[0]
    left = 2 * PAD + text_height + PAD + tick_width  # the y label, then the ticks
    side = min(MAX_SIDE, (WIDTH_PX - left - PAD - (cols - 1) * (GAP + tick_width)) / cols)
    head = title_px(title_text)
    panel_title = 2 * line_px() + PAD  # the layer, then its count in red
    cell = panel_title + side + PAD + text_height  # the layer, the panel, its x ticks
    grid = rows * cell + (rows - 1) * GAP
    x_label, hints = PAD + line_px(), 2 * line_px() + PAD
    fig = figure(head + grid + x_label + hints + PAD)
    width = cols * side + (cols - 1) * (GAP + tick_width)
    left += (WIDTH_PX - PAD - left - width) / 2  # the panels centred
    title(fig, title_text)
    size = area_pt2(point_px(int(seen.sum()), side))
    top_y = max(0.5, float(np.nanmax(variability[seen])) if seen.any() else 0.5) + 0.01
    for n, layer in enumerate(layers):
        marked = flagged.get(layer, np.zeros(len(confidence), dtype=bool))
        x = left + (n % cols) * (side + GAP + tick_width)
        y = head + (n // cols) * (cell + GAP)
        ax = axes_at(fig, x, y + panel_title, side, side)
        for mask, colour in ((seen & ~marked, OTHERS), (seen & marked, FLAGGED)):
            ax.scatter(confidence[mask], variability[mask], s=size, c=colour, linewidths=0)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.01, top_y)
        ax.set_xticks(np.linspace(0.0, 1.0, 3 if cols > 1 else 6))
        ax.set_yticks(np.arange(0.0, top_y, 0.1))
        ax.tick_params(labelsize=TEXT_PT, colors=INK)
        heading = (
            f"{fitted(layer, side, middle=True)}\n{int((seen & marked).sum())} in its wrong cluster" if layer else ""
        )
        centre, top = (x + side / 2) / WIDTH_PX, 1 - y / fig.bbox.height
        fig.text(centre, top, heading, ha="center", va="top", fontsize=TEXT_PT, color=INK)
    height = fig.bbox.height
    y_label = (left - tick_width - 2 * PAD - text_height) / WIDTH_PX, 1 - (head + grid / 2) / height
    fig.text(
        *y_label,
        "variability: its std over the epochs",
        rotation=90,
        ha="left",
        va="center",
        fontsize=TEXT_PT,
        color=INK,
    )
    x_label_at = (left + width / 2) / WIDTH_PX, 1 - (head + grid + PAD) / height
    fig.text(
        *x_label_at,
        "confidence: mean probability of the given label",
        ha="center",
        va="top",
        fontsize=TEXT_PT,
        color=INK,
    )
    lines = wrapped(HINTS, WIDTH_PX - 2 * PAD, TEXT_PT)
    top = 1 - (head + grid + x_label + PAD) / height
    fig.text(PAD / WIDTH_PX, top, lines, ha="left", va="top", fontsize=TEXT_PT, color=INK)
    return fig


def cartography_image(
    confidence: np.ndarray, variability: np.ndarray, flagged: Mapping[str, np.ndarray], title_text: str
) -> np.ndarray:
    """:func:`cartography_figure` as an (H, W, 3) uint8 image."""
    return pixels(cartography_figure(confidence, variability, flagged, title_text))
