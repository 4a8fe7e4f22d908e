"""Where and when rank 0's reports run: now, on a background thread, or in a report process.

The callback hands each analysed epoch to :meth:`ReportScheduler.submit` and says when training is
done (:meth:`ReportScheduler.drain`) or has failed (:meth:`ReportScheduler.close`). The scheduler
owns the worker thread and the report process, and falls back from the process to the thread when
the process cannot start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.report.reporter import Destination, EpochJob, Report, Reporter
from lightning_featviz.runtime.render_process import RenderProcess, can_render_in_a_process
from lightning_featviz.runtime.worker import BackgroundWorker

Warn = Callable[[str, str], None]


class ReportScheduler:
    """Runs reports in epoch order: in the caller's thread, or (``background``) on a worker thread that
    renders in a child process where it can (POSIX).

    Args:
        maps: the t-SNE state the reports continue; a report process sends its new state back.
        warn: ``warn(key, message)``, warning once per key.
        on_report: ``on_report(job, report, seconds)`` for every written report (on the thread that wrote it;
            ``seconds``: how long it took to render).
    """

    def __init__(self, maps: MapTracker, warn: Warn, on_report: Callable[[EpochJob, Report, float], None]):
        self._maps = maps
        self._warn = warn
        self._on_report = on_report
        self._worker = BackgroundWorker()
        self._reporter: Reporter | None = None  # set by `start`, when the log dir is known
        self._log_dir: str | None = None
        self.renderer: RenderProcess | None = None  # started with the first background report
        self.background = False
        self._process_works = True  # until one fails before its first report
        self._finishing = False  # training is done: the reports still queued may use every core

    def start(self, reporter: Reporter, log_dir: str | None, background: bool) -> None:
        """A new fit or validate: where reports go and whether they run in the background."""
        self._reporter, self._log_dir, self.background = reporter, log_dir, background
        self._finishing = False

    def submit(self, job: EpochJob, destination: Destination) -> None:
        """Report ``job`` now, or queue it (background). Raises the error of this report, or (background) of
        an earlier one."""
        if self.background:
            self._worker.submit(self._report, job, destination)
        else:
            self._report(job, destination)

    def drain(self) -> None:
        """Wait for every queued report; nothing trains meanwhile, so those not yet started use every core."""
        self._finishing = True
        self._worker.drain()

    def close(self, wait: bool) -> None:
        """Stop the thread and the report process; ``wait=False`` (training failed) drops reports not started."""
        self._worker.close(wait)
        self._stop_renderer(wait)

    def _stop_renderer(self, wait: bool) -> None:
        if self.renderer is not None:
            self.renderer.close(wait)
            self.renderer = None

    def _report(self, job: EpochJob, destination: Destination) -> None:
        started = time.perf_counter()
        report = self._render(job)
        seconds = time.perf_counter() - started
        destination.write(report, job.step, job.results.epoch)
        for key, message in report.warnings:
            self._warn(key, message)
        self._on_report(job, report, seconds)
        if report.error is not None:
            raise report.error

    def _render(self, job: EpochJob) -> Report:
        """Render in the report process (background, POSIX), else in this one."""
        assert self._reporter is not None  # `start` ran: the epoch was analysed
        if not (self.background and self._process_works and can_render_in_a_process()):
            return self._reporter.render(job)
        started = self.renderer is None
        try:
            if self.renderer is None:
                self.renderer = RenderProcess(self._reporter.options, self._maps, self._log_dir)
            threads = (os.cpu_count() or 1) if self._finishing else 1
            report, maps = self.renderer.render(job, threads)
        except (OSError, RuntimeError) as error:
            self._stop_renderer(wait=False)
            if not started:  # it worked, then died: this report is lost; the next starts a new process
                return Report(error=error)
            self._process_works = False
            self._warn(
                "report-process",
                f"FeatureVisualizer could not start its report process ({error}); reports render on a thread "
                "of the training process instead.",
            )
            return self._reporter.render(job)
        self._maps.load_state_dict(maps)  # for checkpoints
        return report

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickling the callback) starts with no thread and no report process."""
        state = dict(self.__dict__)
        state["renderer"] = None
        return state
