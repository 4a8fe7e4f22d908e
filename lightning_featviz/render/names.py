"""Class names short enough for an axis or a legend, and the key of the ones that were shortened."""

from __future__ import annotations

import os
from collections.abc import Sequence

#: Entries of a figure's key of shortened names at most (the rest are counted).
KEY_ENTRIES = 12


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


def key_lines(full: Sequence[str], short: Sequence[str], shown: Sequence[int] | None = None) -> list[str]:
    """The lines of a figure's key of shortened names: a heading, then "short = full" (at most
    :data:`KEY_ENTRIES`, the rest counted); none when no name was shortened."""
    entries = names_key(full, short, shown)
    if not entries:
        return []
    lines = ["Class names shortened above:", *(f"{a} = {b}" for a, b in entries[:KEY_ENTRIES])]
    if len(entries) > KEY_ENTRIES:
        lines.append(f"and {len(entries) - KEY_ENTRIES} more")
    return lines
