"""Faults and hostile input: each is handled with a precise message, and none ends or corrupts the run."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import TinyNet, hooks_left, read_events, tiny_trainer
from google.protobuf import text_format
from pytorch_lightning import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.dashboard.data import FOLDER, read_index
from lightning_featviz.demo.model import ClassificationData
from lightning_featviz.outputs.files import TEMP_SUFFIX
from lightning_featviz.runtime.scheduler import ReportScheduler

LAYERS = ["input", "conv2", "pool"]


def _report_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("featviz-report") and t.is_alive()]


def _broken_pictures(*args, **kwargs):
    raise RuntimeError("the plotting backend failed")


def _render_in_this_process(monkeypatch):
    """A fault patched into this process does not reach a report process: render on the worker thread."""
    monkeypatch.setattr(ReportScheduler, "in_a_process", False)


@pytest.mark.parametrize("background", [False, True])
def test_a_plotting_failure_warns_once_and_training_and_scalars_go_on(tmp_path, small_data, monkeypatch, background):
    monkeypatch.setattr("lightning_featviz.report.reporter.encode_png", _broken_pictures)
    _render_in_this_process(monkeypatch)
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=60,
        maps=MapOptions(every_n_epochs=None),
        resources=ResourceOptions(background=background),
    )
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    with pytest.warns(UserWarning, match="could not analyse or report an epoch.*the plotting backend failed") as record:
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.state.finished and trainer.current_epoch == 2
    assert sum("could not analyse or report" in str(w.message) for w in record) == 1
    assert len(read_events(tmp_path).Scalars("featviz/knn_purity@5/pool")) == 2
    assert not _report_threads()


@pytest.mark.parametrize("background", [False, True])
def test_strict_mode_raises_the_failure_and_cleans_up(tmp_path, small_data, monkeypatch, background):
    monkeypatch.setattr("lightning_featviz.report.reporter.encode_png", _broken_pictures)
    _render_in_this_process(monkeypatch)
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=60,
        strict=True,
        maps=MapOptions(every_n_epochs=None),
        resources=ResourceOptions(background=background),
    )
    model = TinyNet()
    with pytest.raises(RuntimeError, match="the plotting backend failed"):
        tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer]).fit(
            model, datamodule=small_data
        )
    assert hooks_left(model) == 0 and not _report_threads()


def _in_the_background() -> FeatureVisualizer:
    """Every output, 2-D maps only, the reports made in the render process."""
    return FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=60,
        maps=MapOptions(dims=[2], every_n_epochs=1),
        resources=ResourceOptions(background=True),
    )


class KillTheReportProcess(Callback):
    """At the start of the training epochs ``at``: wait for the reports queued, then kill the report process, as
    the kernel's OOM killer would."""

    def __init__(self, visualizer, at):
        self.visualizer, self.at, self.killed = visualizer, at, []

    def on_train_epoch_start(self, trainer, pl_module):
        reports = self.visualizer._reports
        if trainer.current_epoch in self.at:
            for _ in range(reports._worker.max_pending):  # a lost report warns, as the callback's drain would
                self.visualizer._guard.call(reports._worker.drain)  # (and stops the drain: drain the rest)
            os.kill(reports.renderer.pid, signal.SIGKILL)
            self.killed.append(reports.renderer.pid)


def test_a_report_process_that_dies_costs_one_report_and_the_next_starts_a_new_one(tmp_path, small_data):
    visualizer = _in_the_background()
    killer = KillTheReportProcess(visualizer, at=[1])
    trainer = tiny_trainer(tmp_path, max_epochs=3, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer, killer])
    with pytest.warns(UserWarning, match="report process ended unexpectedly") as record:
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.state.finished and sum("ended unexpectedly" in str(w.message) for w in record) == 1
    events = read_events(tmp_path)
    steps = [event.step for event in events.Scalars("featviz/knn_purity@5/pool")]
    assert len(steps) == 3  # the scalars of every epoch, those not logged through the module too:
    assert [event.step for event in events.Scalars("featviz/tsne_purity@5/pool/2d")] == [steps[0], steps[2]]
    assert [event.step for event in events.Images("featviz/tsne_2d/pool")] == [steps[0], steps[2]]  # epoch 1's lost
    assert visualizer._reports._starts == 2 and visualizer._reports.renderer is None  # stopped at the end of fit
    assert not _report_threads()


