"""Timing and peak-memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def fixed_mmap_env() -> dict[str, str]:
    """The environment for a child process that measures peak memory (Linux, glibc).

    By default glibc raises its mmap threshold after large frees, so freed buffers stay
    resident and the peak-RSS deltas of later measurements read too low. With the
    threshold fixed at 64 KiB every larger buffer is mapped and unmapped on its own and
    the resident high-water mark follows live memory. It also makes every large
    temporary pay its page faults, so timings are taken in the parent, without it.
    """
    return dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")


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


def fwd_bwd(forward: Callable[[], torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A call running ``forward`` and a backward pass of ones, then clearing ``inputs``' gradients."""

    def call() -> None:
        out = forward()
        out.backward(torch.ones_like(out))
        for x in inputs:
            x.grad = None

    return call


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
