"""The one way the callback writes a file: whole, or not at all, and never the last free bytes of a disk.

:func:`write_atomically` writes to a temporary name in the target's folder, flushes it to the disk where a reader
relies on it (``durable``), and renames it into place; on any failure (a full disk, an error in the caller's writer)
the temporary file is deleted. A reader (TensorBoard, the FEATVIZ tab, a resumed run) never sees half a file, and a
killed write leaves only a temporary name, which :func:`sweep_temporaries` deletes when the next run starts.

A disk the callback would fill would also stop Lightning's own writers (its event file, its checkpoints): the
callback keeps :data:`RESERVE_BYTES` free for them. A write that would leave less raises :class:`NoSpaceLeft`
(an ``OSError`` with ``errno.ENOSPC``) naming the path and the free space, and writes nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

#: The free space the callback leaves to Lightning's writers and checkpoints (bytes).
RESERVE_BYTES = 1 << 20
#: Temporary names end with this; a name ending with it is never a finished file.
TEMP_SUFFIX = ".featviz-tmp"


class NoSpaceLeft(OSError):
    """A write that would leave less than :data:`RESERVE_BYTES` free (or that ran out of space)."""


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system of ``folder`` (its nearest existing parent); a file system that reports no
    size at all (some network and FUSE mounts) counts as never full."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free if usage.total > 0 else 2**62


def no_space_left(path: str | Path, needed: int = 0) -> NoSpaceLeft:
    """The error of a write of ``needed`` more bytes to ``path`` that the free space does not allow."""
    free = free_bytes(Path(path).parent)
    return NoSpaceLeft(
        errno.ENOSPC,
        f"No space left for FeatureVisualizer's {path}: {free / 2**20:.1f} MiB free, it keeps "
        f"{RESERVE_BYTES / 2**20:.0f} MiB for Lightning's own files; its outputs resume when space is freed",
    )


def check_space(path: str | Path, needed: int) -> None:
    """Raise :class:`NoSpaceLeft` unless writing ``needed`` bytes beside ``path`` leaves the reserve free."""
    if free_bytes(Path(path).parent) - needed < RESERVE_BYTES:
        raise no_space_left(path, needed)


def write_atomically(path: str | Path, content: bytes | str | Callable[[Path], object], durable: bool = False) -> None:
    """Write ``path`` whole or not at all, making its folder.

    Args:
        path: the file to (re)place.
        content: its bytes, its UTF-8 text, or a function that writes the file it is given.
        durable: fsync the file before the rename (small files that others point into: indexes, configs).

    Raises:
        NoSpaceLeft: the write would leave less than :data:`RESERVE_BYTES` free (nothing is written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        if callable(content):
            content(temporary)
        else:
            check_space(path, len(content))
            temporary.write_bytes(content.encode() if isinstance(content, str) else content)
        if free_bytes(path.parent) < RESERVE_BYTES:  # what a writer function left
            raise no_space_left(path)
        if durable:
            with temporary.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC and not isinstance(error, NoSpaceLeft):
            raise no_space_left(path) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writes left under ``folder`` (of a process that no longer runs);
    return them."""
    swept = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(TEMP_SUFFIX) and not _writer_alive(name):
                (Path(parent) / name).unlink(missing_ok=True)
                swept.append(Path(parent) / name)
    return swept


def _writer_alive(name: str) -> bool:
    """Whether the process whose id the temporary ``name`` carries still runs (another run writing now)."""
    pid = name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    if os.name != "posix":  # no harmless probe there (os.kill ends the process): keep the file
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
