"""Phantom datasets on disk: the pieces shared by the head and hand generators, and the manifest.

A dataset folder holds one sub-folder per subject and session (``sub-000/ses-pre``,
``sub-000/ses-pose00``, ...) with NIfTI volumes, PLY meshes and JSON ground truth, and a
``manifest.json`` at the root, written last (a folder without it is an interrupted run). Every
file is written atomically. The manifest format is described field by field in
``datasets/README.md``; the generators are :func:`~anatomy.scans.datasets_head.make_head_dataset`
(LUCY-like CT) and :func:`~anatomy.scans.datasets_hand.make_hand_dataset` (MRI-Hand-like MRI).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ParameterError
from ..io._atomic import write_atomic
from ..io.mesh_export import write_ply
from .nifti import write_nifti
from .phantom_labels import PhantomTissue, grid_bytes, voxel_spacing
from .volume import Volume

__all__ = ["FORMAT_VERSION", "DatasetReport", "DatasetWriter", "check_count", "check_nonnegative", "memory_limit",
           "sample_seeds"]

FORMAT_VERSION = "1.0"  # of manifest.json; a new field is a minor change, a renamed/removed one a major
PathLike = str | os.PathLike[str]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DatasetReport:
    """What a generator wrote: the folder, its ``manifest.json``, the sample count, total bytes and seconds."""

    root: Path
    manifest: Path
    num_samples: int
    bytes: int
    seconds: float


def check_count(name: str, value: Any, minimum: int = 1, maximum: int = 100_000) -> int:
    """``value`` as an int in ``[minimum, maximum]`` or a :class:`ParameterError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise ParameterError(f"{name} must be a whole number in {minimum}..{maximum}; got {value!r}.")
    return int(value)


def check_nonnegative(**values: float) -> None:
    """Each keyword's value a finite number >= 0, or a :class:`ParameterError` naming it."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
                np.isfinite(value) and value >= 0):
            raise ParameterError(f"{name} must be a finite number >= 0; got {value!r}.")


def memory_limit(max_bytes: int | None) -> int:
    """``max_bytes``, or (``None``) 60 % of the memory available now (``MemAvailable`` of
    ``/proc/meminfo``; 2 GiB where that cannot be read)."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes <= 0:
            raise ParameterError(f"max_bytes must be a positive number of bytes or None; got {max_bytes!r}.")
        return int(max_bytes)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(0.6 * int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return 2 << 30


def sample_seeds(seed: int, *keys: int) -> tuple[torch.Generator, np.random.Generator]:
    """A torch and a numpy generator for one sample, from ``(seed, *keys)`` (numpy ``SeedSequence``):
    a sample's data depends on the seed and its own keys only, not on how many samples precede it."""
    state = np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1))), np.random.default_rng(int(state[1]))


def float_lists(params: Mapping[str, Any]) -> dict[str, Any]:
    """Tensors / arrays of a parameter dict as nested float lists (JSON)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().double().numpy()
        out[str(k)] = np.asarray(v, dtype=np.float64).tolist()
    return out


def label_codes() -> dict[str, int]:
    return {t.name: int(t) for t in PhantomTissue}




def check_supersample(value: Any) -> int:
    return check_count("supersample", value, 1, 8)


class DatasetWriter:
    """Writes one dataset folder: refuses a file or a non-empty folder before anything is written,
    checks the phantom grid fits ``max_bytes``, writes sample files and, last, the manifest."""

    def __init__(self, out: PathLike, spacing: Any, margin: float, max_bytes: int | None,
                 progress: Progress | None) -> None:
        self.root = Path(os.fspath(out))
        if self.root.exists() and not self.root.is_dir():
            raise ParameterError(f"out {str(self.root)!r} is a file; pass a new or empty folder.")
        if self.root.is_dir() and any(self.root.iterdir()):
            raise ParameterError(f"out {str(self.root)!r} is not empty; pass a new or empty folder (nothing was "
                                 f"written).")
        self.spacing = voxel_spacing(spacing)
        if not np.isfinite(margin) or margin < 0:
            raise ParameterError(f"margin must be >= 0 mm; got {margin}.")
        self.margin = float(margin)
        self.max_bytes = memory_limit(max_bytes)
        self.progress = progress
        self.samples: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def check_memory(self, outputs: Sequence[Any], slack_mm: float = 0.0) -> int:
        """Estimated peak bytes of the largest phantom of ``outputs`` (each sample's bounding box grown by
        ``slack_mm`` for the variation between samples); raises before anything is written."""
        need = 0
        grow = slack_mm + self.margin
        boxes = [(v.amin(0), v.amax(0)) for output in outputs for v in output.vertices.detach().cpu().double()]
        for lo, hi in boxes:  # every sample of every (batched) output
            shape, nbytes = grid_bytes(lo.numpy() - grow, hi.numpy() + grow, self.spacing)
            need = max(need, nbytes)
            if nbytes > self.max_bytes:
                raise ParameterError(
                    f"a {shape[0]}x{shape[1]}x{shape[2]} phantom at {self.spacing.tolist()} mm needs about "
                    f"{nbytes / 2**30:.1f} GiB, over the limit of {self.max_bytes / 2**30:.1f} GiB (max_bytes; by "
                    f"default 60 % of the available memory): use a coarser spacing or raise max_bytes (nothing "
                    f"was written).")
        return need

    def folder(self, subject: str, session: str) -> Path:
        path = self.root / subject / session
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def volume(self, folder: Path, name: str, volume: Volume) -> str:
        return self.rel(write_nifti(volume, folder / f"{name}.nii.gz", labels=volume.modality == "labels"))

    def meshes(self, folder: Path, output: Any, names: Sequence[str]) -> dict[str, str]:
        """One binary PLY per tissue (float64 world mm, the frame of the volumes)."""
        return {name: self.rel(write_ply(folder / f"{name}.ply", output.tissue(name)[0].detach().cpu().double(),
                                         output.faces(name).cpu())) for name in names}

    def json(self, path: Path, doc: Any) -> str:
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
        return self.rel(write_atomic(path, text.encode("utf-8")))

    def add(self, entry: dict[str, Any], seconds: float) -> None:
        self.samples.append(entry)
        if self.progress is not None:
            shape = "x".join(str(s) for s in entry["shape"])
            self.progress(f"{entry['subject']} {entry['session']}: {shape} voxels, {seconds:.1f} s "
                          f"({len(self.samples)} samples, {time.perf_counter() - self.started:.0f} s in all)")

    def finish(self, header: dict[str, Any]) -> DatasetReport:
        """Write ``manifest.json`` (``header`` + the shared fields + the samples) and report."""
        seconds = time.perf_counter() - self.started
        doc = {"format_version": FORMAT_VERSION, **header, "spacing_mm": self.spacing.tolist(),
               "margin_mm": self.margin, "max_bytes": self.max_bytes, "label_codes": label_codes(),
               "seconds": round(seconds, 2), "num_samples": len(self.samples), "samples": self.samples}
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
        path = write_atomic(self.root / "manifest.json", text.encode("utf-8"))
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return DatasetReport(self.root, path, len(self.samples), size, seconds)
