"""Rendering reports in a child process, so that they take no time from the training process.

Drawing figures and fitting t-SNE maps is Python-heavy: on a thread of the training process it
holds the GIL that the training loop needs between its kernels, and slows it more than its share
of the CPU. A child process has its own interpreter, and runs at the lowest CPU priority, so on a
busy CPU it takes the cycles training leaves.

The child is a plain ``python -c`` process, not a ``multiprocessing`` one: that would import the
user's ``__main__`` again (and train again where a script has no ``if __name__ == "__main__"``
guard). Jobs and reports travel pickled over a socket pair; tensors go by value (torch's shared
memory handles would need a ``multiprocessing`` parent). POSIX only: elsewhere reports render on
the worker thread as before.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import traceback
import warnings
from multiprocessing.connection import Connection
from typing import Any

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.report.reporter import EpochJob, Report, Reporter
from lightning_featviz.report.settings import ReportSettings

NICENESS = 19  # the lowest priority: the child runs on what training leaves of the CPU


def can_render_in_a_process() -> bool:
    """Whether reports can render in a child process here (POSIX: socket pairs, inheritable fds)."""
    return os.name == "posix"


class RenderProcess:
    """A child process that renders :class:`EpochJob`\\ s into :class:`Report`\\ s, one at a time.

    It keeps its own :class:`Reporter` and :class:`MapTracker` (warm-started maps) from job to job;
    :meth:`render` returns the tracker's state with each report, for checkpoints.

    Args:
        options: what to report.
        maps: the tracker whose settings and maps the child starts from.
        log_dir: the run's log dir, for CSV exports.
    """

    def __init__(self, options: ReportSettings, maps: MapTracker, log_dir: str | None):
        ours, theirs = socket.socketpair()
        code = (
            "import sys; sys.path[:0] = sys.argv[2:]; "
            "from lightning_featviz.runtime.render_process import serve; serve()"
        )
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), *sys.path],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        settings = (maps.perplexity, maps.seed, maps.backend)  # threads: per job
        self._send((options, settings, maps.state_dict(), log_dir))

    def render(self, job: EpochJob, threads: int = 1) -> tuple[Report, dict[str, Any]]:
        """Render ``job`` in the child on ``threads`` threads (more once training no longer needs
        the cores): its report, and the child's map tracker state after it.

        Raises:
            RuntimeError: the child ended (killed, out of memory, or it could not start) before it answered.
        """
        self._send((job, threads))
        try:
            return pickle.loads(self._connection.recv_bytes())
        except (EOFError, OSError) as error:
            raise self._ended() from error

    def _send(self, message: Any) -> None:
        try:
            self._connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as error:
            raise self._ended() from error

    def _ended(self) -> RuntimeError:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"The report process ended unexpectedly (exit code {code}).")

    def close(self, wait: bool = True) -> None:
        """Stop the child: let it finish and exit (``wait``), or kill it at once."""
        if not wait:
            self._process.kill()
        self._connection.close()  # the child reads the end of its input and exits
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def serve() -> None:
    """The child's loop: read jobs from the socket given as ``argv[1]``, answer each with its report."""
    import torch

    connection = Connection(int(sys.argv[1]))
    os.nice(NICENESS)
    options, (perplexity, seed, backend), state, log_dir = pickle.loads(connection.recv_bytes())
    maps = MapTracker(perplexity, seed, backend)
    maps.load_state_dict(state)
    reporter = Reporter(options, maps, log_dir)
    while True:
        try:
            job, threads = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):  # the training process closed the socket (or ended): done
            return
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
        connection.send_bytes(payload)
