"""DICOM series reader (pydicom): one folder (or list of files) -> one :class:`Volume`.

* Files are grouped by ``SeriesInstanceUID``; a folder holding several series raises
  :class:`ModelFileError` listing them, and ``series_uid=`` picks one.
* Slices are sorted by their position along the slice normal (``ImagePositionPatient`` projected
  on ``row x column`` of ``ImageOrientationPatient``), not by file name or ``InstanceNumber``.
* Stored values are mapped to modality units with ``RescaleSlope``/``RescaleIntercept`` (Hounsfield
  units for CT), slice by slice. Integer slopes/intercepts give an integer array (int16 when it
  fits, else int32); others give float32.
* The affine is built in DICOM's LPS+ frame and converted to RAS+ (x and y negated). Its third
  column is the mean step between consecutive slice positions, so a gantry-tilted series (positions
  not along the normal) gets a sheared affine that places every voxel where the scanner put it;
  ``meta["gantry_tilt_deg"]`` reports the tilt and a :class:`UserWarning` is issued.
* Spacing: a gap that is a whole multiple (>= 2) of the typical slice step is a **missing slice**:
  :class:`ModelFileError` naming the files either side (``allow_gaps=True`` reads on). Any other
  departure from a uniform step (> 1 % or 1e-3 mm) is **non-uniform spacing**: read with the mean
  step, reported in ``meta["nonuniform_spacing"]`` and ``meta["slice_positions"]``, and warned.
* Files that are not DICOM, DICOM without pixel data (reports, presentation states), multi-frame
  or colour images, truncated pixel data, or slices whose size/orientation/pixel spacing differ
  from the rest raise :class:`ModelFileError` naming the file.

Patient identity (name, id, birth date) is never copied into ``meta``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, ParameterError, import_optional
from .volume import MODALITIES, Volume, lps_to_ras

__all__ = ["read_dicom"]

PathLike = str | os.PathLike[str]

_MODALITY = {"CT": "ct", "MR": "mri"}
_ORIENTATION_TOL = 1e-4  # direction cosines that differ by more are different orientations
_TILT_TOL_DEG = 0.01


def _pydicom() -> Any:
    return import_optional("pydicom", "scans", "Reading DICOM series")


def dicom_files(folder: Path) -> list[Path]:
    """The candidate files of a DICOM folder: regular, not hidden, not ``DICOMDIR``."""
    return sorted(
        f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
    )


def read_dicom(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    modality: str | None = None,
    allow_gaps: bool = False,
) -> Volume:
    """Read one DICOM series (a folder, or a list of files) into a :class:`Volume` (see module notes)."""
    pydicom = _pydicom()
    files = _list_files(path)
    datasets = [_read_file(pydicom, f) for f in files]
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    for f, ds in zip(files, datasets, strict=True):
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise ParameterError(f"series_uid {series_uid!r} is not among the series found:\n{_describe(by_series)}")
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        raise ModelFileError(
            f"{_where(path)} mixes {len(by_series)} DICOM series:\n{_describe(by_series)}\n"
            f"Pick one with read_dicom(..., series_uid='<uid>') (or read_volume(..., series_uid=...))."
        )
    else:
        chosen = next(iter(by_series.values()))
    return _build(pydicom, chosen, modality, allow_gaps, _where(path))


def _where(path: PathLike | Sequence[PathLike]) -> str:
    if isinstance(path, (str, os.PathLike)):
        return str(path)
    return f"the {len(path)} files given"


def _list_files(path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(os.fspath(path))
        if p.is_dir():
            files = dicom_files(p)
        elif p.is_file():
            files = [p]
        else:
            raise ModelFileError(f"DICOM path {p} does not exist.")
    else:
        files = [Path(os.fspath(f)) for f in path]
        for f in files:
            if not f.is_file():
                raise ModelFileError(f"DICOM file {f} does not exist (or is not a file).")
    if not files:
        raise ModelFileError(f"no files in DICOM folder {path}.")
    return files


def _read_file(pydicom: Any, f: Path) -> Any:
    try:
        ds = pydicom.dcmread(f)
    except pydicom.errors.InvalidDicomError as exc:
        raise ModelFileError(
            f"{f} is not a DICOM file (no 'DICM' marker). Move it out of the series folder or pass the list of "
            f"DICOM files."
        ) from exc
    except Exception as exc:  # truncated headers: EOFError, struct/OSError, ...
        raise ModelFileError(
            f"cannot read DICOM file {f}: {type(exc).__name__}: {exc} (truncated or damaged)."
        ) from exc
    if "SeriesInstanceUID" not in ds:
        raise ModelFileError(
            f"DICOM file {f} has no SeriesInstanceUID (a required attribute): it is truncated or damaged."
        )
    return ds


def _describe(by_series: dict[str, list[tuple[Path, Any]]]) -> str:
    lines = []
    for uid, items in by_series.items():
        ds = items[0][1]
        desc = str(ds.get("SeriesDescription", "")).strip()
        number = ds.get("SeriesNumber", "?")
        lines.append(
            f"  series_uid={uid!r}: {len(items)} files, SeriesNumber {number}, Modality {ds.get('Modality', '?')}"
            + (f", '{desc}'" if desc else "")
            + f" (e.g. {items[0][0].name})"
        )
    return "\n".join(lines)


def _check_image(f: Path, ds: Any) -> None:
    if "PixelData" not in ds:
        sop = str(getattr(ds.get("SOPClassUID", None), "name", ds.get("SOPClassUID", "unknown SOP class")))
        if "Image Storage" in sop:
            raise ModelFileError(f"{f} is a {sop} file without pixel data: it is truncated or damaged.")
        raise ModelFileError(
            f"{f} is a DICOM file without an image ({sop}); move it out of the series folder or pick the image "
            f"series with series_uid=."
        )
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        raise ModelFileError(
            f"{f} lacks {', '.join(missing)}: a slice of a 3D series needs its position, orientation and pixel "
            f"spacing (a localizer, secondary capture or screenshot is not a volume slice)."
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ModelFileError(
            f"{f} is a multi-frame (enhanced) DICOM image; this reader takes one slice per file. Convert it first "
            f"(e.g. dcm2niix) and read the NIfTI."
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ModelFileError(f"{f} is a colour image ({ds.get('PhotometricInterpretation')}); CT/MR slices are grey.")


def _build(pydicom: Any, items: list[tuple[Path, Any]], modality: str | None, allow_gaps: bool, where: str) -> Volume:
    for f, ds in items:
        _check_image(f, ds)
    f0, ds0 = items[0]
    iop0 = np.array(ds0.ImageOrientationPatient, dtype=np.float64)
    spacing0 = np.array(ds0.PixelSpacing, dtype=np.float64)
    size0 = (int(ds0.Rows), int(ds0.Columns))
    for f, ds in items[1:]:
        if (int(ds.Rows), int(ds.Columns)) != size0:
            raise ModelFileError(
                f"{f} is {int(ds.Rows)}x{int(ds.Columns)} pixels but {f0.name} is {size0[0]}x{size0[1]}: "
                f"not one volume."
            )
        if np.abs(np.array(ds.ImageOrientationPatient, dtype=np.float64) - iop0).max() > _ORIENTATION_TOL:
            raise ModelFileError(f"{f} has another ImageOrientationPatient than {f0.name}: not one volume.")
        if np.abs(np.array(ds.PixelSpacing, dtype=np.float64) - spacing0).max() > 1e-6:
            raise ModelFileError(f"{f} has another PixelSpacing than {f0.name}: not one volume.")
    row_dir, col_dir = iop0[:3], iop0[3:]  # direction of increasing column index, of increasing row index
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=np.float64) for _, ds in items])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    items = [items[i] for i in order]
    positions, depth = positions[order], depth[order]
    meta: dict[str, Any] = {"source": where, "format": "dicom", "files": [str(f) for f, _ in items]}
    steps = np.diff(depth)
    repeated = np.flatnonzero(steps < 1e-3)
    if repeated.size:
        i = int(repeated[0])
        raise ModelFileError(
            f"{items[i][0]} and {items[i + 1][0]} sit at the same slice position ({depth[i]:.3f} mm along the "
            f"normal): the series holds repeated slices (several echoes, phases or acquisitions). Split it first."
        )
    step = _slice_step(ds0, positions, steps, items, allow_gaps, meta)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * spacing0[1]  # PixelSpacing = (between rows, between columns)
    affine_lps[:3, 1] = col_dir * spacing0[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    data = _pixels(items)
    if modality is None:
        modality = _MODALITY.get(str(ds0.get("Modality", "")).upper(), "unknown")
    elif modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    meta.update(
        series_uid=str(ds0.get("SeriesInstanceUID", "")),
        dicom_modality=str(ds0.get("Modality", "")),
        series_description=str(ds0.get("SeriesDescription", "")),
        slice_positions=depth.tolist(),
    )
    return Volume(data, lps_to_ras(affine_lps), modality, meta)


def _slice_step(
    ds0: Any, positions: np.ndarray, steps: np.ndarray, items: list[tuple[Path, Any]], allow_gaps: bool,
    meta: dict[str, Any],
) -> np.ndarray:
    """The world step between consecutive slices (LPS); fills meta with tilt/spacing facts and warns."""
    iop = np.array(ds0.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    if len(items) == 1:
        dz = float(ds0.get("SpacingBetweenSlices", 0) or ds0.get("SliceThickness", 0) or 0.0)
        meta.update(gantry_tilt_deg=0.0, nonuniform_spacing=False, slice_spacing_from="header" if dz > 0 else "1 mm")
        return normal * (dz if dz > 0 else 1.0)
    typical = float(np.median(steps))
    tol = max(1e-3, 0.01 * typical)
    gaps = [
        i for i, s in enumerate(steps) if s > 1.5 * typical and abs(s / typical - round(s / typical)) * typical < tol
    ]
    if gaps and not allow_gaps:
        i = gaps[0]
        n_missing = round(steps[i] / typical) - 1
        raise ModelFileError(
            f"missing slice(s) in the DICOM series: {n_missing} slice(s) of {typical:.4g} mm missing between "
            f"{items[i][0]} and {items[i + 1][0]} ({len(gaps)} gap(s) in all). Find the missing files, or pass "
            f"allow_gaps=True to read it with the mean slice step (voxels then sit off their true positions)."
        )
    nonuniform = bool(np.abs(steps - typical).max() > tol)
    step = (positions[-1] - positions[0]) / (len(items) - 1)
    along = float(step @ normal)
    tilt = math.degrees(math.atan2(float(np.linalg.norm(step - along * normal)), along))
    meta.update(gantry_tilt_deg=tilt, nonuniform_spacing=nonuniform, slice_step_mm=float(np.linalg.norm(step)))
    if abs(tilt) > _TILT_TOL_DEG:
        warnings.warn(
            f"DICOM series {meta['source']} has a gantry tilt of {tilt:.3g} degrees (slice positions not along the "
            f"slice normal); the volume's affine is sheared to keep every voxel in place (meta['gantry_tilt_deg']).",
            UserWarning,
            stacklevel=4,
        )
    if nonuniform:
        warnings.warn(
            f"DICOM series {meta['source']} has non-uniform slice spacing (steps {steps.min():.4g} to "
            f"{steps.max():.4g} mm); read with the mean step {np.linalg.norm(step):.4g} mm. The true positions are in "
            f"meta['slice_positions']; resample before measuring.",
            UserWarning,
            stacklevel=4,
        )
    return step


def _pixels(items: list[tuple[Path, Any]]) -> np.ndarray:
    slices = []
    scales = []
    for f, ds in items:
        try:
            arr = np.asarray(ds.pixel_array)
        except Exception as exc:  # truncated pixel data, missing decoder for a compressed transfer syntax, ...
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            hint = (
                f"its transfer syntax {getattr(syntax, 'name', syntax)} may need an extra decoder "
                f"(pip install pylibjpeg pylibjpeg-libjpeg)"
                if getattr(syntax, "is_compressed", False)
                else "the file is truncated or damaged"
            )
            raise ModelFileError(f"cannot decode the pixels of {f}: {type(exc).__name__}: {exc} ({hint}).") from exc
        if arr.shape != (int(ds.Rows), int(ds.Columns)):
            raise ModelFileError(f"{f} decodes to an array of shape {arr.shape}, not ({ds.Rows}, {ds.Columns}).")
        slices.append(arr.T)  # (columns, rows) = (X, Y)
        scales.append((float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)))
    stored = np.stack(slices, axis=-1)
    slope = np.array([s for s, _ in scales])
    inter = np.array([b for _, b in scales])
    if np.all(slope == np.round(slope)) and np.all(inter == np.round(inter)):
        values = stored.astype(np.int64) * slope.astype(np.int64) + inter.astype(np.int64)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if values.min() >= info.min and values.max() <= info.max:
                return values.astype(dtype)
        return values.astype(np.float64)
    return (stored.astype(np.float64) * slope + inter).astype(np.float32)
