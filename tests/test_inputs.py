"""The "input" layer of each kind of batch: images, sequences, vectors and token ids."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_featviz.capture.inputs import (
    SLICED_WINDOW,
    area_downsample,
    check_input_kind,
    input_kind,
    input_width,
    reduce_input,
)


@pytest.mark.parametrize(
    ("inputs", "model", "kind"),
    [
        (torch.rand(2, 3, 8, 8), None, "image"),
        (torch.rand(2, 8, 8), nn.Sequential(nn.Conv2d(1, 4, 3)), "image"),  # a grey image for a CNN
        (torch.rand(2, 8, 5), nn.LSTM(5, 4, batch_first=True), "sequence"),
        (torch.rand(2, 5), None, "vector"),
        (torch.rand(7), None, "vector"),
        (torch.randint(0, 100, (2, 9)), None, "tokens"),
    ],
)
def test_input_kind_is_told_from_dtype_rank_and_the_model(inputs, model, kind):
    assert input_kind(inputs, model) == kind


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "token ids of shape \\(B, T\\)"),
        (torch.zeros(2, 3, dtype=torch.bool), "token ids"),
        (torch.rand(2, 3, 4, 4, 4), "\\(B, C, H, W\\), \\(B, T, F\\), \\(B, F\\)"),
    ],
)
def test_inputs_of_no_known_kind_are_refused_with_the_shapes_that_are(inputs, match):
    with pytest.raises(TypeError, match=match):
        input_kind(inputs)


def test_a_batch_that_does_not_fit_the_given_kind_names_the_argument():
    with pytest.raises(TypeError, match=r"Expected image inputs.*`capture=CaptureOptions\(input_kind="):
        check_input_kind(torch.rand(4, 10), "image")


@pytest.mark.parametrize(("rows", "columns"), [(2, 2), (1, 2), (2, 1), (4, 1), (1, 3), (3, 3), (2, 4)])
def test_area_downsampling_gives_avg_pool2d_bit_for_bit(rows, columns):
    generator = torch.Generator().manual_seed(rows * 10 + columns)
    images = torch.randn(4, 3, 12 * rows, 12 * columns, generator=generator) * 7
    for batch in (images, images.double(), images.to(memory_format=torch.channels_last), images[:, :, 1:-1:, :]):
        batch = batch[:, :, : batch.shape[2] // rows * rows]
        assert torch.equal(area_downsample(batch, rows, columns), F.avg_pool2d(batch, (rows, columns)))
    assert (2 * 2 <= SLICED_WINDOW) and (3 * 3 > SLICED_WINDOW)  # both ways are taken above


def test_each_kind_reduces_to_the_vector_the_table_documents():
    images = torch.rand(2, 3, 32, 32)
    expected = F.avg_pool2d(images, 2).flatten(1)  # 32 -> 16 by area averaging
    assert torch.equal(reduce_input(images, "image", 16), expected)
    for shape in [(2, 3, 32, 64), (2, 3, 30, 30)]:  # whole windows (a cheaper kernel) or not: adaptive pooling's
        other = torch.rand(shape)
        assert torch.equal(reduce_input(other, "image", 16), F.adaptive_avg_pool2d(other, 16).flatten(1))
    sequence = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)
    pairs = sequence.view(2, 4, 2, 3).mean(2)  # 8 steps -> 4 by averaging neighbouring steps
    torch.testing.assert_close(reduce_input(sequence, "sequence", 4), pairs.flatten(1))
    vectors = torch.rand(5, 7)
    assert torch.equal(reduce_input(vectors, "vector", 16), vectors)
    tokens = torch.tensor([[1, 1, 3, 0], [260, 4, 4, 4]])
    bags = reduce_input(tokens, "tokens", 16)  # 256 buckets: id 260 lands in bucket 4
    assert bags.shape == (2, 256)
    assert bags[0, 1] == 0.5 and bags[0, 3] == 0.25 and bags[0, 0] == 0.25
    assert bags[1, 4] == 1.0 and bags[1].sum() == 1.0
    for inputs, kind in [(images, "image"), (sequence, "sequence"), (vectors, "vector"), (tokens, "tokens")]:
        size = 4 if kind == "sequence" else 16
        assert reduce_input(inputs, kind, size).shape[1] == input_width(tuple(inputs.shape), kind, size)
