"""TensorBoard projector files: tensors, metadata and sprites, and a config that keeps earlier entries.

``SummaryWriter.add_embedding`` keeps its projector config in memory and rewrites
``projector_config.pbtxt`` whole, so a resumed run (or a second writer on the same log dir)
drops every earlier entry. Here each write reads the file back and merges: an entry of the same
tensor name is replaced, every other one kept. Files are plain TSV/PNG the projector reads; the
config paths are relative to the log dir, as the projector requires.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

CONFIG_FILE = "projector_config.pbtxt"
SPRITE_LIMIT = 8192  # px per side; the projector refuses larger sprites
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


def write_projector(log_dir: str | Path, entries: Sequence[ProjectorEntry], folder: str) -> None:
    """Write ``entries`` under ``<log_dir>/<folder>/`` and merge them into the log dir's projector config.

    Each entry gets ``<folder>/<i>/tensors.tsv`` and ``metadata.tsv``; sprites are stored once per
    distinct image set in ``featviz_projector/sprites/``.
    """
    log_dir = Path(log_dir)
    config = ProjectorConfig()
    config_path = log_dir / CONFIG_FILE
    if config_path.exists():
        text_format.Parse(config_path.read_text(), config)
    replaced = {entry.name for entry in entries}
    kept = [embedding for embedding in config.embeddings if embedding.tensor_name not in replaced]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    for position, entry in enumerate(entries):
        relative = Path(folder) / f"{position:03d}"
        (log_dir / relative).mkdir(parents=True, exist_ok=True)
        np.savetxt(log_dir / relative / "tensors.tsv", np.asarray(entry.vectors, dtype=np.float32), "%.5g", "\t")
        lines = ["\t".join(_cell(c) for c in entry.header)] + ["\t".join(_cell(c) for c in r) for r in entry.rows]
        (log_dir / relative / "metadata.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        embedding = config.embeddings.add()
        embedding.tensor_name = entry.name
        embedding.tensor_path = (relative / "tensors.tsv").as_posix()
        embedding.metadata_path = (relative / "metadata.tsv").as_posix()
        embedding.tensor_shape.extend(np.shape(entry.vectors))
        if entry.thumbnails is not None and entry.thumbnails.numel():
            sprite_path, side = _write_sprite(log_dir, entry.thumbnails)
            embedding.sprite.image_path = sprite_path
            embedding.sprite.single_image_dim.extend([side, side])
    # Write beside and rename: the projector (or a crash) never sees a half-written config.
    partial = config_path.with_suffix(".pbtxt.partial")
    partial.write_text(text_format.MessageToString(config))
    os.replace(partial, config_path)


def _write_sprite(log_dir: Path, thumbnails: torch.Tensor) -> tuple[str, int]:
    digest = hashlib.sha1(thumbnails.contiguous().numpy().tobytes()).hexdigest()[:16]
    relative = Path("featviz_projector") / "sprites" / f"{digest}.png"
    if not (log_dir / relative).exists():  # the same samples every epoch: usually written once per run
        (log_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_sprite(thumbnails)[0]).save(log_dir / relative)
    return relative.as_posix(), sprite_side(len(thumbnails), thumbnails.shape[-1])
