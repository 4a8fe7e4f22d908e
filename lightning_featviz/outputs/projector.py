"""TensorBoard projector files: tensors, metadata and sprites, and a config that keeps earlier entries.

``SummaryWriter.add_embedding`` keeps its projector config in memory and rewrites
``projector_config.pbtxt`` whole, so a resumed run (or a second writer on the same log dir)
drops every earlier entry. Here each write reads the file back and merges: an entry of the same
tensor name is replaced, every other one kept. Files are plain TSV/PNG the projector reads, named
by their content so that what repeats from epoch to epoch is stored once; the config paths are
relative to the log dir, as the projector requires.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_featviz.outputs.files import write_atomically

CONFIG_FILE = "projector_config.pbtxt"
SPRITE_LIMIT = 8192  # px per side; the projector refuses larger sprites
#: JPEG quality of the sprite (the projector shows any image its browser decodes): 2,000 noise thumbnails of
#: 32 px take 0.7 MB where a PNG takes 4.5 MB.
SPRITE_QUALITY = 90
MAX_COLOURED_CLASSES = 50  # the projector colours by a column only up to this many distinct values


@dataclass
class ProjectorEntry:
    """One embedding in the projector.

    Attributes:
        name: tensor name shown in the projector's menu; unique in the log dir.
        vectors: (N, D) float values.
        header: metadata column names (two or more, the projector needs a header then).
        rows: N metadata rows, one value per column.
        thumbnails: (N, 3, T, T) uint8 images for the sprite, or None.
    """

    name: str
    vectors: np.ndarray
    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    thumbnails: torch.Tensor | None = None


def sprite_side(num_images: int, thumbnail_size: int) -> int:
    """The thumbnail side that keeps a square sprite of ``num_images`` within 8192×8192 px."""
    per_row = max(math.ceil(math.sqrt(num_images)), 1)
    return max(min(thumbnail_size, SPRITE_LIMIT // per_row), 1)


def make_sprite(thumbnails: torch.Tensor) -> tuple[np.ndarray, int]:
    """Tile (N, 3, T, T) uint8 thumbnails row by row into one square (S, S, 3) uint8 image.

    Thumbnails are shrunk when needed so that S <= 8192. Returns the image and the tile side.
    """
    n, _, t, _ = thumbnails.shape
    side = sprite_side(n, t)
    if side != t:
        thumbnails = F.interpolate(thumbnails.float(), size=(side, side), mode="area").round().to(torch.uint8)
    per_row = max(math.ceil(math.sqrt(n)), 1)
    sprite = np.zeros((per_row * side, per_row * side, 3), dtype=np.uint8)
    tiles = thumbnails.permute(0, 2, 3, 1).numpy()
    for i, tile in enumerate(tiles):
        row, col = divmod(i, per_row)
        sprite[row * side : (row + 1) * side, col * side : (col + 1) * side] = tile
    return sprite, side


def _cell(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return " ".join(text.split()) or "-"  # no tabs or newlines inside a cell; no empty cells


def write_projector(log_dir: str | Path, entries: Sequence[ProjectorEntry], replace_prefix: str | None = None) -> None:
    """Write ``entries``' files under ``<log_dir>/featviz_projector/`` and merge the entries into the
    log dir's projector config. Entries already there whose name starts with ``replace_prefix``
    (e.g. ``"latest/"``: the previous latest epoch) are dropped.

    Files are named by their content and written once: ``tensors/<digest>.tsv``,
    ``metadata/<digest>.tsv`` and ``sprites/<digest>.jpg``. Pixel space, a frozen layer, the same
    samples' images, or a layer's metadata shared by its vectors and maps cost one file per run,
    not one per epoch.
    """
    log_dir = Path(log_dir)
    config = ProjectorConfig()
    config_path = log_dir / CONFIG_FILE
    if config_path.exists():
        text_format.Parse(config_path.read_text(), config)
    replaced = {entry.name for entry in entries}
    kept = [
        embedding
        for embedding in config.embeddings
        if embedding.tensor_name not in replaced
        and not (replace_prefix and embedding.tensor_name.startswith(replace_prefix))
    ]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    for entry in entries:
        vectors = np.ascontiguousarray(entry.vectors, dtype=np.float32)
        lines = ["\t".join(_cell(c) for c in entry.header)] + ["\t".join(_cell(c) for c in r) for r in entry.rows]
        embedding = config.embeddings.add()
        embedding.tensor_name = entry.name
        embedding.tensor_path = _write_once(log_dir, "tensors", vectors, ".tsv", _tsv)
        embedding.metadata_path = _write_once(log_dir, "metadata", "\n".join(lines) + "\n", ".tsv", _text)
        embedding.tensor_shape.extend(vectors.shape)
        if entry.thumbnails is not None and entry.thumbnails.numel():
            thumbnails = entry.thumbnails.contiguous().numpy()
            embedding.sprite.image_path = _write_once(log_dir, "sprites", thumbnails, ".jpg", _sprite)
            embedding.sprite.single_image_dim.extend([sprite_side(len(thumbnails), thumbnails.shape[-1])] * 2)
    write_atomically(config_path, text_format.MessageToString(config), durable=True)


def _tsv(path: Path, vectors: np.ndarray) -> None:
    np.savetxt(path, vectors, "%.5g", "\t")


def _text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _sprite(path: Path, thumbnails: np.ndarray) -> None:
    Image.fromarray(make_sprite(torch.from_numpy(thumbnails))[0]).save(path, "jpeg", quality=SPRITE_QUALITY)


def _write_once(log_dir: Path, kind: str, content: Any, suffix: str, write: Callable[[Path, Any], object]) -> str:
    """``featviz_projector/<kind>/<digest of content><suffix>``, written by ``write`` unless it exists."""
    data = content.encode() if isinstance(content, str) else content.tobytes() + repr(content.shape).encode()
    relative = Path("featviz_projector") / kind / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    if not (log_dir / relative).exists():
        (log_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(log_dir / relative, lambda path: write(path, content))
    return relative.as_posix()
