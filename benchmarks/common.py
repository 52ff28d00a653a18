"""Timing and peak-memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reexec_with_fixed_mmap_threshold() -> None:
    """Re-run this script with glibc's mmap threshold fixed at 64 KiB (Linux only).

    By default glibc raises the threshold after large frees, so freed buffers stay
    resident and the peak-RSS deltas of later measurements read too low. With a fixed
    threshold every buffer over 64 KiB is mapped and unmapped on its own, and the
    resident high-water mark follows the live memory of each measurement.
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory added while ``fn`` runs, in MiB (Linux; NaN elsewhere).

    Resets the kernel's high-water mark through ``/proc/self/clear_refs``.
    """
    if not _CLEAR_REFS.exists():
        return float("nan")
    gc.collect()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return float("nan")
    base = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - base) / 1024.0


def time_call(fn: Callable[[], object], *, repeats: int = 5, min_time: float = 0.2) -> float:
    """Median seconds per call over ``repeats`` rounds (each round >= ``min_time``)."""
    fn()  # warm-up
    rounds = []
    for _ in range(repeats):
        n = 0
        start = time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rounds.append(elapsed / n)
    return statistics.median(rounds)
