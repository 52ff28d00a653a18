"""NIfTI reader and writer (``.nii``, ``.nii.gz``) through nibabel.

NIfTI-1 stores the voxel -> world matrix (``sform``) in float32, which moves a 250 mm origin by
up to ~1.5e-5 mm. So that a round trip keeps the float64 affine exactly, :func:`write_nifti`
also stores it, as JSON, in a NIfTI "comment" extension; :func:`read_nifti` uses that copy only
when it agrees with the header's ``sform`` to float32 precision (a file whose header another
tool has since changed is read from its header). Other tools read the header as usual.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ParameterError, ShapeError, import_optional
from ..io._atomic import write_atomic
from .volume import MODALITIES, Volume

__all__ = ["read_nifti", "write_nifti"]

PathLike = str | os.PathLike[str]

_EXT_CODE_COMMENT = 6
_EXT_KEY = "anatomy.affine"
_LABEL_INTENT = "label"  # NIFTI_INTENT_LABEL (1002)
# metres / microns in the header's xyzt_units are converted to millimetres
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}


def _nibabel() -> Any:
    return import_optional("nibabel", "scans", "Reading and writing NIfTI files")


def is_nifti_path(path: PathLike) -> bool:
    name = Path(os.fspath(path)).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: PathLike, *, modality: str | None = None) -> Volume:
    """Read a NIfTI-1/2 file into a :class:`Volume` (data scaled by ``scl_slope``/``scl_inter``).

    A file whose header carries the NIfTI "label" intent (as :func:`write_nifti` writes label
    maps) is read with modality ``"labels"``; pass ``modality`` to override. A 4D file with one
    frame is read as 3D; a 2D image as ``(X, Y, 1)``. Raises :class:`ModelFileError` naming the
    file when it is missing, not NIfTI, truncated or has more than one frame.
    """
    nib = _nibabel()
    p = Path(os.fspath(path))
    if not p.is_file():
        raise ModelFileError(f"NIfTI file {p} does not exist (or is not a file).")
    try:
        img = nib.load(p, mmap=False)
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises ImageFileError, ValueError, EOFError, zlib/gzip errors
        raise ModelFileError(
            f"cannot read NIfTI file {p}: {type(exc).__name__}: {exc}. The file is truncated, damaged or not NIfTI."
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ModelFileError(f"{p} is a {type(img).__name__}, not a NIfTI image.")
    if data.ndim == 2:
        data = data[:, :, None]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ShapeError(
            f"NIfTI file {p} holds a {data.ndim}D array of shape {data.shape}; a Volume is 3D. Split the "
            f"frames first (e.g. nibabel.four_to_three)."
        )
    header = img.header
    affine = np.asarray(img.affine, dtype=np.float64)
    space_unit = header.get_xyzt_units()[0]
    affine[:3, :] *= _UNIT_TO_MM.get(space_unit, 1.0)
    stored = _stored_affine(header)
    if stored is not None and space_unit in ("mm", "unknown") and np.allclose(stored, affine, rtol=1e-6, atol=1e-4):
        affine = stored
    if modality is None:
        modality = "labels" if header.get_intent()[0] == _LABEL_INTENT else "unknown"
    elif modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    meta = {
        "source": str(p),
        "format": "nifti2" if isinstance(img, nib.Nifti2Image) else "nifti1",
        "sform_code": int(header["sform_code"]),
        "qform_code": int(header["qform_code"]),
        "space_unit": space_unit,
    }
    return Volume(data, affine, modality, meta)


def _stored_affine(header: Any) -> np.ndarray | None:
    for ext in header.extensions:
        if ext.get_code() != _EXT_CODE_COMMENT:
            continue
        raw = ext.get_content()
        try:
            payload = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
            affine = np.array(payload[_EXT_KEY], dtype=np.float64)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if affine.shape == (4, 4) and np.all(np.isfinite(affine)):
            return affine
    return None


def _label_array(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise ParameterError(
                "write_nifti(labels=True) needs whole-number labels; the data has fractions, NaN or Inf. "
                "Round it first (np.rint) or write it as an image (labels=False)."
            )
    if data.size == 0:
        return data.astype(np.uint8)
    lo, hi = float(data.min()), float(data.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return data.astype(dtype)
    raise ParameterError(f"label values span [{lo}, {hi}], beyond int32; renumber the labels first.")


def _image_array(data: np.ndarray) -> np.ndarray:
    """The array as stored: same values, in a dtype NIfTI tools read (bool -> uint8, float16 -> float32,
    64-bit integers -> int32 when the values fit)."""
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    if data.dtype.kind in "iu" and data.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        if data.size == 0 or (int(data.min()) >= info.min and int(data.max()) <= info.max):
            return data.astype(np.int32)
        if data.dtype == np.uint64 and int(data.max()) > np.iinfo(np.int64).max:
            raise ParameterError("uint64 voxel values above 2**63 - 1 cannot be stored in NIfTI; rescale them first.")
        return data.astype(np.int64)
    return data


def write_nifti(volume: Volume, path: PathLike, *, labels: bool = False, overwrite: bool = False) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; return the path.

    Images keep their values exactly and, mostly, their dtype (float64 stays float64, int16 stays int16;
    booleans become uint8, float16 float32, and 64-bit integers int32 when the values fit).
    ``labels=True`` (or a volume whose modality is ``"labels"``) stores whole-number labels in the
    smallest of uint8/int16/int32 and marks the file with the NIfTI "label" intent. The affine
    goes to ``sform`` and ``qform`` (code 1, scanner; the qform drops any shear) and, exactly, to
    a comment extension (see the module notes); units are millimetres.

    Refuses to replace an existing file unless ``overwrite=True``, and never replaces the file the
    volume was read from. A failing write leaves no file behind.
    """
    nib = _nibabel()
    if not isinstance(volume, Volume):
        raise ParameterError(f"write_nifti needs a Volume; got {type(volume).__name__}.")
    target = Path(os.fspath(path))
    if not is_nifti_path(target):
        raise ParameterError(f"NIfTI file names end in .nii or .nii.gz; got {target.name!r}.")
    source = volume.meta.get("source")
    if source is not None and target.exists() and os.path.samefile(source, target):
        raise ParameterError(f"refusing to overwrite {target}: the volume was read from it; write to another path.")
    if target.exists() and not overwrite:
        raise ParameterError(f"{target} exists; pass overwrite=True to replace it.")
    labels = labels or volume.modality == "labels"
    data = np.asarray(volume.data)
    data = _label_array(data) if labels else _image_array(data)
    img = nib.Nifti1Image(np.ascontiguousarray(data), volume.affine, dtype=data.dtype)
    header = img.header
    header.set_data_dtype(data.dtype)
    img.set_sform(volume.affine, code="scanner")
    img.set_qform(volume.affine, code="scanner")
    header.set_xyzt_units(xyz="mm")
    header["scl_slope"] = 1.0
    header["scl_inter"] = 0.0
    if labels:
        header.set_intent(_LABEL_INTENT)
    payload = json.dumps({_EXT_KEY: volume.affine.tolist()}).encode("utf-8")
    header.extensions.append(nib.nifti1.Nifti1Extension(_EXT_CODE_COMMENT, payload))
    raw = _serialize(img)
    if target.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)  # level 1, as nibabel writes .nii.gz
    return write_atomic(target, raw, [volume.data])


def _serialize(img: Any) -> bytes:
    """The single-file (``.nii``) bytes of a nibabel image."""
    return bytes(img.to_bytes())