def test_a_report_process_killed_twice_skips_the_later_reports_with_one_warning(tmp_path, small_data):
    visualizer = _in_the_background()
    killer = KillTheReportProcess(visualizer, at=[1, 3])  # the first, then the one epoch 2's report started
    trainer = tiny_trainer(tmp_path, max_epochs=4, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer, killer])
    with pytest.warns(UserWarning, match="report process failed again") as record:
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.state.finished and trainer.current_epoch == 4 and len(killer.killed) == 2
    assert sum("failed again" in str(w.message) and "skipped from epoch 3" in str(w.message) for w in record) == 1
    events = read_events(tmp_path)
    assert len(events.Scalars("featviz/knn_purity@5/pool")) == 4  # every epoch's scalars
    assert len(events.Images("featviz/tsne_2d/pool")) == 2  # epochs 0 and 2: 1 died, 3 skipped (not rendered here)
    assert visualizer._reports._starts == 2 and not _report_threads()


def test_an_error_in_training_leaves_no_hook_and_no_worker(tmp_path, small_data):
    model = TinyNet(fail_at_batch=1)  # fails in the middle of a validation epoch, hooks attached
    visualizer = _in_the_background()
    with pytest.raises(RuntimeError, match="boom in validation_step"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(model, datamodule=small_data)
    assert hooks_left(model) == 0 and not _report_threads()


def test_keyboard_interrupt_leaves_no_hook_and_no_worker(tmp_path, small_data):
    class Interrupted(TinyNet):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    model = Interrupted()
    visualizer = _in_the_background()
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning shuts down gracefully, then exits with status 1
            tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(model, datamodule=small_data)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C while it shuts down
    assert len(visualizer.history) == len(LAYERS)  # epoch 0 was analysed before the interrupt
    assert hooks_left(model) == 0 and not _report_threads()


class Channels(Dataset):
    """Digits with ``channels`` channels: grey (1), or RGB plus a constant fourth plane (4)."""

    def __init__(self, base, channels):
        self.base, self.channels = base, channels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        image = image.mean(0, keepdim=True) if self.channels == 1 else torch.cat([image, torch.ones_like(image[:1])])
        return image, label


@pytest.mark.parametrize("channels", [1, 4])
def test_images_that_are_not_three_channel(tmp_path, digits_val, channels):
    class Net(TinyNet):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)

    data = ClassificationData(
        Channels(Subset(digits_val, range(96)), channels), Channels(Subset(digits_val, range(96, 176)), channels), []
    )
    visualizer = FeatureVisualizer(
        LAYERS, overhead=None, k=5, maps=MapOptions(dims=[2]), outputs=OutputOptions(confusion=False)
    )
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    if channels == 4:
        with pytest.warns(UserWarning, match="have 4 channels; thumbnails .* show the first three as RGB"):
            trainer.fit(Net(), datamodule=data)
    else:
        trainer.fit(Net(), datamodule=data)
    events = read_events(tmp_path)
    assert len(events.Images("featviz/neighbours/input")) == 1
    assert len(visualizer.history) == len(LAYERS)
    input_dims = channels * visualizer.capture.input_size**2
    config = ProjectorConfig()
    log_dir = tmp_path / "lightning_logs" / "version_0"
    text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), config)
    pixels = next(e for e in config.embeddings if e.tensor_name == "latest/epoch_000/input/vectors")
    assert list(pixels.tensor_shape)[1] == input_dims
    assert len((log_dir / pixels.tensor_path).read_text().splitlines()[0].split("\t")) == input_dims


def _collate_maybe_empty(items):
    """Like the default collate, but an empty list gives a (0, 3, 32, 32) batch (a filtering collate can)."""
    if not items:
        return torch.empty(0, 3, 32, 32), torch.empty(0, dtype=torch.int64)
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def test_empty_batches_are_passed_over(tmp_path, digits_val):
    class WithEmptyBatches(ClassificationData):
        def val_dataloader(self):
            batches = [list(range(0, 40)), [], list(range(40, 80)), []]
            return DataLoader(self.val, batch_sampler=batches, collate_fn=_collate_maybe_empty)

    class SkipsEmpty(TinyNet):
        def validation_step(self, batch, batch_idx):
            if len(batch[1]):
                return super().validation_step(batch, batch_idx)

    data = WithEmptyBatches(Subset(digits_val, range(96)), Subset(digits_val, range(96, 176)), digits_val.classes)
    visualizer = FeatureVisualizer(
        LAYERS, overhead=None, k=5, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer]).fit(SkipsEmpty(), datamodule=data)
    assert len(visualizer.history) == len(LAYERS)


