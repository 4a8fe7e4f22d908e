"""Purity as pictures: the neighbourhood confusion matrix, purity per class and purity by depth, drawn with
:mod:`lightning_featviz.render.chart`'s parts and kept legible at TensorBoard's card width."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lightning_featviz.render.canvas import (
    class_colours,
    rgb,
    short_names,
    titled,
    type_px,
    with_names_key,
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
