"""Many scans: find them (:func:`find_scans`), register each in local processes or on a Dask cluster
(:func:`run_registrations`), resumable.

* A finished scan's folder (``OUT/<subject>/<session>`` or ``OUT/<name>``) is skipped on the next run;
  leftovers of interrupted attempts (``*.partial-*``) are removed first.
* Local: a process pool of ``workers`` processes, each with its share of the cores as torch threads
  (``workers=0``: in this process). A worker that dies (out
  of memory, killed) breaks the pool: the pool is rebuilt and the scans it held are submitted again, up
  to ``retries`` times each.
* Dask: ``scheduler`` is the address of a running ``distributed`` scheduler (``tcp://host:8786``) or a
  ``Client``; each scan is one task with ``retries``; the scheduler reschedules the tasks of a lost worker.
* None is lost: every scan ends as ``done``, ``skipped`` or ``failed`` (with the reason) in the returned
  list. None is duplicated: each attempt writes its own folder and only the first to finish is renamed
  into place (:func:`~anatomy.pipeline.register_scan.register_scan`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ModelFileError, ParameterError
from .register_scan import PARTIAL, register_scan

__all__ = ["ScanJob", "ScanResult", "find_scans", "run_registrations"]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
Progress = Callable[["ScanResult", int, int], None]


@dataclass(frozen=True)
class ScanJob:
    """One scan to register: ``name`` is its result folder below the output (``sub-000/ses-pre``)."""

    name: str
    scan: str
    labels: str | None = None
    landmarks: dict[str, list[float]] | None = None


@dataclass
class ScanResult:
    """How one scan ended: ``status`` ``done`` / ``skipped`` / ``failed``, with ``error`` for a failure."""

    job: ScanJob
    status: str
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    report: dict[str, Any] = field(default_factory=dict)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _manifest_jobs(manifest: Path, labels: str) -> list[ScanJob]:
    try:
        doc = json.loads(manifest.read_text())
        samples = doc["samples"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{manifest} is not a dataset manifest ({err!r}); see datasets/README.md.") from None
    root = manifest.parent
    jobs = []
    for entry in samples:
        files = entry.get("files", {})
        scan_key = next((k for k in ("ct", "mri", "scan") if k in files), None)
        if scan_key is None:
            raise ModelFileError(f"{manifest}: sample {entry.get('subject')}/{entry.get('session')} lists no scan "
                                 f"file (ct, mri or scan).")
        use_labels = "labels" in files and (labels == "always" or (labels == "mri" and scan_key == "mri"))
        marks = None
        if "joints" in files:  # the hand datasets' 21 keypoints (annotations a user would bring)
            marks = json.loads((root / files["joints"]).read_text()).get("keypoints")
        name = f"{entry.get('subject', 'sub')}/ses-{entry.get('session', '')}"
        jobs.append(ScanJob(name, str(root / files[scan_key]), str(root / files["labels"]) if use_labels else None,
                            marks))
    return jobs


def find_scans(path: str | os.PathLike[str], *, labels: str = "mri") -> list[ScanJob]:
    """The scans under ``path``: a scan file or DICOM folder (one job), a dataset folder or its
    ``manifest.json`` (every sample; the label map is used for MRI samples with ``labels="mri"``, for all
    with ``"always"``, never with ``"never"``), or a folder of NIfTI/NRRD/MHA files (one job each)."""
    if labels not in ("mri", "always", "never"):
        raise ParameterError(f"labels must be 'mri', 'always' or 'never', got {labels!r}.")
    p = Path(os.fspath(path))
    if not p.exists():
        raise ModelFileError(f"scan path {p} does not exist.")
    if p.is_file() and p.name == "manifest.json":
        return _manifest_jobs(p, labels)
    if p.is_dir() and (p / "manifest.json").is_file():
        return _manifest_jobs(p / "manifest.json", labels)
    if p.is_file():
        return [ScanJob(_stem(p), str(p))]
    volumes = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_VOLUME_SUFFIXES))
    if volumes:
        return [ScanJob(_stem(f), str(f)) for f in volumes]
    return [ScanJob(p.name, str(p))]  # a DICOM series folder


def _register(model: str, job: ScanJob, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """One scan in a worker (module level, so process pools and Dask can pickle it)."""
    fault = os.environ.get("ANATOMY_TEST_CRASH_ONCE")  # tests: the first attempt of a scan kills its worker
    if fault:
        marker = Path(fault) / job.name.replace("/", "_")
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(3)
    return register_scan(model, job.scan, Path(out) / job.name, labels=job.labels, landmarks=job.landmarks,
                         **options)


def _own_seconds(report: dict[str, Any], fallback: float) -> float:
    """The scan's own wall time (its report's), not the time since it was queued."""
    total = report.get("seconds", {}).get("total")
    return float(total) if isinstance(total, (int, float)) else fallback


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _clean(out: Path, jobs: Sequence[ScanJob]) -> None:
    for job in jobs:
        folder = out / job.name
        for stale in folder.parent.glob(f"{folder.name}{PARTIAL}-*") if folder.parent.exists() else ():
            shutil.rmtree(stale, ignore_errors=True)


def run_registrations(
    model: str,
    jobs: Sequence[ScanJob],
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    scheduler: Any = None,
    retries: int = 2,
    progress: Progress | None = None,
    **options: Any,
) -> list[ScanResult]:
    """Register ``jobs`` with ``model`` into ``out`` (see the module text); ``options`` go to
    :func:`~anatomy.pipeline.register_scan.register_scan` (``vertices``, ``free_form``, ``picture``)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ParameterError(f"workers must be an int >= 0 (0: in this process), got {workers!r}.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ParameterError(f"retries must be an int >= 0, got {retries!r}.")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ParameterError("two scans would share one result folder; give them distinct names.")
    root = Path(os.fspath(out))
    root.mkdir(parents=True, exist_ok=True)
    _clean(root, jobs)
    results: dict[str, ScanResult] = {}
    todo = []
    for job in jobs:
        if (root / job.name / "report.json").is_file():
            results[job.name] = ScanResult(job, "skipped")
        else:
            todo.append(job)
    total = len(jobs)

    def finish(result: ScanResult) -> None:
        results[result.job.name] = result
        if progress is not None:
            progress(result, len(results), total)

    if progress is not None:
        for i, skipped in enumerate(list(results.values()), 1):
            progress(skipped, i, total)
    if scheduler is not None:
        _run_dask(scheduler, model, todo, str(root), options, retries, finish)
    elif workers == 0:
        for job in todo:
            start = time.perf_counter()
            try:
                report = _register(model, job, str(root), options)
                finish(ScanResult(job, "done", time.perf_counter() - start, 1, report=report))
            except Exception as err:  # noqa: BLE001 - one bad scan must not stop the others
                finish(ScanResult(job, "failed", time.perf_counter() - start, 1, f"{type(err).__name__}: {err}"))
    else:
        _run_local(workers, model, todo, str(root), options, retries, finish)
    return [results[j.name] for j in jobs]


def _run_local(workers: int, model: str, jobs: Sequence[ScanJob], out: str, options: dict[str, Any], retries: int,
               finish: Callable[[ScanResult], None]) -> None:
    import multiprocessing

    attempts = {j.name: 0 for j in jobs}
    pending = list(jobs)
    while pending:
        ctx = multiprocessing.get_context("spawn")  # no forked torch threads
        # each worker gets its share of the cores: torch's default (all cores per process) oversubscribes them
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx, initializer=_worker_threads,
                                 initargs=(threads,)) as pool:
            started = {}
            futures: dict[Future[dict[str, Any]], ScanJob] = {}
            for job in pending:
                attempts[job.name] += 1
                started[job.name] = time.perf_counter()
                futures[pool.submit(_register, model, job, out, options)] = job
            pending = []
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures[fut]
                    secs = time.perf_counter() - started[job.name]
                    try:
                        report = fut.result()
                        finish(ScanResult(job, "done", _own_seconds(report, secs), attempts[job.name], report=report))
                    except BrokenProcessPool:
                        if attempts[job.name] <= retries:
                            pending.append(job)  # its worker died: a new pool runs it again
                        else:
                            finish(ScanResult(job, "failed", secs, attempts[job.name],
                                              f"its worker process died {attempts[job.name]} times"))
                    except Exception as err:  # noqa: BLE001
                        finish(ScanResult(job, "failed", secs, attempts[job.name], f"{type(err).__name__}: {err}"))


def _run_dask(scheduler: Any, model: str, jobs: Sequence[ScanJob], out: str, options: dict[str, Any], retries: int,
              finish: Callable[[ScanResult], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ParameterError("--scheduler needs Dask: pip install 'anatomy[dist]' (dask[distributed]).") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler, timeout="30s")
    try:
        started = time.perf_counter()
        futures = {client.submit(_register, model, job, out, options, retries=retries, pure=False,
                                 key=f"register-{job.name}-{os.urandom(4).hex()}"): job for job in jobs}
        for fut in as_completed(list(futures)):
            job = futures[fut]
            secs = time.perf_counter() - started
            try:
                report = fut.result()
                finish(ScanResult(job, "done", _own_seconds(report, secs), report=report))
            except Exception as err:  # noqa: BLE001 - KilledWorker, or the scan's own error after its retries
                finish(ScanResult(job, "failed", secs, error=f"{type(err).__name__}: {err}"))
    finally:
        if client is not scheduler:
            client.close()
