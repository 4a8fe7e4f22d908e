"""A background worker for the heavy, training-independent part of an epoch's report.

One thread runs jobs one at a time, in the order they were submitted, so an epoch's figures and
files are written in epoch order. At most ``max_pending`` jobs wait: a further submit blocks
until the oldest is done, so a slow report cannot pile up memory (each job holds an epoch's
bank). An exception in a job is kept and raised again from the next :meth:`submit` or
:meth:`drain` on the caller's thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundWorker:
    """Runs ``fn(*args)`` jobs on one daemon thread, in order, with a bounded backlog."""

    def __init__(self, max_pending: int = 2, name: str = "featviz-report"):
        if max_pending < 1:
            raise ValueError(f"Expected `max_pending` to be >= 1, but got {max_pending}.")
        self.max_pending = max_pending
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue a job, blocking while ``max_pending`` jobs wait. Once it is queued, raise the first
        exception an earlier job raised (the new job is not lost)."""
        error = self._collect(lambda: len(self._pending) >= self.max_pending)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._pending.append(self._executor.submit(fn, *args))
        if error is not None:
            raise error

    def _collect(self, must_wait: Callable[[], bool]) -> BaseException | None:
        """Pop finished jobs (and, while ``must_wait()``, wait for the oldest); return the first error."""
        error = None
        while self._pending and (self._pending[0].done() or must_wait()):
            failure = self._pending.popleft().exception()
            error = error or failure
        return error

    def drain(self) -> None:
        """Wait for every queued job, raising the first exception (the others still run)."""
        while self._pending:
            self._pending.popleft().result()

    def close(self, wait: bool = True) -> None:
        """Stop the thread. ``wait=False`` drops jobs not yet started (the running one finishes)."""
        if not wait:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=not wait)
            self._executor = None
        self._pending.clear()

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickling the callback, spawning processes) starts with no thread and no jobs."""
        return {"max_pending": self.max_pending, "_name": self._name, "_executor": None, "_pending": deque()}