def test_labels_beyond_the_class_names_are_named_by_id(tmp_path, digits_val):
    data = ClassificationData(Subset(digits_val, range(96)), Subset(digits_val, range(96, 196)), ["zero", "one"])
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False, monitor_class_purity=True),
    )
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer])
    with pytest.warns(UserWarning, match="Labels go up to 9 but only 2 class names are known"):
        trainer.fit(TinyNet(), datamodule=data)
    tags = set(trainer.callback_metrics)
    assert {"featviz/purity_of_class@5/pool/zero", "featviz/purity_of_class@5/pool/9"} <= tags


def test_query_indices_beyond_the_dataset_are_left_out_with_a_warning(tmp_path, small_data):
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        outputs=OutputOptions(query_indices=[3, 500], confusion=False),
        maps=MapOptions(every_n_epochs=None),
    )
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    with pytest.warns(
        UserWarning, match=r"`outputs.query_indices` \[500\] are beyond the validation dataset \(160 samples\)"
    ):
        trainer.fit(TinyNet(), datamodule=small_data)
    assert len(read_events(tmp_path).Images("featviz/neighbours/pool")) == 1


# ----------------------------------------------------------------------------- faults from outside, in real processes

SCRIPT = Path(__file__).parent / "fault_run.py"


def _interruptible() -> None:
    """In the child before it runs: Ctrl+C's default action, as a terminal's foreground process has it. A test run
    started in the background (``cmd &`` in a script) ignores SIGINT, its children inherit that, and Python then
    installs no ``KeyboardInterrupt`` handler: the signal would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(log_dir: Path, *flags: str, new_session: bool = False) -> subprocess.Popen:
    """``tests/fault_run.py`` in a fresh process, as a user's script (no ``__main__`` guard) run from a terminal
    (:func:`_interruptible`); its stderr goes to a file (``.stderr`` of the result): a process it leaves behind would
    hold a pipe open past its exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(SCRIPT), str(log_dir), *flags]
    stderr = log_dir.parent / f"{log_dir.name}-{len(list(log_dir.parent.glob(f'{log_dir.name}-*.txt')))}.txt"
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
        env=env,
        start_new_session=new_session,
        preexec_fn=_interruptible,
    )
    process.stderr_path = stderr  # type: ignore[attr-defined]
    return process


def _finish(process: subprocess.Popen, timeout: float = 500) -> tuple[str, str, float]:
    """Wait for ``process`` to exit (not for its pipes: see ``_start``): its stdout read so far, its stderr, and
    ``time.time()`` when it exited."""
    assert process.stdout is not None
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    process.wait(timeout=timeout)
    exited = time.time()
    reader.join(timeout=5)
    return "".join(stdout), process.stderr_path.read_text(), exited  # type: ignore[attr-defined]


