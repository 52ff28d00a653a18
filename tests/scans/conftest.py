"""Synthetic DICOM slices for the anatomy.scans tests (written with pydicom, no real patient data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    position: Any,
    orientation: Any = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing: Any = (0.5, 0.75),
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
    modality: str = "CT",
    with_pixels: bool = True,
) -> Path:
    """Write one CT/MR slice (``pixels`` is (Rows, Columns) uint16) as a DICOM file with preamble."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.2" if with_pixels else "1.2.840.10008.5.1.4.1.1.88.11"  # CT / Basic Text SR
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.100"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "synthetic"
    ds.Modality = modality
    ds.InstanceNumber = instance
    if with_pixels:
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        rows, cols = pixels.shape
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


@pytest.fixture
def dicom_slice() -> Callable[..., Path]:
    return write_dicom_slice
