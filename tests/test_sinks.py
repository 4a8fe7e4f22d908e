"""Both sinks write images that read back pixel for pixel: TensorBoard's reader, and plain PNG files; every file is
written whole or not at all, leaving the disk's last MiB to Lightning; metrics.csv is read back row by row."""

import errno
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import read_events
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from lightning_featviz.outputs import files
from lightning_featviz.outputs.files import TEMP_SUFFIX, NoSpaceLeft, sweep_temporaries, write_atomically
from lightning_featviz.outputs.metrics_file import read_metrics
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


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    target = tmp_path / "out" / "table.csv"
    write_atomically(target, "old\n")

    def fails_half_way(path):
        path.write_text("half")
        raise OSError(errno.EIO, "the device failed")

    with pytest.raises(OSError, match="the device failed"):
        write_atomically(target, fails_half_way)
    assert target.read_text() == "old\n"  # the earlier file, whole
    assert [path.name for path in target.parent.iterdir()] == ["table.csv"]  # no temporary left


def test_a_write_that_would_leave_less_than_the_reserve_is_refused_and_resumes_when_space_returns(
    tmp_path, monkeypatch
):
    free = files.free_bytes(tmp_path)
    monkeypatch.setattr(files, "RESERVE_BYTES", free + 2**30)  # as if the disk had less than the reserve free
    with pytest.raises(NoSpaceLeft, match=r"No space left for FeatureVisualizer's .*a\.png: \d+\.\d MiB free"):
        write_atomically(tmp_path / "a.png", b"x" * 100)
    with pytest.raises(NoSpaceLeft):  # a writer function: refused after it wrote, its file deleted
        write_atomically(tmp_path / "b.tsv", lambda path: path.write_text("1\t2\n"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(files, "RESERVE_BYTES", 0)  # space freed
    write_atomically(tmp_path / "a.png", b"x" * 100)
    assert (tmp_path / "a.png").read_bytes() == b"x" * 100


def test_temporaries_of_a_killed_writer_are_swept_and_those_of_a_live_one_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / "sub" / f".index.json.{dead.stdout.strip()}{TEMP_SUFFIX}"
    killed.parent.mkdir()
    killed.write_text("{")
    live = tmp_path / f".a.png.{os.getppid()}{TEMP_SUFFIX}"  # a process that runs: another writer now
    live.write_text("x")
    assert sweep_temporaries(tmp_path) == [killed]
    assert live.exists() and not killed.exists()


def test_the_file_sink_names_a_cut_row_of_metrics_csv_once_and_rewrites_the_file_without_it(tmp_path):
    sink = FileSink(tmp_path)
    sink.log_metrics({"featviz/knn_purity@5/pool": 0.5}, step=3, epoch=0)
    with (tmp_path / "metrics.csv").open("a") as handle:
        handle.write("1,7,featviz/knn_pur")  # a row cut short, no newline: the next row must not glue to it
    with pytest.warns(UserWarning, match=r"dropped the unreadable .*metrics\.csv: line\(s\) \[3\]"):
        sink.log_metrics({"featviz/knn_purity@5/pool": 0.75}, step=11, epoch=2)
    rows, bad = read_metrics(tmp_path / "metrics.csv")
    assert bad == [] and [(row.epoch, row.step, row.value) for row in rows] == [(0, 3, 0.5), (2, 11, 0.75)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once: the file no longer has it
        sink.log_metrics({"featviz/knn_purity@5/pool": 0.8}, step=15, epoch=3)
    sink.finish_epoch()
    page = (tmp_path / "index.html").read_text()
    assert "<th>epoch 0</th><th>epoch 2</th><th>epoch 3</th></tr>" in page  # ascending, no phantom epoch column
