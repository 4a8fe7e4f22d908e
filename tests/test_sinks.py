"""Both sinks write images that read back pixel for pixel: TensorBoard's reader, and plain PNG files."""

import io

import numpy as np
from conftest import read_events
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from lightning_featviz.outputs.sinks import FileSink, TensorBoardSink, encode_png


def _picture():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def test_tensorboard_sink_images_read_back_exactly(tmp_path):
    writer = SummaryWriter(tmp_path)
    sink = TensorBoardSink(writer)
    sink.log_image("featviz/neighbours/pool", encode_png(_picture()), step=7)
    sink.finish_epoch()
    writer.close()
    (event,) = read_events(tmp_path).Images("featviz/neighbours/pool")
    assert (event.step, event.width, event.height) == (7, 53, 37)
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, _picture())


def test_file_sink_writes_each_image_as_a_png_per_step(tmp_path):
    sink = FileSink(tmp_path)
    sink.log_image("featviz/neighbours/pool", encode_png(_picture()), step=7)
    decoded = np.asarray(Image.open(tmp_path / "featviz" / "neighbours" / "pool" / "step=0000007.png"))
    assert np.array_equal(decoded, _picture())
