"""DICOM series: HU values, LPS -> RAS affine checked voxel by voxel against the DICOM formula, sorting,
gantry tilt, non-uniform spacing, missing slices, mixed series, non-image and broken files."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anatomy.core.errors import ModelFileError, ParameterError
from anatomy.scans import Volume, read_dicom, read_nifti, read_volume, write_nifti

pytest.importorskip("pydicom")

ROWS, COLS = 3, 4
ROW_SPACING, COL_SPACING = 0.5, 0.75  # DICOM PixelSpacing order: between rows, between columns


def oblique_orientation() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q[:, 0], q[:, 1]  # row direction (along a row: increasing column), column direction


def pixels(k: int) -> np.ndarray:
    """Distinct stored values for slice k: 1000 + 100 k + 10 r + c."""
    r, c = np.mgrid[0:ROWS, 0:COLS]
    return (1000 + 100 * k + 10 * r + c).astype(np.uint16)


def write_series(
    folder: Path,
    dicom_slice: Callable[..., Path],
    positions: list[np.ndarray],
    *,
    order: list[int] | None = None,
    **kwargs: object,
) -> list[Path]:
    """Slice k at positions[k]; file names follow ``order`` (a shuffled naming) so name order != slice order."""
    row_dir, col_dir = kwargs.pop("dirs", oblique_orientation())  # type: ignore[misc]
    order = order or list(range(len(positions)))
    folder.mkdir(exist_ok=True)
    files = []
    for k, pos in enumerate(positions):
        files.append(
            dicom_slice(
                folder / f"IM{order[k]:04d}.dcm", pixels(k), position=pos,
                orientation=[*row_dir, *col_dir], pixel_spacing=(ROW_SPACING, COL_SPACING), instance=order[k] + 1,
                **kwargs,
            )
        )
    return files


def dicom_world(origin: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, i: int, j: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: P = S + c * dc * X + r * dr * Y for column c = i, row r = j (LPS)."""
    return origin + i * COL_SPACING * row_dir + j * ROW_SPACING * col_dir


def lps_to_ras_point(p: np.ndarray) -> np.ndarray:
    return np.array([-p[0], -p[1], p[2]])


def check_geometry(vol: Volume, positions: list[np.ndarray], row_dir: np.ndarray, col_dir: np.ndarray) -> None:
    for k, origin in enumerate(positions):
        for i in range(COLS):
            for j in range(ROWS):
                expected = lps_to_ras_point(dicom_world(origin, row_dir, col_dir, i, j))
                np.testing.assert_allclose(vol.world([i, j, k]), expected, rtol=0, atol=1e-9)


def test_hounsfield_units_and_oblique_affine_from_shuffled_files(
    tmp_path: Path, dicom_slice: Callable[..., Path]
) -> None:
    row_dir, col_dir = oblique_orientation()
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-120.25, 87.5, -310.0])
    positions = [origin + k * 1.25 * normal for k in range(6)]
    write_series(tmp_path / "ct", dicom_slice, positions, order=[4, 0, 5, 2, 1, 3], dirs=(row_dir, col_dir))
    vol = read_volume(tmp_path / "ct")
    assert vol.shape == (COLS, ROWS, 6) and vol.modality == "ct"
    assert vol.data.dtype == np.int16
    for k in range(6):
        np.testing.assert_array_equal(vol.data[:, :, k], pixels(k).T.astype(np.int64) - 1024)
    check_geometry(vol, positions, row_dir, col_dir)
    np.testing.assert_allclose(vol.spacing, (COL_SPACING, ROW_SPACING, 1.25), rtol=1e-12)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(0.0, abs=1e-9)
    assert vol.meta["nonuniform_spacing"] is False
    assert "PatientName" not in vol.meta
    # round trip through NIfTI keeps the affine to 1e-6 and HU exactly
    back = read_nifti(write_nifti(vol, tmp_path / "ct.nii.gz"), modality="ct")
    assert np.abs(back.affine - vol.affine).max() <= 1e-6
    np.testing.assert_array_equal(back.data, vol.data)