def _wait_for_ready(process: subprocess.Popen, report_process: bool = True) -> list[psutil.Process]:
    """Read the script's output up to READY; return its report process (started with the first report)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("READY"):
            break
    else:
        pytest.fail(f"the script ended before READY: {_finish(process)[1][-3000:]}")
    if not report_process:
        return []
    parent = psutil.Process(process.pid)
    for _ in range(600):  # the first report starts it (spawn: a fresh interpreter)
        children = [c for c in parent.children() if "resource_tracker" not in " ".join(c.cmdline())]
        if children:
            return children
        time.sleep(0.1)
    pytest.fail("no report process started")


def _written_files(log_dir: Path) -> list[Path]:
    return [path for path in log_dir.rglob("*") if path.is_file()]


@pytest.fixture
def small_disk(tmp_path):
    """Two 3 MB tmpfs folders (root only: CI runs as root)."""
    disks = [tmp_path / "with", tmp_path / "without"]
    for disk in disks:
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
    yield disks
    for disk in disks:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_ends_the_fit_as_without_the_callback_with_one_warning_and_no_partial_file(small_disk):
    with_callback, without = small_disk
    started = time.perf_counter()
    runs = {disk: _start(disk, *([] if disk is with_callback else ["--no-callback"])) for disk in small_disk}
    outputs = {disk: _finish(run) for disk, run in runs.items()}
    free = shutil.disk_usage(with_callback).free / 2**20
    print(f"\nfull disk: exit codes {runs[with_callback].returncode} (with) {runs[without].returncode} (without), "
          f"{free:.1f} MiB left free, both runs {time.perf_counter() - started:.0f} s")  # fmt: skip
    assert runs[with_callback].returncode == runs[without].returncode == 0, outputs[with_callback][1][-3000:]
    stderr = outputs[with_callback][1]
    assert stderr.count("No space left for FeatureVisualizer's") == 1
    assert re.search(r"No space left for FeatureVisualizer's /\S+: \d+\.\d MiB free", stderr)
    files = _written_files(with_callback)
    assert not [path for path in files if path.name.endswith((TEMP_SUFFIX, ".partial", ".tmp"))]
    assert not [path for path in files if path.stat().st_size == 0]
    assert (with_callback / "checkpoints" / "last.ckpt").exists()  # Lightning's own files were written
    assert len(read_events(with_callback).Scalars("val_loss")) == 3


def test_a_kill_during_a_background_report_then_resume_names_each_missing_epoch_and_leaves_no_partial_file(tmp_path):
    tmp_path = tmp_path / "run"  # (the scripts' stderr beside it)
    first = _start(tmp_path, "--background", "--ready-at", "2", "--epochs", "3")
    report_processes = _wait_for_ready(first)  # epochs 0 and 1 checkpointed, their reports queued or running
    first.kill()
    killed = time.perf_counter()
    first.wait()
    _, alive = psutil.wait_procs(report_processes, timeout=10)
    assert not alive  # the report process died with its parent
    print(f"\nkill -9: the report process gone {time.perf_counter() - killed:.2f} s after its parent's kill")
    resumed = _start(tmp_path, "--background", "--resume", "--epochs", "3")
    stdout, stderr, _ = _finish(resumed)
    assert resumed.returncode == 0, stderr[-3000:]
    assert stdout.count("SCRIPT_STARTED") == 1  # the report process (spawn) did not run the script again
    named = re.findall(r"the reports of epoch\(s\) \[([\d, ]*)\] were written", stderr)
    assert len(named) <= 1
    missing = {int(epoch) for epoch in named[0].split(",")} if named else set()
    index = read_index(tmp_path / "lightning_logs" / "version_0" / FOLDER)
    listed = {entry["epoch"] for entry in index["epochs"]}
    assert listed | missing == {0, 1, 2} and 2 in listed  # each epoch's outputs are there, or it is named
    print(f"kill -9 at epoch 2, resumed: epochs named as missing {sorted(missing)}, listed {sorted(listed)}")
    files = _written_files(tmp_path)
    assert not [path for path in files if path.name.endswith(TEMP_SUFFIX)]
    assert not [path for path in files if path.stat().st_size == 0]


def _interrupt(log_dir: Path, *flags: str) -> tuple[float, list[psutil.Process], str]:
    """Ctrl+C to the process group of a fit in its second epoch: seconds from the signal to the process's exit, the
    report processes it had, its stderr."""
    run = _start(log_dir, *flags, "--ready-at", "1", "--epochs", "3", new_session=True)
    report_processes = _wait_for_ready(run, report_process="--no-callback" not in flags)
    signalled = time.time()
    os.killpg(run.pid, signal.SIGINT)  # Ctrl+C: to the whole process group, the report process too
    _, stderr, exited = _finish(run, timeout=120)
    assert run.returncode == 1  # Lightning's graceful shutdown
    return exited - signalled, report_processes, stderr


def test_ctrl_c_during_the_first_report_exits_as_promptly_as_without_the_callback_and_leaves_no_process(tmp_path):
    alone, _, _ = _interrupt(tmp_path / "alone", "--no-callback")
    seconds, report_processes, stderr = _interrupt(tmp_path / "run", "--background")  # epoch 0's report renders
    print(f"\nCtrl+C: exit {seconds:.2f} s after it with the callback, {alone:.2f} s without")
    assert seconds < alone + 2.0
    _, alive = psutil.wait_procs(report_processes, timeout=5)
    assert not alive
    assert "could not start" not in stderr and "ended unexpectedly" not in stderr and "BrokenPipe" not in stderr
