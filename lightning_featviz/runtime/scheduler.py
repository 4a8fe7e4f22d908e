"""Where and when rank 0's reports run: now, on a background thread, or in a report process.

The callback hands each analysed epoch to :meth:`ReportScheduler.submit` and says when training is
done (:meth:`ReportScheduler.drain`) or has failed (:meth:`ReportScheduler.close`). The scheduler
owns the worker thread and the report process; a report process that dies is started again once, and when
that one dies too the run's later reports are skipped with one warning (they never move into the training process).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.outputs import events
from lightning_featviz.outputs.files import sweep_temporaries
from lightning_featviz.report.reporter import Destination, EpochJob, Report, Reporter
from lightning_featviz.runtime.report_process import ReportProcess
from lightning_featviz.runtime.worker import BackgroundWorker

Warn = Callable[[str, str], None]

MAX_STARTS = 2  #: report processes per fit: the first, and one more after it died


class ReportScheduler:
    """Runs reports in epoch order: in the caller's thread, or (``background``) on a worker thread that
    renders in a child process.

    Args:
        maps: the t-SNE state the reports continue; a report process sends its new state back.
        warn: ``warn(key, message)``, warning once per key.
        on_report: ``on_report(job, report, seconds)`` for every written report (on the thread that wrote it;
            ``seconds``: how long it took to render).
    """

    #: Background reports render in a child process (False: on the worker thread, e.g. for a patched fault).
    in_a_process = True

    def __init__(self, maps: MapTracker, warn: Warn, on_report: Callable[[EpochJob, Report, float], None]):
        self._maps = maps
        self._warn = warn
        self._on_report = on_report
        self._worker = BackgroundWorker()
        self._reporter: Reporter | None = None  # set by `start`, when the log dir is known
        self._log_dir: str | None = None
        self.renderer: ReportProcess | None = None  # started with the first background report
        self.background = False
        self._starts = 0  # report processes started this fit
        self._skipping = False  # the report process died twice: reports are skipped
        self._closing = False  # stopped at once (training failed): a process that ends is no fault
        self._finishing = False  # training is done: the reports still queued may use every core

    def start(self, reporter: Reporter, log_dir: str | None, background: bool) -> None:
        """A new fit or validate: where reports go and whether they run in the background."""
        self._reporter, self._log_dir, self.background = reporter, log_dir, background
        self._finishing = self._skipping = self._closing = False
        self._starts = 0
        if log_dir is not None and os.path.isdir(log_dir):
            sweep_temporaries(log_dir)  # what writes killed with an earlier run left

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
        """Stop the thread and the report process; ``wait=False`` (training failed or was interrupted) kills the
        report process at once, drops the reports not started and does not wait for the running one."""
        if not wait:
            self._closing = True  # what the killed process leaves is no fault to warn of
            self._stop_renderer(wait=False)
        self._worker.close(wait)
        self._stop_renderer(wait)  # (again: one the running job may have started meanwhile)
        with contextlib.suppress(OSError):  # a full disk: said when it was written to
            events.close(None)

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
        """Render in the report process (background), else in this one. A report process that dies costs its
        report and is started again once; if that one dies too, the rest of the run's reports are skipped (their
        scalars are still written): they never move into the training process."""
        assert self._reporter is not None  # `start` ran: the epoch was analysed
        if not (self.background and self.in_a_process):
            return self._reporter.render(job)
        if self._closing or self._skipping:
            return Report()
        try:
            if self.renderer is None:
                self._starts += 1
                self.renderer = ReportProcess(self._reporter.options, self._maps, self._log_dir)
                if self._closing:  # stopped while it started
                    self._stop_renderer(wait=False)
                    return Report()
            threads = (os.cpu_count() or 1) if self._finishing else 1
            report, maps = self.renderer.render(job, threads)
        except (OSError, RuntimeError) as error:
            self._stop_renderer(wait=False)
            if self._closing:
                return Report()
            if self._starts < MAX_STARTS:  # this report is lost; the next starts a new process
                return Report(error=RuntimeError(f"{error} The next report starts a new one."))
            self._skipping = True
            self._warn(
                "report-process",
                f"FeatureVisualizer's report process failed again ({error}); the reports (figures, maps, files) of "
                f"the rest of this run are skipped from epoch {job.results.epoch} on, its scalars are still logged. "
                "Hint: a process killed by the kernel is often out of memory: lower `max_samples` or `maps.samples`.",
            )
            return Report()
        self._maps.load_state_dict(maps)  # for checkpoints
        return report

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickling the callback) starts with no thread and no report process."""
        state = dict(self.__dict__)
        state["renderer"] = None
        return state
