""":func:`read_volume`: one entry point that picks the reader from the path.

==========================================  ======================================
path                                        reader
==========================================  ======================================
``*.nii``, ``*.nii.gz``                     :func:`~anatomy.scans.read_nifti`
``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd``  :func:`~anatomy.scans.read_sitk` (SimpleITK)
``*.png``, ``*.tif``, ``*.tiff`` (one file)   :func:`~anatomy.scans.read_slices` (one slice / pages)
``*.dcm`` (one file)                        :func:`~anatomy.scans.read_dicom` (one slice)
a folder of PNG/TIFF files                  :func:`~anatomy.scans.read_slices` (needs ``spacing``)
any other folder                            :func:`~anatomy.scans.read_dicom`
==========================================  ======================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.errors import ModelFileError, ParameterError
from .dicom import dicom_files, read_dicom
from .nifti import is_nifti_path, read_nifti
from .sitk import SITK_SUFFIXES, read_sitk
from .slices import SLICE_SUFFIXES, read_slices
from .volume import Volume

__all__ = ["read_volume"]


def read_volume(
    path: str | os.PathLike[str],
    *,
    spacing: Any = None,
    modality: str | None = None,
    series_uid: str | None = None,
) -> Volume:
    """Read a scan from ``path`` (see the module table); ``spacing`` only for slice stacks, ``series_uid`` only
    for DICOM folders holding several series."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise ModelFileError(f"scan path {p} does not exist.")
    kind = _kind(p)
    if spacing is not None and kind != "slices":
        raise ParameterError(
            f"spacing= is only for PNG/TIFF slice stacks; {p} is read as {kind}, whose file carries its own voxel size."
        )
    if series_uid is not None and kind != "dicom":
        raise ParameterError(f"series_uid= is only for DICOM; {p} is read as {kind}.")
    if kind == "nifti":
        return read_nifti(p, modality=modality)
    if kind == "sitk":
        return read_sitk(p, modality=modality)
    if kind == "slices":
        return read_slices(p, spacing=spacing, modality=modality)
    return read_dicom(p, series_uid=series_uid, modality=modality)


def _kind(p: Path) -> str:
    if p.is_file():
        suffix = p.suffix.lower()
        if is_nifti_path(p):
            return "nifti"
        if suffix in SITK_SUFFIXES:
            return "sitk"
        if suffix in SLICE_SUFFIXES:
            return "slices"
        if suffix in (".dcm", ".ima", "") or _has_dicm_marker(p):
            return "dicom"
        raise ParameterError(
            f"cannot tell the format of {p.name!r}: expected .nii/.nii.gz, {'/'.join(SITK_SUFFIXES)}, "
            f"{'/'.join(SLICE_SUFFIXES)}, a DICOM file, or a folder (DICOM series or PNG/TIFF slices)."
        )
    files = dicom_files(p)
    if not files:
        raise ModelFileError(f"folder {p} is empty.")
    images = [f for f in files if f.suffix.lower() in SLICE_SUFFIXES]
    if images and len(images) == len(files):
        return "slices"
    if images:
        other = next(f for f in files if f.suffix.lower() not in SLICE_SUFFIXES)
        raise ModelFileError(
            f"folder {p} mixes PNG/TIFF slices ({images[0].name}, ...) with other files ({other.name}, ...); a slice "
            f"stack folder must hold only the slices."
        )
    if any(is_nifti_path(f) or f.suffix.lower() in SITK_SUFFIXES for f in files):
        raise ParameterError(f"folder {p} holds NIfTI/NRRD/MHA files; pass one of them, not the folder.")
    return "dicom"


def _has_dicm_marker(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
