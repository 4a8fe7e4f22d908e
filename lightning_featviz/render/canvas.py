"""Drawing basics shared by the pictures drawn with Pillow: fonts, text that fits, class colours and titles.

Pillow draws an epoch's neighbour grids and t-SNE maps in milliseconds, where matplotlib took
seconds (measured in benchmarks/fit_overhead.py); these pictures need no axes to read.

The font is DejaVu Sans, shipped with the package (``render/fonts``, its licence beside it) as a subset: Latin,
Greek, Cyrillic, punctuation, arrows and the ✓ ✗ marks. Pillow's own default font (Aileron) has no ✓, ✗, → or
accented letters, which the grids, the names key and class names need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lightning_featviz.render.colours import colour_table, scale_colours

SUPTITLE_PX = 19  # font size of a picture's title
MAX_WIDTH = 1600  # px: no picture is wider (wider ones wrap their panels into rows)
KEY_PX = 12  # font size of the table of shortened class names
#: px: TensorBoard's default image card width; a wider picture is shown scaled down to it.
CARD_PX = 350
CAP_HEIGHT = 0.73  # DejaVu Sans: the height of a capital letter per px of font size
#: px: the least height of a capital letter, seen at :data:`CARD_PX`: a title's, and a caption's or legend's.
TITLE_CAP, TEXT_CAP = 7.0, 6.0
KEY_ROWS = 40  # entries of that table at most (the rest are counted)
FONT_FILE = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"


def type_px(width: float, base: int, card_cap: float = TEXT_CAP) -> int:
    """The font size for text in a picture ``width`` px wide: ``base``, or larger, so that with the
    picture shown :data:`CARD_PX` px wide a capital letter is still ``card_cap`` px tall."""
    return max(base, math.ceil(card_cap * width / (CARD_PX * CAP_HEIGHT)))


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with the package: ``render/fonts/DejaVuSans.ttf``) at ``size`` px."""
    return ImageFont.truetype(str(FONT_FILE), size)


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


def short_names(names: Sequence[str], max_chars: int = 18) -> list[str]:
    """Class names short enough for a legend or an axis, still telling each apart: where one is longer
    than ``max_chars``, a prefix they all share is dropped, and a long name keeps its start and end
    around an ellipsis (``"a_rather_long_class_name_one"`` -> ``"a_rather…name_one"``). Names that
    would collide are kept whole.
    """
    names = [str(n) for n in names]
    if all(len(n) <= max_chars for n in names):  # short enough as they are
        return names
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""
    prefix = prefix[: max((i + 1 for i, c in enumerate(prefix) if not c.isalnum()), default=0)]  # whole words
    stripped = [n[len(prefix) :] for n in names] if prefix and all(len(n) > len(prefix) for n in names) else names
    head, tail = max_chars // 2, max_chars - max_chars // 2 - 1
    short = [n if len(n) <= max_chars else f"{n[:head]}…{n[len(n) - tail :]}" for n in stripped]
    return short if len(set(short)) == len(set(names)) else names


def names_key(full: Sequence[str], short: Sequence[str], shown: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """(short, full) pairs of the class names ``short_names`` shortened, for class ids ``shown``
    (every class by default), in that order."""
    ids = range(len(full)) if shown is None else shown
    return [(str(short[c]), str(full[c])) for c in ids if str(short[c]) != str(full[c])]


def with_names_key(
    image: np.ndarray, full: Sequence[str], short: Sequence[str], shown: Sequence[int] | None = None
) -> np.ndarray:
    """An (H, W, 3) uint8 image with a compact table "short → full name" of the shortened names
    (:func:`names_key`) below it, in as many columns as fit its width (widened up to :data:`MAX_WIDTH`
    for one whole name); the image as it is when no
    name was shortened. At most :data:`KEY_ROWS` entries are listed, the others counted."""
    entries = names_key(full, short, shown)
    if not entries:
        return image
    size = type_px(image.shape[1], KEY_PX)
    typeface, pitch = font(size), size + 6
    lines = [f"{a} → {b}" for a, b in entries[:KEY_ROWS]]
    if len(entries) > KEY_ROWS:
        lines.append(f"and {len(entries) - KEY_ROWS} more shortened names")
    longest = int(max(typeface.getlength(line) for line in lines)) + 24
    width = max(image.shape[1], min(longest + 16, MAX_WIDTH))  # widened for a full name rather than cut
    column = min(width - 16, longest)
    columns = max(1, (width - 16) // column)
    rows = -(-len(lines) // columns)
    top = size + 14
    canvas = np.full((image.shape[0] + top + rows * pitch + 8, width, 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    y0 = image.shape[0] + 6
    draw.text((8, y0), "Class names shortened above:", fill=(0, 0, 0), font=typeface, anchor="lt")
    for n, line in enumerate(lines):
        x, y = 8 + (n // rows) * column, y0 + top - 6 + (n % rows) * pitch
        draw.text((x, y), fit_text(line, typeface, column - 12), fill=(60, 60, 60), font=typeface, anchor="lt")
    return np.asarray(picture)


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA colours in [0, 1], one per class id: tab10 / tab20 when they suffice, else a spread of turbo."""
    if num_classes <= 20:
        colours = colour_table("tab10" if num_classes <= 10 else "tab20")[:num_classes]
    else:
        colours = scale_colours("turbo", np.linspace(0.03, 0.97, num_classes))
    return np.concatenate([colours / 255, np.ones((num_classes, 1))], axis=1)


def rgb(colours: np.ndarray, paleness: np.ndarray | float = 0.0) -> np.ndarray:
    """(..., 4) RGBA in [0, 1] -> (..., 3) uint8, mixed with white by ``paleness`` (0: as is)."""
    paleness = np.asarray(paleness, dtype=float)[..., None]
    return np.round(255 * (colours[..., :3] * (1 - paleness) + paleness)).astype(np.uint8)


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
