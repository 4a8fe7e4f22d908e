"""The dataset cartography figure (Swayamdipta et al., EMNLP 2020), drawn with matplotlib: each tracked sample at
its confidence (the mean probability of its given label over the analysed epochs) against its variability (that
probability's standard deviation over them), flagged samples (those in the wrong cluster) in red over the rest
in grey.

:func:`cartography_figure` returns the :class:`~matplotlib.figure.Figure`
(:data:`~lightning_featviz.render.style.WIDTH_PX` wide, axes placed in pixels); :func:`cartography_image` draws
it into an (H, W, 3) uint8 array and frees it.
"""

from __future__ import annotations

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
    line_px,
    pixels,
    point_px,
    text_size,
    title,
    title_px,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The colours of the samples flagged and of the rest.
FLAGGED, OTHERS = "#d62728", "#9a9a9a"


def cartography_figure(confidence: np.ndarray, variability: np.ndarray, flagged: np.ndarray, title_text: str) -> Figure:
    """The (S,) ``confidence`` (x, in [0, 1]) against the (S,) ``variability`` (y) of S samples (NaN: not seen,
    left out), the (S,) bool ``flagged`` ones drawn last, in red, and counted in the legend."""
    seen = np.isfinite(confidence) & np.isfinite(variability)
    head = title_px(title_text)
    height = text_size("lp")[1]
    left, below = 3 * PAD + 2 * height + text_size("0.00")[0], 3 * PAD + 2 * height
    side = 420.0
    legend = 2 * line_px() + 2 * PAD
    fig = figure(head + side + below + PAD)
    title(fig, title_text)
    ax = axes_at(fig, left, head, side, side)
    size = area_pt2(point_px(int(seen.sum()), side))
    for mask, colour, name in ((seen & ~flagged, OTHERS, "the rest"), (seen & flagged, FLAGGED, "wrong cluster")):
        ax.scatter(
            confidence[mask], variability[mask], s=size, c=colour, linewidths=0, label=f"{name} ({int(mask.sum())})"
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.01, max(0.5, float(np.nanmax(variability[seen])) if seen.any() else 0.5) + 0.01)
    ax.set_xlabel("confidence: mean probability of the given label", fontsize=TEXT_PT, color=INK)
    ax.set_ylabel("variability: its std over the epochs", fontsize=TEXT_PT, color=INK)
    ax.tick_params(labelsize=TEXT_PT, colors=INK)
    notes = fig.add_axes((0, 0, 1, 1), frameon=False)
    notes.set_axis_off()
    x = (left + side + 2 * PAD) / WIDTH_PX
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(x, 1 - head / fig.bbox.height), fontsize=TEXT_PT)
    hints = "low confidence, low\nvariability: against its\nlabel every epoch"
    hints += "\n\nhigh variability:\nambiguous, or learnt late"
    top = 1 - (head + legend + 3 * PAD) / fig.bbox.height
    notes.text(x, top, hints, ha="left", va="top", fontsize=TEXT_PT, color=INK)
    return fig


def cartography_image(
    confidence: np.ndarray, variability: np.ndarray, flagged: np.ndarray, title_text: str
) -> np.ndarray:
    """:func:`cartography_figure` as an (H, W, 3) uint8 image."""
    return pixels(cartography_figure(confidence, variability, flagged, title_text))
