"""NRRD/MHA through SimpleITK (geometry against the ITK formula), and every optional reader failing clearly
when its package is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from anatomy.core.errors import ModelFileError, OptionalDependencyError, ParameterError, ShapeError
from anatomy.scans import Volume, read_dicom, read_nifti, read_sitk, read_slices, read_volume, write_nifti


def itk_image(sitk, data_xyz: np.ndarray, spacing, origin, direction):  # type: ignore[no-untyped-def]
    img = sitk.GetImageFromArray(np.ascontiguousarray(data_xyz.T))  # SimpleITK arrays are (Z, Y, X)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_sitk_formats_keep_geometry(tmp_path: Path, suffix: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing, origin = (0.48, 0.6, 1.25), (-101.5, 33.25, 250.125)
    data = rng.integers(-1024, 3000, size=(4, 5, 6)).astype(np.int16)
    sitk.WriteImage(itk_image(sitk, data, spacing, origin, tuple(q.ravel())), str(tmp_path / f"v{suffix}"))
    vol = read_volume(tmp_path / f"v{suffix}", modality="ct")
    np.testing.assert_array_equal(vol.data, data)
    assert vol.data.dtype == np.int16 and vol.modality == "ct"
    for ijk in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        lps = np.asarray(origin) + q @ (np.asarray(spacing) * ijk)  # ITK: x = O + D diag(s) i
        np.testing.assert_allclose(vol.world(ijk), [-lps[0], -lps[1], lps[2]], atol=1e-9)
    back = read_nifti(write_nifti(vol, tmp_path / "v.nii"))
    assert np.abs(back.affine - vol.affine).max() <= 1e-6


def test_sitk_2d_vector_and_broken_files(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4), np.float32)), str(tmp_path / "flat.nrrd"))
    assert read_sitk(tmp_path / "flat.nrrd").shape == (4, 3, 1)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4, 3), np.uint8), isVector=True), str(tmp_path / "rgb.mha"))
    with pytest.raises(ShapeError, match="3 components"):
        read_sitk(tmp_path / "rgb.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8, 8), np.float32)), str(tmp_path / "t.mha"))
    raw = (tmp_path / "t.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match=r"t\.mha"):
        read_sitk(tmp_path / "t.mha")
    with pytest.raises(ModelFileError, match="does not exist"):
        read_sitk(tmp_path / "none.nrrd")


def test_read_volume_argument_checks(tmp_path: Path) -> None:
    write_nifti(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "a.nii")
    with pytest.raises(ParameterError, match="spacing= is only for"):
        read_volume(tmp_path / "a.nii", spacing=(1, 1, 1))
    with pytest.raises(ParameterError, match="series_uid= is only for DICOM"):
        read_volume(tmp_path / "a.nii", series_uid="1.2")
    with pytest.raises(ParameterError, match="holds NIfTI"):
        read_volume(tmp_path)
    (tmp_path / "b.xyz").write_text("?")
    with pytest.raises(ParameterError, match="cannot tell the format"):
        read_volume(tmp_path / "b.xyz")
    with pytest.raises(ModelFileError, match="does not exist"):
        read_volume(tmp_path / "missing.nii")


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("SimpleITK", lambda p: read_sitk(p / "x.nrrd")),
        ("nibabel", lambda p: read_nifti(p / "x.nii")),
        ("nibabel", lambda p: write_nifti(Volume(np.zeros((1, 1, 1)), np.eye(4)), p / "x.nii")),
        ("pydicom", lambda p: read_dicom(p)),
        ("PIL", lambda p: read_slices(p, spacing=(1, 1, 1))),
    ],
)
def test_missing_optional_package_names_the_extra(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module, call
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # any import of it now fails
    with pytest.raises(OptionalDependencyError, match=r"pip install 'anatomy\[scans\]'"):
        call(tmp_path)
    assert not list(tmp_path.iterdir())


def test_scans_package_imports_without_optional_packages() -> None:
    script = textwrap.dedent(
        """
        import sys
        for name in ("nibabel", "pydicom", "PIL", "SimpleITK"):
            sys.modules[name] = None
        import numpy as np
        import anatomy.scans as scans
        vol = scans.Volume(np.zeros((2, 2, 2)), np.eye(4))
        assert vol.shape == (2, 2, 2)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
