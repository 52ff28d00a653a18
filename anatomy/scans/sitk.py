"""NRRD / MetaImage (and any other format SimpleITK reads) -> :class:`Volume`, when SimpleITK is installed.

ITK images are in LPS+ with ``origin``, ``spacing`` and a 3x3 ``direction`` matrix: the voxel ->
world affine is ``[[D @ diag(spacing), origin], [0, 1]]``, converted here to RAS+ (x and y
negated). SimpleITK's arrays are ``(Z, Y, X)``; they are transposed to ``(X, Y, Z)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ParameterError, ShapeError, import_optional
from .volume import MODALITIES, Volume, lps_to_ras

__all__ = ["SITK_SUFFIXES", "read_sitk"]

PathLike = str | os.PathLike[str]

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _simpleitk() -> Any:
    return import_optional("SimpleITK", "scans", "Reading NRRD/MHA files")


def read_sitk(path: PathLike, *, modality: str | None = None) -> Volume:
    """Read a 2D/3D grey image with SimpleITK (NRRD, MHA/MHD, ...) into a :class:`Volume`."""
    sitk = _simpleitk()
    p = Path(os.fspath(path))
    if not p.is_file():
        raise ModelFileError(f"image file {p} does not exist (or is not a file).")
    try:
        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)
    except Exception as exc:  # SimpleITK raises RuntimeError for unreadable/truncated files
        raise ModelFileError(f"cannot read {p} with SimpleITK: {str(exc).strip()[-400:]}") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ShapeError(f"{p} has {img.GetNumberOfComponentsPerPixel()} components per voxel; a Volume is grey.")
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise ShapeError(f"{p} is a {dim}D image; a Volume is 3D (or a 2D image read as one slice).")
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.array(img.GetSpacing(), dtype=np.float64)
    origin = np.array(img.GetOrigin(), dtype=np.float64)
    affine_lps = np.eye(4)
    affine_lps[:dim, :dim] = direction * spacing  # column c scaled by spacing[c]
    affine_lps[:dim, 3] = origin
    data = arr.T if dim == 3 else arr.T[:, :, None]
    if modality is None:
        modality = "unknown"
    elif modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    meta = {"source": str(p), "format": p.suffix.lower().lstrip(".")}
    return Volume(np.ascontiguousarray(data), lps_to_ras(affine_lps), modality, meta)
