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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError

__all__ = ["fsync_dir", "remove_quietly", "write_atomic", "write_temp"]

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


def _check_not_input(path: Path, arrays: Sequence[Any]) -> None:
    if not path.exists():
        return
    for a in arrays:
        base = a
        while isinstance(base, np.ndarray) and not isinstance(base, np.memmap) and base.base is not None:
            base = base.base
        filename = getattr(base, "filename", None)
        if isinstance(base, np.memmap) and filename is not None:
            with contextlib.suppress(OSError):
                if os.path.samefile(filename, path):
                    raise ParameterError(
                        f"refusing to write {path}: an input array is memory-mapped from that file; write to "
                        f"another path or copy the array first (np.array(x))."
                    )


def write_atomic(path: str | os.PathLike[str], payload: bytes, inputs: Sequence[Any] = ()) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, fsync, rename):
    either the whole new file is there or the old one is untouched. ``inputs``: arrays the payload
    came from; refused if one is memory-mapped from ``path`` itself."""
    target = Path(os.fspath(path))
    _check_not_input(target, inputs)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {folder} does not exist; create it first.")
    tmp = write_temp(folder, target.name, payload)
    try:
        os.replace(tmp, target)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(folder)
    return target
