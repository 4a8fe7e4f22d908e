"""The experiment trackers' client calls, off the training loop: one daemon thread, a bounded queue.

A tracker sink (:class:`QueuedTracker`: W&B, MLflow, Comet) collects an epoch's client calls as it is handed the
report, and queues them as one job at ``finish_epoch``. :class:`TrackerWriter` runs the jobs in the order they were
queued, one at a time, on its thread; nothing that thread does reaches training:

- a job that finds ``capacity`` jobs waiting is dropped, with one warning (training never waits for a tracker; the
  files beside the run still hold that epoch);
- a client call that raises costs that call only, with one warning per tracker;
- each job's seconds go to ``on_written`` (the callback counts them in its time budget);
- :meth:`TrackerWriter.drain` (the callback's ``teardown``) waits for the queue up to a timeout, then drops what is
  left and says which epochs of which tracker; :meth:`TrackerWriter.stop` (training failed or was interrupted) drops
  every job not started at once and says which, and leaves the running one to finish if it can.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

Warn = Callable[[str, str], None]
Write = Callable[[], object]

#: Epochs of writes that may wait for the writer's thread (each job holds an epoch's encoded figures).
CAPACITY = 4
#: Seconds ``teardown`` waits for the queued writes (MLflow on a local store takes ~2 s an epoch).
DRAIN_SECONDS = 60.0


def _warn(key: str, message: str) -> None:
    warnings.warn(message, stacklevel=2)


@dataclass
class _Job:
    """One epoch's client calls for one tracker."""

    tracker: str
    epoch: int
    writes: Sequence[Write]


def _named(jobs: Sequence[_Job]) -> str:
    """``MLflow (epochs 3, 4), W&B (epoch 4)``."""
    epochs: dict[str, list[int]] = {}
    for job in jobs:
        epochs.setdefault(job.tracker, []).append(job.epoch)
    return ", ".join(
        f"{name} (epoch{'s' if len(found) > 1 else ''} {', '.join(map(str, found))})" for name, found in epochs.items()
    )


class TrackerWriter:
    """Runs the trackers' writes on one daemon thread (started with the first job), in order.

    Args:
        warn: ``warn(key, message)``, warning once per key (the callback's); a plain warning by default.
        on_written: ``on_written(seconds)`` after each job, with the seconds its writes took.
        capacity: jobs that may wait; a further one is dropped with a warning.
    """

    def __init__(
        self, warn: Warn | None = None, on_written: Callable[[float], None] | None = None, capacity: int = CAPACITY
    ):
        if capacity < 1:
            raise ValueError(
                f"Expected `capacity` to be at least 1, but got {capacity}. Hint: 4 epochs is the default."
            )
        self.warn, self.on_written, self.capacity = warn or _warn, on_written, capacity
        #: Seconds every job took so far.
        self.seconds = 0.0
        self._queue: queue.Queue[_Job] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._running: _Job | None = None
        self._lock = threading.Lock()

    def submit(self, tracker: str, epoch: int, writes: Sequence[Write]) -> None:
        """Queue ``writes`` (an epoch's client calls to ``tracker``), or drop them, with a warning, when full."""
        if not writes:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="featviz-tracker", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(_Job(tracker, epoch, writes))
        except queue.Full:
            self.warn(
                f"tracker-behind/{tracker}",
                f"FeatureVisualizer's writes to {tracker} are {self.capacity} epochs behind; epoch {epoch}'s figures, "
                "tables and page are not logged there (the files beside the run hold them). Training does not wait "
                "for a tracker. Hint: analyse fewer epochs (`every_n_epochs`) or check the tracker's connection.",
            )

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            self._running, started = job, time.perf_counter()
            try:
                for write in job.writes:
                    try:
                        write()
                    except Exception as error:  # a tracker's failure is never training's
                        self.warn(
                            f"tracker-failed/{job.tracker}",
                            f"FeatureVisualizer could not log to {job.tracker} at epoch {job.epoch} "
                            f"({type(error).__name__}: {error}); training goes on, the files beside the run hold what "
                            "the tracker lacks.",
                        )
            finally:
                seconds = time.perf_counter() - started
                self.seconds += seconds
                self._running = None
                if self.on_written is not None:
                    try:
                        self.on_written(seconds)
                    except Exception:  # the budget's bookkeeping: nothing to tell a user
                        pass
                self._queue.task_done()

    def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait up to ``timeout`` seconds for every queued write; drop (and name) what is left then. Whether every
        write was made."""
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks and (left := deadline - time.monotonic()) > 0:
                done.wait(left)
        running, dropped = self._running, self._drop()
        if running is None and not dropped:
            return True
        cut = f"; {_named([running])} may be cut short as the process ends" if running is not None else ""
        self.warn(
            "tracker-lost",
            f"FeatureVisualizer waited {timeout:.0f} s for its tracker writes as the run ended; "
            f"{_named(dropped) or 'none queued'} not logged{cut}. The files beside the run hold them.",
        )
        return False

    def stop(self) -> None:
        """Training failed or was interrupted: drop every write not started, saying which (the running one goes on
        while the process does)."""
        running, dropped = self._running, self._drop()
        if dropped:
            going = f"; {_named([running])} is still being written" if running is not None else ""
            self.warn(
                "tracker-stopped",
                f"Training stopped: FeatureVisualizer's queued writes to {_named(dropped)} are not logged{going}. "
                "The files beside the run hold them.",
            )

    def _drop(self) -> list[_Job]:
        dropped = []
        while True:
            try:
                dropped.append(self._queue.get_nowait())
            except queue.Empty:
                return dropped
            self._queue.task_done()

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickling the callback) starts with no thread and nothing queued."""
        return {"warn": self.warn, "on_written": self.on_written, "capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["warn"], state["on_written"], state["capacity"])  # type: ignore[misc]


class QueuedTracker:
    """What the tracker sinks share: an epoch's client calls, collected with :meth:`later` and handed to the
    ``writer`` at :meth:`send` (without a writer, made at once, in the caller's thread).

    Subclasses set :attr:`tracker` (the name warnings use) and make their client calls in methods that
    :meth:`later` queues, so a subclass can replace one (a test's slow client).
    """

    tracker = "a tracker"
    receives_module_metrics = True  # the trackers' Lightning loggers log LightningModule.log's scalars
    projector_dir: str | None = None

    def __init__(self, writer: TrackerWriter | None):
        self.writer = writer
        self._writes: list[Write] = []
        self._epoch = 0

    def later(self, call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Queue ``call(*args, **kwargs)`` for this epoch."""
        self._writes.append(partial(call, *args, **kwargs))

    def send(self) -> None:
        """Hand this epoch's calls to the writer."""
        writes, self._writes = self._writes, []
        if self.writer is not None:
            self.writer.submit(self.tracker, self._epoch, writes)
        else:
            for write in writes:
                write()
