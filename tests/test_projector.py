import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_featviz.outputs.projector import SPRITE_LIMIT, ProjectorEntry, make_sprite, sprite_side, write_projector


def _config(log_dir) -> ProjectorConfig:
    config = ProjectorConfig()
    text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), config)
    return config


def _entry(name, n=6, d=4, thumbnails=True):
    rng = np.random.default_rng(len(name))
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8) if thumbnails else None
    rows = [(i, f"class {i % 2}", "x\ty") for i in range(n)]
    return ProjectorEntry(name, rng.normal(size=(n, d)), ["index", "label", "note"], rows, images)


@pytest.mark.parametrize("n", [1, 2000, 70_000, 250_000])
def test_sprite_thumbnails_shrink_so_the_sprite_never_exceeds_8192_px(n):
    side = sprite_side(n, 32)
    assert math.ceil(math.sqrt(n)) * side <= SPRITE_LIMIT
    assert side == (32 if n <= 2000 else SPRITE_LIMIT // math.ceil(math.sqrt(n)))


def test_sprite_tiles_images_row_by_row_in_a_square():
    thumbnails = torch.arange(5, dtype=torch.uint8)[:, None, None, None].expand(5, 3, 4, 4) * 50
    sprite, side = make_sprite(thumbnails)
    assert sprite.shape == (12, 12, 3) and side == 4
    assert sprite[0, 0, 0] == 0 and sprite[0, 4, 0] == 50 and sprite[4, 0, 0] == 150  # 3 per row
    assert (sprite[8:, 8:] == 0).all()  # an unused tile stays black


def test_projector_files_are_written_and_config_merges_with_earlier_entries(tmp_path):
    write_projector(tmp_path, [_entry("a/epoch_000"), _entry("b/epoch_000", thumbnails=False)])
    # A later write (a resumed run, a new writer) keeps earlier entries and replaces same-named ones.
    write_projector(tmp_path, [_entry("a/epoch_001", d=3), _entry("b/epoch_000", d=2, thumbnails=False)])
    config = _config(tmp_path)
    names = [e.tensor_name for e in config.embeddings]
    assert sorted(names) == ["a/epoch_000", "a/epoch_001", "b/epoch_000"]
    replaced = next(e for e in config.embeddings if e.tensor_name == "b/epoch_000")
    assert list(replaced.tensor_shape) == [6, 2]
    assert np.loadtxt(tmp_path / replaced.tensor_path, delimiter="\t").shape == (6, 2)
    first = next(e for e in config.embeddings if e.tensor_name == "a/epoch_000")
    assert np.loadtxt(tmp_path / first.tensor_path, delimiter="\t").shape == (6, 4)
    header, *rows = (tmp_path / first.metadata_path).read_text().splitlines()
    assert header == "index\tlabel\tnote" and rows[1] == "1\tclass 1\tx y"  # tabs inside a value are removed
    with Image.open(tmp_path / first.sprite.image_path) as sprite:
        assert sprite.size == (24, 24) and list(first.sprite.single_image_dim) == [8, 8]
    assert not replaced.sprite.image_path
    assert not list(tmp_path.glob("*.partial"))


def test_files_that_repeat_are_written_once_and_shared(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(6, 4))
    rows = [(i, f"class {i % 2}") for i in range(6)]
    same = [ProjectorEntry(f"input/epoch_{e:03d}", vectors, ["index", "label"], rows) for e in range(3)]
    other = ProjectorEntry("pool/epoch_000", vectors[:, :2], ["index", "label"], rows)
    for entry in same:  # pixel space, epoch after epoch
        write_projector(tmp_path, [entry])
    write_projector(tmp_path, [other])
    config = _config(tmp_path)
    assert len({e.tensor_path for e in config.embeddings}) == 2  # one file for the three epochs, one for pool
    assert len({e.metadata_path for e in config.embeddings}) == 1  # the same table everywhere
    assert len(list((tmp_path / "featviz_projector" / "tensors").iterdir())) == 2
    np.testing.assert_allclose(
        np.loadtxt(tmp_path / config.embeddings[0].tensor_path, delimiter="\t"), vectors, rtol=1e-4
    )
