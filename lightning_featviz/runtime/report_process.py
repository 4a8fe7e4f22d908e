"""Rendering reports in a child process, so that they take no time from the training process.

Drawing figures and fitting t-SNE maps is Python-heavy: on a thread of the training process it holds the GIL
that the training loop needs between its kernels, and slows it more than its share of the CPU. A child process
has its own interpreter and runs at the lowest CPU priority, so on a busy CPU it takes the cycles training leaves.

The child is a standard-library ``multiprocessing`` process of the ``spawn`` context (a fresh interpreter: no
copy of the parent's threads, CUDA state or locks). ``spawn`` would import the user's script again in the child
(as ``__mp_main__``) and, in a script without an ``if __name__ == "__main__":`` guard, train again: while the child
starts, :func:`_without_main_script` shows ``multiprocessing`` a ``__main__`` with no script to run (every other
attribute is the real one's). Jobs and reports travel over a pipe, pickled by value.

The child ignores SIGINT (Ctrl+C reaches the whole process group; the parent stops it), dies with its parent
(``PR_SET_PDEATHSIG`` on Linux, set before it imports anything heavy, and a check of its parent before every job
and every answer), so it never writes after the training process is gone. This module imports nothing heavy at
its top: the child imports it first.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the child only once it is sure to die with its parent: see `serve`
    from lightning_featviz.analysis.embedding import MapTracker
    from lightning_featviz.report.reporter import EpochJob, Report
    from lightning_featviz.report.settings import ReportSettings

NICENESS = 19  # the lowest priority: the child runs on what training leaves of the CPU
PR_SET_PDEATHSIG = 1  # prctl(2): the signal the child gets when its parent dies

_main_lock = threading.Lock()


class _MainWithoutScript(types.ModuleType):
    """Stands in for ``__main__`` while a child starts: no ``__file__`` and no ``__spec__``, so ``spawn`` runs no
    script in the child; any other attribute is read from the real ``__main__`` (pickle finds its classes)."""

    def __init__(self, main: types.ModuleType):
        super().__init__("__main__")
        self._featviz_main = main

    def __getattr__(self, name: str) -> Any:
        if name == "__file__":
            raise AttributeError(name)
        return getattr(self._featviz_main, name)


@contextlib.contextmanager
def _without_main_script() -> Iterator[None]:
    with _main_lock:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = _MainWithoutScript(main)
        try:
            yield
        finally:
            sys.modules["__main__"] = main


class ReportProcess:
    """A child process that renders :class:`EpochJob`\\ s into :class:`Report`\\ s, one at a time.

    It keeps its own :class:`Reporter` and :class:`MapTracker` (warm-started maps) from job to job;
    :meth:`render` returns the tracker's state with each report, for checkpoints.

    Args:
        options: what to report.
        maps: the tracker whose settings and maps the child starts from.
        log_dir: the run's log dir, for CSV exports.
    """

    def __init__(self, options: ReportSettings, maps: MapTracker, log_dir: str | None):
        context = multiprocessing.get_context("spawn")
        self._connection, theirs = context.Pipe()
        settings = (maps.perplexity, maps.seed)  # threads: per job
        self._process = context.Process(
            target=serve,
            # pickled here: tensors by value (torch would share them through handles that a killed child leaks)
            args=(theirs, os.getpid(), pickle.dumps((options, settings, maps.state_dict(), log_dir))),
            name="featviz-report",
            daemon=True,  # multiprocessing stops it when the training process exits
        )
        try:
            with _without_main_script():
                self._process.start()
        finally:
            theirs.close()  # the child holds its end: when it ends, a read here sees the end of the pipe

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def render(self, job: EpochJob, threads: int = 1) -> tuple[Report, dict[str, Any]]:
        """Render ``job`` in the child on ``threads`` threads (more once training no longer needs
        the cores): its report, and the child's map tracker state after it.

        Raises:
            RuntimeError: the child ended (killed, out of memory, or it could not start) before it answered.
        """
        try:
            self._connection.send_bytes(pickle.dumps((job, threads), protocol=pickle.HIGHEST_PROTOCOL))
            report, state = pickle.loads(self._connection.recv_bytes())
        except (EOFError, OSError) as error:
            self._process.join(timeout=5)
            raise RuntimeError(
                f"The report process ended unexpectedly (exit code {self._process.exitcode})."
            ) from error
        return report, state

    def close(self, wait: bool = True) -> None:
        """Stop the child: let it finish its job and exit (``wait``), or kill it at once."""
        if not wait:
            self._process.kill()
        self._connection.close()  # the child reads the end of its input and exits
        self._process.join(timeout=30 if wait else 5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _die_with_parent(parent: int) -> None:
    """Ignore Ctrl+C (the parent stops the child), and end when ``parent`` ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _check_parent(parent)


def _check_parent(parent: int) -> None:
    if os.getppid() != parent:  # the training process is gone: write nothing more
        os._exit(0)


def serve(connection: Connection, parent: int, start: bytes) -> None:
    """The child's loop: read jobs from ``connection``, answer each with its report and the maps' state.
    ``start``: the pickled report options, map settings, map state and log dir."""
    _die_with_parent(parent)  # before the imports below, which take seconds on a busy machine
    import torch

    from lightning_featviz.analysis.embedding import MapTracker
    from lightning_featviz.report.reporter import Reporter

    options, settings, state, log_dir = pickle.loads(start)
    with contextlib.suppress(OSError, AttributeError):  # (no os.nice on Windows)
        os.nice(NICENESS)
    perplexity, seed = settings
    maps = MapTracker(perplexity, seed)
    maps.load_state_dict(state)
    reporter = Reporter(options, maps, log_dir)
    while True:
        try:
            job, threads = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):  # the training process closed the pipe (or ended): done
            return
        _check_parent(parent)
        # One thread while training runs: at the lowest priority, a thread that shares a core with
        # training barely runs, and a parallel step would wait for it; one thread runs on whichever
        # core training leaves. Every core for the reports left when training is done.
        torch.set_num_threads(threads)
        maps.n_jobs = threads
        with warnings.catch_warnings(record=True) as caught:  # warned by the training process instead
            warnings.simplefilter("always")
            report = reporter.render(job)
        report.warnings += [(str(warning.message), str(warning.message)) for warning in caught]
        if report.error is not None and hasattr(report.error, "add_note"):  # Python 3.11+
            # The traceback does not travel; its text does.
            report.error.add_note("In the report process:\n" + "".join(traceback.format_exception(report.error)))
        try:
            payload = pickle.dumps((report, maps.state_dict()), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an error that does not pickle
            report.error = RuntimeError("".join(traceback.format_exception(report.error)))
            payload = pickle.dumps((report, maps.state_dict()), protocol=pickle.HIGHEST_PROTOCOL)
        _check_parent(parent)
        connection.send_bytes(payload)
