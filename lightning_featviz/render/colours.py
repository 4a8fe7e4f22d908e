"""The class colours: the same in every figure and in the FEATVIZ tab.

Class ``c`` is :data:`PALETTE`'s ``c``-th colour (matplotlib's ``tab10``, then the light halves of ``tab20``),
and beyond those twenty ``hsl(c · 137.5° mod 360°, 65 %, 50 %)``: the rule of ``classColour`` in
``dashboard/static/index.js``, which ``tests/test_plots.py`` reads to check that the two agree.
"""

from __future__ import annotations

import colorsys

import numpy as np

#: The first twenty class colours, as the tab's ``PALETTE``.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def class_colour(c: int) -> tuple[float, float, float]:
    """The RGB colour (in [0, 1]) of class id ``c``."""
    if c < len(PALETTE):
        code = PALETTE[c]
        return (int(code[1:3], 16) / 255, int(code[3:5], 16) / 255, int(code[5:7], 16) / 255)
    return colorsys.hls_to_rgb((c * 137.5) % 360 / 360, 0.5, 0.65)


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA colours in [0, 1], one per class id."""
    return np.array([(*class_colour(c), 1.0) for c in range(num_classes)])
