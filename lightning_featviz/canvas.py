"""Drawing basics shared by the pictures drawn with Pillow: fonts, text that fits, class colours,
titles, and a matplotlib figure around a finished image.

Pillow draws an epoch's neighbour grids and t-SNE maps in milliseconds, where matplotlib takes
seconds (measured in benchmarks/fit_overhead.py); these pictures need no axes to read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

SUPTITLE_PX = 19  # font size of a picture's title


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's own font, so it is always there) at ``size`` px."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")), size)


def fit_text(text: str, typeface: ImageFont.FreeTypeFont, width: float) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width`` px."""
    if typeface.getlength(text) <= width:
        return text
    while text and typeface.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA colours in [0, 1], one per class id: tab10 / tab20 when they suffice, else a spread of turbo."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= 20:
        return colormaps["tab20"](np.arange(num_classes))
    return colormaps["turbo"](np.linspace(0.03, 0.97, num_classes))


def rgb(colours: np.ndarray, paleness: np.ndarray | float = 0.0) -> np.ndarray:
    """(..., 4) RGBA in [0, 1] -> (..., 3) uint8, mixed with white by ``paleness`` (0: as is)."""
    paleness = np.asarray(paleness, dtype=float)[..., None]
    return np.round(255 * (colours[..., :3] * (1 - paleness) + paleness)).astype(np.uint8)


def titled(image: np.ndarray, title: str | None) -> np.ndarray:
    """An (H, W, 3) uint8 image with ``title`` centred above it (the image as it is without one)."""
    if not title:
        return image
    top = SUPTITLE_PX + 14
    canvas = np.full((top + image.shape[0], image.shape[1], 3), 255, dtype=np.uint8)
    canvas[top:] = image
    picture = Image.fromarray(canvas)
    typeface = font(SUPTITLE_PX)
    text = fit_text(title, typeface, image.shape[1])
    ImageDraw.Draw(picture).text((image.shape[1] / 2, 4), text, fill=(0, 0, 0), font=typeface, anchor="mt")
    return np.asarray(picture)


def image_figure(image: np.ndarray) -> Figure:
    """An (H, W, 3) image as a matplotlib figure at 100 dpi, one figure pixel per image pixel."""
    fig = Figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    return fig