def test_fractional_rescale_gives_float32(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in range(3)]
    write_series(tmp_path, dicom_slice, positions, slope=0.5, intercept=-1000.25, dirs=(np.eye(3)[0], np.eye(3)[1]))
    vol = read_dicom(tmp_path)
    assert vol.data.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(vol.data[:, :, k], (pixels(k).T * 0.5 - 1000.25).astype(np.float32))
    # axial, identity orientation: LPS identity -> RAS flips x and y
    expected = np.diag([-COL_SPACING, -ROW_SPACING, 2.0, 1.0])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-12)
    assert vol.orientation == "LPS"


def test_mr_modality(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    write_series(
        tmp_path, dicom_slice, [np.array([0.0, 0.0, k]) for k in range(2)], modality="MR", intercept=0.0,
        dirs=(np.eye(3)[0], np.eye(3)[1]),
    )
    vol = read_dicom(tmp_path)
    assert vol.modality == "mri"
    assert read_dicom(tmp_path, modality="unknown").modality == "unknown"
    with pytest.raises(ParameterError, match="modality"):
        read_dicom(tmp_path, modality="xray")


def test_gantry_tilt_is_kept_in_a_sheared_affine_and_reported(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    row_dir, col_dir = np.eye(3)[0], np.eye(3)[1]
    tilt = math.radians(15.0)
    # each slice moves 1 mm along the normal (z) and tan(15 deg) mm along the column direction (y)
    positions = [np.array([10.0, 5.0 + k * math.tan(tilt), -50.0 + k]) for k in range(5)]
    write_series(tmp_path, dicom_slice, positions, dirs=(row_dir, col_dir))
    with pytest.warns(UserWarning, match="gantry tilt"):
        vol = read_dicom(tmp_path)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(15.0, abs=1e-9)
    check_geometry(vol, positions, row_dir, col_dir)


def test_non_uniform_spacing_is_reported(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    depths = [0.0, 1.0, 2.0, 3.3, 4.3]
    write_series(tmp_path, dicom_slice, [np.array([0.0, 0.0, z]) for z in depths], dirs=(np.eye(3)[0], np.eye(3)[1]))
    with pytest.warns(UserWarning, match="non-uniform"):
        vol = read_dicom(tmp_path)
    assert vol.meta["nonuniform_spacing"] is True
    np.testing.assert_allclose(vol.meta["slice_positions"], depths)
    assert vol.spacing[2] == pytest.approx(4.3 / 4)  # the mean step


def test_missing_slice_names_the_neighbours(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    depths = [0.0, 2.5, 5.0, 10.0, 12.5]  # the slice at 7.5 mm is missing
    write_series(tmp_path, dicom_slice, [np.array([0.0, 0.0, z]) for z in depths], dirs=(np.eye(3)[0], np.eye(3)[1]))
    with pytest.raises(ModelFileError, match=r"1 slice\(s\) of 2.5 mm missing between .*IM0002.dcm and .*IM0003.dcm"):
        read_dicom(tmp_path)
    with pytest.warns(UserWarning, match="non-uniform"):
        vol = read_dicom(tmp_path, allow_gaps=True)
    np.testing.assert_allclose(vol.meta["slice_positions"], depths)


def test_mixed_series_list_uids_and_series_uid_picks_one(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    dirs = (np.eye(3)[0], np.eye(3)[1])
    positions = [np.array([0.0, 0.0, k]) for k in range(3)]
    write_series(tmp_path / "a", dicom_slice, positions, dirs=dirs, series_uid="1.2.3")
    for k in range(2):
        dicom_slice(tmp_path / "a" / f"other{k}.dcm", pixels(k), position=(0, 0, 5.0 * k), series_uid="1.2.4",
                    intercept=0.0)
    with pytest.raises(ModelFileError, match="mixes 2 DICOM series") as info:
        read_volume(tmp_path / "a")
    assert "'1.2.3': 3 files" in str(info.value) and "'1.2.4': 2 files" in str(info.value)
    assert "series_uid=" in str(info.value)
    vol = read_volume(tmp_path / "a", series_uid="1.2.4")
    assert vol.shape == (COLS, ROWS, 2) and vol.meta["series_uid"] == "1.2.4"
    np.testing.assert_array_equal(vol.data[:, :, 1], pixels(1).T)
    with pytest.raises(ParameterError, match="1.2.9"):
        read_dicom(tmp_path / "a", series_uid="1.2.9")


def test_non_image_and_non_dicom_files_are_named(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    dirs = (np.eye(3)[0], np.eye(3)[1])
    files = write_series(tmp_path / "s", dicom_slice, [np.array([0.0, 0.0, k]) for k in range(3)], dirs=dirs)
    dicom_slice(tmp_path / "s" / "report.dcm", pixels(0), position=None, with_pixels=False)
    with pytest.raises(ModelFileError, match=r"report\.dcm is a DICOM file without an image"):
        read_dicom(tmp_path / "s")
    (tmp_path / "s" / "report.dcm").unlink()
    (tmp_path / "s" / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match=r"notes\.txt is not a DICOM file"):
        read_dicom(tmp_path / "s")
    # a list of files skips the stray one
    assert read_dicom(files).shape == (COLS, ROWS, 3)


def test_truncated_files_are_named(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    dirs = (np.eye(3)[0], np.eye(3)[1])
    files = write_series(tmp_path, dicom_slice, [np.array([0.0, 0.0, k]) for k in range(3)], dirs=dirs)
    raw = files[1].read_bytes()
    files[1].write_bytes(raw[:-6])  # pixel data cut short
    with pytest.raises(ModelFileError, match=r"IM0001\.dcm.*truncated"):
        read_dicom(tmp_path)
    files[1].write_bytes(raw[: raw.index(b"\xe0\x7f\x10\x00")])  # cut just before the pixel data element
    with pytest.raises(ModelFileError, match=r"IM0001\.dcm is a CT Image Storage file without pixel data: it is trunc"):
        read_dicom(tmp_path)
    files[1].write_bytes(raw[:200])  # cut inside the header
    with pytest.raises(ModelFileError, match=r"IM0001\.dcm.*truncated"):
        read_dicom(tmp_path)


def test_inconsistent_slices_are_named(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    dirs = (np.eye(3)[0], np.eye(3)[1])
    write_series(tmp_path, dicom_slice, [np.array([0.0, 0.0, k]) for k in range(3)], dirs=dirs)
    dicom_slice(tmp_path / "IM0009.dcm", np.zeros((5, 5), np.uint16), position=(0, 0, 3.0))
    with pytest.raises(ModelFileError, match=r"IM0009\.dcm is 5x5 pixels"):
        read_dicom(tmp_path)
    dicom_slice(tmp_path / "IM0009.dcm", pixels(0), position=(0, 0, 3.0), orientation=(0, 1, 0, 1, 0, 0))
    with pytest.raises(ModelFileError, match=r"IM0009\.dcm has another ImageOrientationPatient"):
        read_dicom(tmp_path)
    dicom_slice(tmp_path / "IM0009.dcm", pixels(0), position=(0, 0, 3.0), pixel_spacing=(1.0, 1.0))
    with pytest.raises(ModelFileError, match=r"IM0009\.dcm has another PixelSpacing"):
        read_dicom(tmp_path)
    dicom_slice(tmp_path / "IM0009.dcm", pixels(0), position=(0, 0, 2.0), pixel_spacing=(ROW_SPACING, COL_SPACING))
    with pytest.raises(ModelFileError, match="same slice position"):
        read_dicom(tmp_path)


def test_single_slice_and_empty_folder(tmp_path: Path, dicom_slice: Callable[..., Path]) -> None:
    f = dicom_slice(tmp_path / "one.dcm", pixels(0), position=(1.0, 2.0, 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_volume(f)
    assert vol.shape == (COLS, ROWS, 1) and vol.spacing[2] == 1.0
    np.testing.assert_allclose(vol.affine[:3, 3], [-1.0, -2.0, 3.0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="empty"):
        read_volume(tmp_path / "empty")
    with pytest.raises(ModelFileError, match="no files"):
        read_dicom(tmp_path / "empty")
    with pytest.raises(ModelFileError, match="does not exist"):
        read_dicom(tmp_path / "nowhere")
