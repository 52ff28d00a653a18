"""2D slice stacks (a folder of PNG/TIFF images, or a multi-page TIFF) -> :class:`Volume` (Pillow).

Images carry no position, so the voxel size must be given: ``spacing=(sx, sy, sz)`` in mm (e.g.
``(0.48, 0.48, 1.0)`` for LUCY). File ``n`` of the natural sort order (``slice_2`` before
``slice_10``) becomes ``data[:, :, n]``; image column ``c`` / row ``r`` become voxel ``i`` / ``j``.
The affine is ``diag(sx, sy, sz, 1)``: voxel axes along the world axes, first voxel at the origin.

Grey images are read as they are stored: 8-bit (``uint8``), 16-bit (``uint16``), 32-bit integer
(``int32``) or float (``float32``); 1-bit images become ``uint8`` 0/1. Colour (RGB, RGBA, palette)
images raise :class:`ModelFileError` unless ``color="luminance"``, which converts them with
Pillow's ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``) to ``uint8``. Every slice must
have the same size and the same kind of pixels; the error names the first one that does not.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ParameterError, import_optional
from .volume import MODALITIES, Volume

__all__ = ["SLICE_SUFFIXES", "natural_key", "read_slices"]

PathLike = str | os.PathLike[str]

SLICE_SUFFIXES = (".png", ".tif", ".tiff")
_GREY = {"L": np.uint8, "1": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.int32,
         "F": np.float32}
_COLOR_MODES = ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``slice_2`` before ``slice_10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name) if part]


def _pillow() -> Any:
    return import_optional("PIL.Image", "scans", "Reading PNG/TIFF slice stacks", pip_name="pillow")


def slice_files(folder: Path) -> list[Path]:
    """The PNG/TIFF files of a folder (not hidden), in natural order."""
    files = [
        f for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SLICE_SUFFIXES
    ]
    return sorted(files, key=lambda f: natural_key(f.name))


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    if spacing is None:
        raise ParameterError(
            "a PNG/TIFF slice stack carries no voxel size: pass spacing=(sx, sy, sz) in mm, e.g. "
            "spacing=(0.48, 0.48, 1.0) (in-plane pixel size, then the distance between slices)."
        )
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError as exc:
        raise ParameterError(f"spacing must be three numbers (sx, sy, sz) in mm; got {spacing!r}.") from exc
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ParameterError(f"spacing must be three positive finite numbers (sx, sy, sz) in mm; got {spacing!r}.")
    return (values[0], values[1], values[2])


def read_slices(
    path: PathLike | Sequence[PathLike],
    *,
    spacing: Any = None,
    modality: str | None = None,
    color: str = "error",
) -> Volume:
    """Read a folder of PNG/TIFF slices (or a list of files, or one multi-page TIFF); see module notes."""
    image_mod = _pillow()
    sx, sy, sz = _check_spacing(spacing)
    if color not in ("error", "luminance"):
        raise ParameterError(f"color must be 'error' or 'luminance'; got {color!r}.")
    if modality is None:
        modality = "unknown"
    elif modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    if isinstance(path, (str, os.PathLike)):
        p = Path(os.fspath(path))
        if p.is_dir():
            files = slice_files(p)
            if not files:
                raise ModelFileError(f"folder {p} holds no PNG/TIFF slices ({', '.join(SLICE_SUFFIXES)}).")
        elif p.is_file():
            files = [p]
        else:
            raise ModelFileError(f"slice path {p} does not exist.")
        source = str(p)
    else:
        files = [Path(os.fspath(f)) for f in path]
        if not files:
            raise ModelFileError("no slice files given.")
        source = f"{len(files)} slice files"
    slices: list[np.ndarray] = []
    names: list[str] = []
    for f in files:
        for k, arr in enumerate(_read_frames(image_mod, f, color)):
            name = f"{f}" if k == 0 else f"{f} (page {k})"
            if slices and (arr.shape != slices[0].shape or arr.dtype != slices[0].dtype):
                raise ModelFileError(
                    f"slice {name} is {arr.shape[1]}x{arr.shape[0]} pixels of {arr.dtype}, but {names[0]} is "
                    f"{slices[0].shape[1]}x{slices[0].shape[0]} of {slices[0].dtype}: every slice of a stack must "
                    f"match."
                )
            slices.append(arr)
            names.append(name)
    data = np.stack([s.T for s in slices], axis=-1)
    affine = np.diag([sx, sy, sz, 1.0])
    meta = {"source": source, "format": "slices", "files": [str(f) for f in files]}
    return Volume(data, affine, modality, meta)


def _read_frames(image_mod: Any, f: Path, color: str) -> list[np.ndarray]:
    frames = []
    try:
        with image_mod.open(f) as img:
            for k in range(getattr(img, "n_frames", 1)):
                img.seek(k)
                frames.append(_grey(img.copy(), f, color))
    except ModelFileError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError("image file is truncated"), SyntaxError, ...
        raise ModelFileError(
            f"cannot read slice {f}: {type(exc).__name__}: {exc} (truncated, damaged or not an image)."
        ) from exc
    return frames


def _grey(img: Any, f: Path, color: str) -> np.ndarray:
    mode = img.mode
    if mode in _GREY:
        return np.asarray(img).astype(_GREY[mode])
    if mode not in _COLOR_MODES:
        raise ModelFileError(f"slice {f} has pixel mode {mode}, not 8/16/32-bit grey, float or colour; convert it.")
    if color != "luminance":
        raise ModelFileError(
            f"slice {f} is a colour image (mode {mode}); convert it to grey first or pass color='luminance' "
            f"(ITU-R 601-2 luma, uint8)."
        )
    return np.asarray(img.convert("L"), dtype=np.uint8)
