"""Atomic file writing shared by the model-file and mesh writers.

A payload is written to a new temporary file in the destination folder (so that the
final :func:`os.replace` is a rename within one file system), flushed and fsynced. The
temporary file is created with mode ``0o666`` filtered by the process umask, like a
file opened with ``open(path, "wb")``, so replacing it into place gives the usual
permissions.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_temp", "fsync_dir", "remove_quietly"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def write_temp(folder: Path, final_name: str, payload: bytes) -> Path:
    """Write ``payload`` to a fresh hidden temporary file in ``folder``; return its path."""
    for _ in range(100):
        tmp = folder / f".{final_name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file in {folder}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk where the platform allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists, ignoring errors."""
    with contextlib.suppress(OSError):
        os.unlink(path)
