"""NIfTI: exact round trips (oblique affines, every dtype, label maps), truncated files, atomic writes."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from anatomy.core.errors import ModelFileError, ParameterError, ShapeError
from anatomy.scans import Volume, read_nifti, read_volume, write_nifti
from anatomy.scans import nifti as nifti_mod

nib = pytest.importorskip("nibabel")


def oblique_affine(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(rng.uniform(0.3, 3.0, size=3))
    affine[:3, 3] = rng.uniform(-300, 300, size=3)
    return affine


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8, np.uint16, np.int32])
def test_round_trip_keeps_affine_and_data_exactly(tmp_path: Path, name: str, dtype: type) -> None:
    rng = np.random.default_rng(7)
    data = (rng.normal(size=(5, 6, 7)) * 100).astype(dtype)
    affine = oblique_affine(3)
    vol = Volume(data, affine, "ct")
    out = write_nifti(vol, tmp_path / name)
    back = read_nifti(out, modality="ct")
    assert np.abs(back.affine - affine).max() <= 1e-6
    assert back.data.dtype == data.dtype
    np.testing.assert_array_equal(back.data, data)
    # another reader of the header alone (float32 sform) agrees to float32 precision
    np.testing.assert_allclose(nib.load(out).affine, affine, rtol=0, atol=1e-4)
    assert [f.name for f in tmp_path.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize(
    ("dtype", "stored", "scale"),
    [(np.float16, np.float32, 1), (np.int64, np.int32, 1), (np.int64, np.int64, 2**40), (np.uint64, np.int32, 1),
     (np.int8, np.int8, 1), (np.uint32, np.uint32, 1)],
)
def test_other_dtypes_keep_their_values(tmp_path: Path, dtype: type, stored: type, scale: int) -> None:
    data = (np.arange(8).reshape(2, 2, 2) * scale).astype(dtype)
    back = read_nifti(write_nifti(Volume(data, np.eye(4)), tmp_path / "d.nii"))
    assert back.data.dtype == stored
    np.testing.assert_array_equal(back.data, data)


def test_sheared_affine_round_trips(tmp_path: Path) -> None:
    affine = oblique_affine(5)
    affine[:3, 2] += 0.3 * affine[:3, 1]  # a gantry-tilt-like shear
    vol = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), affine, "ct")
    back = read_nifti(write_nifti(vol, tmp_path / "tilt.nii.gz"))
    assert np.abs(back.affine - affine).max() <= 1e-6


def test_header_wins_when_another_tool_changed_the_sform(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 2, 2), np.float32), oblique_affine(1))
    path = write_nifti(vol, tmp_path / "a.nii")
    img = nib.load(path)
    moved = img.affine.copy()
    moved[:3, 3] += 10.0
    img.set_sform(moved, code=1)
    nib.save(img, tmp_path / "b.nii")  # keeps our extension, but the header now says something else
    np.testing.assert_allclose(read_nifti(tmp_path / "b.nii").affine, moved, atol=1e-9)


def test_file_written_by_nibabel_alone(tmp_path: Path) -> None:
    affine = np.diag([0.75, 0.75, 1.5, 1.0])
    affine[:3, 3] = [-90, 120.5, -60]
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "plain.nii.gz")
    vol = read_volume(tmp_path / "plain.nii.gz")
    np.testing.assert_array_equal(vol.affine, affine)  # every entry exact in float32
    np.testing.assert_array_equal(vol.data, data)
    assert vol.modality == "unknown" and vol.meta["format"] == "nifti1"


def test_nifti2_and_units_in_metres(tmp_path: Path) -> None:
    affine = np.diag([0.001, 0.002, 0.003, 1.0])
    img = nib.Nifti2Image(np.ones((2, 2, 2), np.float32), affine)
    img.header.set_xyzt_units(xyz="meter")
    nib.save(img, tmp_path / "m.nii")
    vol = read_nifti(tmp_path / "m.nii")
    np.testing.assert_allclose(vol.spacing, (1.0, 2.0, 3.0), rtol=1e-6)
    assert vol.meta["format"] == "nifti2"


def test_scaled_file_is_read_in_scaled_units(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.array([[[0, 1], [2, 3]]], dtype=np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, -1024)
    nib.save(img, tmp_path / "s.nii")
    np.testing.assert_array_equal(read_nifti(tmp_path / "s.nii").data, [[[-1024, -1023.5], [-1023, -1022.5]]])


def test_label_maps(tmp_path: Path) -> None:
    affine = oblique_affine(2)
    small = Volume(np.array([0, 1, 2, 5, 1, 0, 0, 3], dtype=np.int64).reshape(2, 2, 2), affine, "labels")
    back = read_nifti(write_nifti(small, tmp_path / "seg.nii.gz"))
    assert back.modality == "labels" and back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, small.data)
    assert np.abs(back.affine - affine).max() <= 1e-6
    big = Volume(np.array([-1, 300, 0, 7, 0, 0, 0, 1], dtype=np.float32).reshape(2, 2, 2), affine)
    back = read_nifti(write_nifti(big, tmp_path / "big.nii", labels=True))
    assert back.data.dtype == np.int16 and back.modality == "labels"
    np.testing.assert_array_equal(back.data, big.data)
    huge = Volume(np.array([0, 70000], dtype=np.int64).reshape(2, 1, 1), affine)
    assert read_nifti(write_nifti(huge, tmp_path / "h.nii", labels=True)).data.dtype == np.int32
    flags = Volume(np.array([True, False]).reshape(1, 2, 1), affine)
    assert read_nifti(write_nifti(flags, tmp_path / "f.nii")).data.dtype == np.uint8
    assert read_nifti(tmp_path / "seg.nii.gz", modality="mri").modality == "mri"
    fractional = Volume(np.array([0.5, 1.0]).reshape(2, 1, 1), affine)
    with pytest.raises(ParameterError, match="whole-number"):
        write_nifti(fractional, tmp_path / "bad.nii", labels=True)
    assert not (tmp_path / "bad.nii").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    second = Volume(np.ones((2, 2, 2), np.float32), np.eye(4))
    path = write_nifti(first, tmp_path / "v.nii")
    with pytest.raises(ParameterError, match="overwrite=True"):
        write_nifti(second, path)
    np.testing.assert_array_equal(read_nifti(path).data, 0)
    write_nifti(second, path, overwrite=True)
    loaded = read_nifti(path)
    np.testing.assert_array_equal(loaded.data, 1)
    with pytest.raises(ParameterError, match="read from it"):
        write_nifti(loaded, path, overwrite=True)  # never the input file
    with pytest.raises(ParameterError, match=r"\.nii"):
        write_nifti(first, tmp_path / "v.nrrd")
    with pytest.raises(ParameterError, match="Volume"):
        write_nifti(np.zeros((2, 2, 2)), tmp_path / "w.nii")  # type: ignore[arg-type]


def test_a_failing_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    old = write_nifti(Volume(np.full((2, 2, 2), 9, np.float32), np.eye(4)), tmp_path / "keep.nii")

    def broken(img: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(nifti_mod, "_serialize", broken)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(vol, tmp_path / "new.nii.gz")
    with pytest.raises(OSError, match="disk full"):
        write_nifti(vol, old, overwrite=True)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["keep.nii"]
    monkeypatch.undo()
    np.testing.assert_array_equal(read_nifti(old).data, 9)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_nifti(vol, tmp_path / "new.nii")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["keep.nii"]


@pytest.mark.parametrize("name", ["t.nii", "t.nii.gz"])
def test_truncated_files_name_the_file(tmp_path: Path, name: str) -> None:
    path = write_nifti(Volume(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / name)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match=name.replace(".", r"\.")):
        read_nifti(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii")
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(ModelFileError, match="junk.nii"):
        read_nifti(tmp_path / "junk.nii")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"x" * 100))
    with pytest.raises(ModelFileError, match="junk.nii.gz"):
        read_nifti(tmp_path / "junk.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ShapeError, match="4d.nii"):
        read_nifti(tmp_path / "4d.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 1), np.float32), np.eye(4)), tmp_path / "one.nii")
    assert read_nifti(tmp_path / "one.nii").shape == (2, 3, 4)
    nib.save(nib.Nifti1Image(np.zeros((2, 3), np.float32), np.eye(4)), tmp_path / "2d.nii")
    assert read_nifti(tmp_path / "2d.nii").shape == (2, 3, 1)
    with pytest.raises(ParameterError, match="modality"):
        read_nifti(tmp_path / "2d.nii", modality="pet")
