"""The callback's own TensorBoard event file, beside the logger's in the same log dir (TensorBoard shows both as
one run).

The callback's images, texts and scalars never go through the logger's ``SummaryWriter``: a failure of its
writer thread (a full disk) would end the fit at Lightning's next ``log_metrics``. Here a write is checked first
(:func:`~lightning_featviz.outputs.files.check_space` keeps room for Lightning's own files), a writer whose thread
failed is dropped and its error raised to the caller (who warns once), and the next write opens a new event file:
outputs resume when space returns. One writer per log dir per process, kept across epochs.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

from lightning_featviz.outputs.files import check_space, no_space_left

#: The end of the callback's event file names: ``events.out.tfevents.<time>.<host>.<pid>.<n>.featviz``.
SUFFIX = ".featviz"

_lock = threading.Lock()
_writers: dict[str, Any] = {}  # log dir -> torch.utils.tensorboard.FileWriter


def add_summary(log_dir: str, summary: Any, step: int) -> None:
    """Append a ``Summary`` at ``step`` to the callback's event file in ``log_dir``.

    Raises:
        OSError: the disk has no room for it (:class:`~lightning_featviz.outputs.files.NoSpaceLeft`), or the
            writer failed; nothing more is written to that file.
    """
    check_space(f"{log_dir}/events.out.tfevents{SUFFIX}", summary.ByteSize() + 64)
    with _lock:
        writer = _writers.get(log_dir)
        if writer is None:
            from torch.utils.tensorboard import FileWriter

            writer = _writers[log_dir] = FileWriter(log_dir, filename_suffix=SUFFIX)
        try:
            writer.add_summary(summary, step)
        except OSError as error:
            _drop(log_dir)
            raise (no_space_left(log_dir) if error.errno == errno.ENOSPC else error) from error


def flush(log_dir: str) -> None:
    """Write what is queued for ``log_dir``'s event file (a failed writer raises its error, and is dropped)."""
    with _lock:
        writer = _writers.get(log_dir)
        if writer is None:
            return
        try:
            writer.flush()
        except OSError as error:
            _drop(log_dir)
            raise (no_space_left(log_dir) if error.errno == errno.ENOSPC else error) from error


def close(log_dir: str | None) -> None:
    """Flush and close the event file of ``log_dir`` (None: every one); errors are dropped with the writer."""
    with _lock:
        for key in [key for key in _writers if log_dir is None or key == log_dir]:
            _drop(key)


def _drop(log_dir: str) -> None:
    writer = _writers.pop(log_dir)
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the writer's thread failed (a full disk): what it had queued is lost
        pass
