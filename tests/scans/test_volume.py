"""Volume: validation, spacing/orientation, voxel <-> world conversions, with_data, to_torch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from anatomy.core.errors import ParameterError, ShapeError
from anatomy.scans import Volume
from anatomy.scans.volume import axis_codes, lps_to_ras


def oblique_affine(seed: int = 0, spacing: tuple[float, float, float] = (0.48, 0.48, 1.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-300, 300, size=3)
    return affine


def test_world_matches_a_per_voxel_loop_and_voxel_inverts_it() -> None:
    affine = oblique_affine(1, (0.5, 0.75, 2.5))
    vol = Volume(np.zeros((4, 5, 6), np.float32), affine)
    ijk = np.array([[i, j, k] for i in range(4) for j in range(5) for k in range(6)], dtype=np.float64)
    expected = np.array([affine[:3, 3] + i * affine[:3, 0] + j * affine[:3, 1] + k * affine[:3, 2] for i, j, k in ijk])
    np.testing.assert_allclose(vol.world(ijk), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(vol.voxel(vol.world(ijk)), ijk, rtol=0, atol=1e-10)
    frac = np.array([[[0.25, 1.5, 2.75]]])  # any leading shape, fractional voxels
    assert vol.world(frac).shape == (1, 1, 3)
    np.testing.assert_allclose(vol.voxel(vol.world(frac)), frac, atol=1e-12)


def test_spacing_shape_and_orientation() -> None:
    vol = Volume(np.zeros((2, 3, 4), np.int16), oblique_affine(2, (0.48, 0.51, 1.25)))
    assert vol.shape == (2, 3, 4)
    np.testing.assert_allclose(vol.spacing, (0.48, 0.51, 1.25), rtol=1e-12)
    assert Volume(np.zeros((1, 1, 1)), np.eye(4)).orientation == "RAS"
    assert axis_codes(lps_to_ras(np.eye(4))) == "LPS"  # identity in LPS is x->L, y->P in RAS
    permuted = np.eye(4)[[1, 2, 0, 3]] * [1, -1, 1, 1]  # columns: i -> +z, j -> -x, k -> +y
    assert axis_codes(permuted) == "SLA"


def test_with_data_keeps_grid_and_checks_shape() -> None:
    vol = Volume(np.zeros((2, 3, 4), np.float32), oblique_affine(3), "ct", {"source": "x"})
    labels = vol.with_data(np.ones((2, 3, 4), np.uint8), modality="labels")
    assert labels.modality == "labels" and labels.meta == {"source": "x"}
    np.testing.assert_array_equal(labels.affine, vol.affine)
    with pytest.raises(ShapeError, match="same grid"):
        vol.with_data(np.zeros((3, 3, 4)))


def test_volume_is_read_only() -> None:
    data = np.zeros((2, 2, 2), np.float32)
    vol = Volume(data, np.eye(4))
    with pytest.raises(ValueError):
        vol.data[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        vol.modality = "ct"  # type: ignore[misc]
    assert vol.affine.dtype == np.float64


@pytest.mark.parametrize(
    ("data", "affine", "modality", "error", "match"),
    [
        (np.zeros((2, 2)), np.eye(4), "ct", ShapeError, "3D"),
        (np.zeros((2, 2, 2, 2)), np.eye(4), "ct", ShapeError, "3D"),
        (np.zeros((2, 0, 2)), np.eye(4), "ct", ShapeError, "empty"),
        (np.zeros((2, 2, 2), complex), np.eye(4), "ct", ParameterError, "dtype"),
        (np.zeros((2, 2, 2)), np.eye(3), "ct", ShapeError, r"\(4, 4\)"),
        (np.zeros((2, 2, 2)), np.diag([1.0, 1.0, 0.0, 1.0]), "ct", ParameterError, "singular"),
        (np.zeros((2, 2, 2)), np.full((4, 4), np.nan), "ct", ParameterError, "NaN"),
        (np.zeros((2, 2, 2)), np.ones((4, 4)), "ct", ParameterError, "last row"),
        (np.zeros((2, 2, 2)), np.eye(4), "pet", ParameterError, "modality"),
    ],
)
def test_bad_volumes_raise_typed_errors(data, affine, modality, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        Volume(data, affine, modality)


def test_to_torch() -> None:
    ct = Volume(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4), "ct")
    t = ct.to_torch()
    assert t.dtype == torch.float32 and t.shape == (2, 2, 2)
    np.testing.assert_array_equal(t.numpy(), ct.data)
    labels = Volume(np.arange(8, dtype=np.uint16).reshape(2, 2, 2), np.eye(4), "labels")
    assert labels.to_torch().dtype == torch.int64
    assert ct.to_torch(torch.float64).dtype == torch.float64
    t[0, 0, 0] = 100.0  # a copy: the volume is unchanged
    assert ct.data[0, 0, 0] == 0
