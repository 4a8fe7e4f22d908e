"""Drawing basics of the image mosaics drawn with Pillow (neighbour grids, wrong-cluster galleries): the font,
text that fits, titles.

The font is DejaVu Sans, the one matplotlib ships and draws the charts with (``mpl-data/fonts/ttf``): Latin,
Greek, Cyrillic, arrows and the ✓ ✗ marks the grids write. Pillow's own default font (Aileron) has no ✓, ✗,
→ or accented letters. Finding the file imports matplotlib's package (not pyplot), when a mosaic is drawn.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SUPTITLE_PX = 19  # font size of a picture's title
MAX_WIDTH = 1600  # px: no picture is wider (wider ones wrap their panels into rows)
#: px: TensorBoard's default image card width; a wider picture is shown scaled down to it.
CARD_PX = 350
CAP_HEIGHT = 0.73  # DejaVu Sans: the height of a capital letter per px of font size
#: px: the least height of a capital letter, seen at :data:`CARD_PX`: a title's, and a caption's or legend's.
TITLE_CAP, TEXT_CAP = 7.0, 6.0


def type_px(width: float, base: int, card_cap: float = TEXT_CAP) -> int:
    """The font size for text in a picture ``width`` px wide: ``base``, or larger, so that with the
    picture shown :data:`CARD_PX` px wide a capital letter is still ``card_cap`` px tall."""
    return max(base, math.ceil(card_cap * width / (CARD_PX * CAP_HEIGHT)))


def font_file() -> Path:
    """The file of DejaVu Sans that matplotlib ships."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's: :func:`font_file`) at ``size`` px."""
    return ImageFont.truetype(str(font_file()), size)


def fit_text(text: str, typeface: ImageFont.FreeTypeFont, width: float) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width`` px."""
    if typeface.getlength(text) <= width:
        return text
    while text and typeface.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def wrap_text(text: str, typeface: ImageFont.FreeTypeFont, width: float, max_lines: int = 2) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px, at most ``max_lines`` of them
    (the last cut short with an ellipsis where the text goes on)."""
    lines: list[str] = []
    words = text.split(" ")
    while words and len(lines) < max_lines - 1:
        line = words.pop(0)
        while words and typeface.getlength(f"{line} {words[0]}") <= width:
            line += f" {words.pop(0)}"
        if typeface.getlength(line) > width:  # one word wider than the line: cut it here
            words.insert(0, line)
            break
        lines.append(line)
    if words:
        lines.append(fit_text(" ".join(words), typeface, width))
    return lines


def title_height(width: int) -> int:
    """px that :func:`titled` adds above an image ``width`` px wide."""
    return type_px(width, SUPTITLE_PX, TITLE_CAP) + 14


def titled(image: np.ndarray, title: str | None) -> np.ndarray:
    """An (H, W, 3) uint8 image with ``title`` centred above it (the image as it is without one).

    A title wider than the image widens the picture (up to :data:`MAX_WIDTH`) rather than being cut.
    Its type grows with the image's width (:func:`type_px`), so that it reads at TensorBoard's card width.
    """
    if not title:
        return image
    size = type_px(image.shape[1], SUPTITLE_PX, TITLE_CAP)
    top, typeface = title_height(image.shape[1]), font(size)
    width = max(image.shape[1], min(int(typeface.getlength(title)) + 16, MAX_WIDTH))
    canvas = np.full((top + image.shape[0], width, 3), 255, dtype=np.uint8)
    left = (width - image.shape[1]) // 2
    canvas[top:, left : left + image.shape[1]] = image
    picture = Image.fromarray(canvas)
    text = fit_text(title, typeface, width)
    ImageDraw.Draw(picture).text((width / 2, 4), text, fill=(0, 0, 0), font=typeface, anchor="mt")
    return np.asarray(picture)
