"""PNG/TIFF slice stacks: natural order, 8/16-bit and float pixels, spacing, colour, broken stacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anatomy.core.errors import ModelFileError, ParameterError
from anatomy.scans import read_nifti, read_slices, read_volume, write_nifti
from anatomy.scans.slices import natural_key

Image = pytest.importorskip("PIL.Image")

LUCY = (0.48, 0.48, 1.0)


def slice_values(k: int, rows: int = 3, cols: int = 5, scale: int = 1) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:cols]
    return (k * 20 + r * 5 + c) * scale


def test_natural_key() -> None:
    names = ["slice_10.png", "slice_2.png", "Slice_1.png", "slice_2b.png"]
    assert sorted(names, key=natural_key) == ["Slice_1.png", "slice_2.png", "slice_2b.png", "slice_10.png"]


def test_png_stack_8bit_in_natural_order(tmp_path: Path) -> None:
    for k in range(12):  # names slice_0 .. slice_11: a plain string sort would put slice_10 before slice_2
        Image.fromarray(slice_values(k).astype(np.uint8)).save(tmp_path / f"slice_{k}.png")
    vol = read_volume(tmp_path, spacing=LUCY)
    assert vol.shape == (5, 3, 12) and vol.data.dtype == np.uint8
    for k in range(12):
        np.testing.assert_array_equal(vol.data[:, :, k], slice_values(k).T)
    np.testing.assert_array_equal(vol.affine, np.diag([*LUCY, 1.0]))
    np.testing.assert_allclose(vol.spacing, LUCY)
    assert vol.meta["files"][:3] == [str(tmp_path / f"slice_{k}.png") for k in range(3)]
    back = read_nifti(write_nifti(vol, tmp_path.parent / f"{tmp_path.name}.nii.gz"))
    assert np.abs(back.affine - vol.affine).max() <= 1e-6
    np.testing.assert_array_equal(back.data, vol.data)


def test_png_16bit_and_tiff_float(tmp_path: Path) -> None:
    (tmp_path / "png").mkdir()
    for k in range(3):
        Image.fromarray(slice_values(k, scale=1000).astype(np.uint16)).save(tmp_path / "png" / f"s{k}.png")
    vol = read_slices(tmp_path / "png", spacing=(1, 1, 2), modality="ct")
    assert vol.data.dtype == np.uint16 and vol.modality == "ct"
    np.testing.assert_array_equal(vol.data[:, :, 2], slice_values(2, scale=1000).T)
    (tmp_path / "tif").mkdir()
    for k in range(2):
        Image.fromarray((slice_values(k) * 0.25 - 3).astype(np.float32)).save(tmp_path / "tif" / f"s{k}.tif")
    vol = read_slices(tmp_path / "tif", spacing=(0.5, 0.5, 0.5))
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data[:, :, 1], (slice_values(1) * 0.25 - 3).T)


def test_multipage_tiff(tmp_path: Path) -> None:
    pages = [Image.fromarray(slice_values(k).astype(np.uint8)) for k in range(4)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    vol = read_volume(tmp_path / "stack.tif", spacing=LUCY)
    assert vol.shape == (5, 3, 4)
    np.testing.assert_array_equal(vol.data[:, :, 3], slice_values(3).T)


def test_spacing_is_required_and_checked(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ParameterError, match=r"spacing=\(sx, sy, sz\)"):
        read_volume(tmp_path)
    for bad in [(1, 1), (1, 0, 1), (1, float("nan"), 1), 3.0]:
        with pytest.raises(ParameterError, match="spacing"):
            read_slices(tmp_path, spacing=bad)


def test_colour_is_an_error_unless_converted(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c0.png")
    with pytest.raises(ModelFileError, match=r"c0\.png is a colour image"):
        read_slices(tmp_path, spacing=LUCY)
    vol = read_slices(tmp_path, spacing=LUCY, color="luminance")
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # ITU-R 601-2
    assert vol.data.dtype == np.uint8
    assert np.abs(vol.data.astype(float) - luma).max() <= 1.0
    with pytest.raises(ParameterError, match="color"):
        read_slices(tmp_path, spacing=LUCY, color="rgb")


def test_broken_stacks_name_the_file(tmp_path: Path) -> None:
    for k in range(3):
        Image.fromarray(slice_values(k).astype(np.uint8)).save(tmp_path / f"s{k}.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "s3.png")
    with pytest.raises(ModelFileError, match=r"s3\.png is 4x4 pixels"):
        read_slices(tmp_path, spacing=LUCY)
    Image.fromarray(slice_values(3).astype(np.uint16) * 300).save(tmp_path / "s3.png")
    with pytest.raises(ModelFileError, match=r"s3\.png .* of uint16"):
        read_slices(tmp_path, spacing=LUCY)
    Image.fromarray(slice_values(3).astype(np.uint8)).save(tmp_path / "s3.png")
    raw = (tmp_path / "s3.png").read_bytes()
    (tmp_path / "s3.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match=r"s3\.png.*truncated"):
        read_slices(tmp_path, spacing=LUCY)
    (tmp_path / "s3.png").write_bytes(b"not a png")
    with pytest.raises(ModelFileError, match=r"s3\.png"):
        read_slices(tmp_path, spacing=LUCY)
    (tmp_path / "s3.png").unlink()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelFileError, match="mixes PNG/TIFF slices"):
        read_volume(tmp_path, spacing=LUCY)
    assert read_slices(tmp_path, spacing=LUCY).shape == (5, 3, 3)  # the slice reader takes only images
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no PNG/TIFF"):
        read_slices(tmp_path / "empty", spacing=LUCY)
