"""The :class:`Volume` type: a voxel array placed in the world by a 4x4 affine (mm, RAS+).

Voxel ``(i, j, k)`` of ``data`` (shape ``(X, Y, Z)``) has its centre at the world point
``affine @ [i, j, k, 1]``, in millimetres, in nibabel's RAS+ frame: +x points to the patient's
Right, +y Anterior, +z Superior.
DICOM and ITK use LPS+ (+x Left, +y Posterior, +z Superior); their readers flip x and y at the
boundary, so every :class:`Volume` is RAS+.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ParameterError, ShapeError

__all__ = ["MODALITIES", "Volume", "axis_codes", "lps_to_ras"]

MODALITIES = ("ct", "mri", "labels", "unknown")

# world direction letter of each axis, for the positive and the negative sense (RAS+)
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """A voxel -> LPS+ world affine (DICOM, ITK) turned into the voxel -> RAS+ one (x and y negated)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_lps, dtype=np.float64)


def axis_codes(affine: np.ndarray) -> str:
    """The world direction each voxel axis mostly points to, e.g. ``"RAS"`` or ``"LPS"``."""
    codes = []
    for col in np.asarray(affine, dtype=np.float64)[:3, :3].T:
        axis = int(np.argmax(np.abs(col)))
        codes.append(_AXIS_LETTERS[axis][0 if col[axis] > 0 else 1])
    return "".join(codes)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scan or label map.

    Attributes:
        data: voxel values, a numpy array ``(X, Y, Z)`` (read-only view; use :meth:`with_data`
            to change it). CT readers give Hounsfield units; label maps hold integers.
        affine: ``(4, 4)`` float64 voxel-index -> world (mm, RAS+) matrix; may be oblique or
            sheared (a CT with gantry tilt has a sheared third column).
        modality: ``"ct"``, ``"mri"``, ``"labels"`` or ``"unknown"``.
        meta: free-form facts from the reader (source file, series UID, slice positions, gantry
            tilt, non-uniform spacing, ...). Readers never copy patient identity into it.
    """

    data: np.ndarray
    affine: np.ndarray
    modality: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 3:
            raise ShapeError(
                f"Volume data must be a 3D array (X, Y, Z); got shape {data.shape}. A 2D image is "
                f"data[:, :, None]; pick one frame of a 4D series with data[..., t]."
            )
        if min(data.shape) < 1:
            raise ShapeError(f"Volume data has an empty axis: shape {data.shape}.")
        if data.dtype.kind not in "biuf":
            raise ParameterError(
                f"Volume data must be boolean, integer or float; got dtype {data.dtype}. Convert it first "
                f"(complex data: take np.abs)."
            )
        view = data.view()
        view.flags.writeable = False
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ShapeError(f"Volume affine must be (4, 4); got {affine.shape}.")
        if not np.all(np.isfinite(affine)):
            raise ParameterError("Volume affine has NaN or Inf entries.")
        if not np.array_equal(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ParameterError(f"Volume affine's last row must be [0, 0, 0, 1]; got {affine[3].tolist()}.")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ParameterError(
                f"Volume affine is singular (a zero voxel size or two voxel axes along the same line):\n{affine}"
            )
        affine.flags.writeable = False
        if self.modality not in MODALITIES:
            raise ParameterError(f"Volume modality must be one of {MODALITIES}; got {self.modality!r}.")
        object.__setattr__(self, "data", view)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts ``(X, Y, Z)``."""
        x, y, z = self.data.shape
        return (x, y, z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each voxel axis in mm (the lengths of the affine's columns)."""
        sx, sy, sz = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(sx), float(sy), float(sz))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"``: the world direction each voxel axis mostly points to."""
        return axis_codes(self.affine)

    def world(self, ijk: Any) -> np.ndarray:
        """Voxel coordinates ``(..., 3)`` (fractional allowed) -> world points ``(..., 3)`` in mm (RAS+)."""
        p = _points(ijk, "ijk")
        return p @ self.affine[:3, :3].T + self.affine[:3, 3]

    def voxel(self, xyz: Any) -> np.ndarray:
        """World points ``(..., 3)`` in mm (RAS+) -> fractional voxel coordinates ``(..., 3)``."""
        p = _points(xyz, "xyz")
        return np.linalg.solve(self.affine[:3, :3], (p - self.affine[:3, 3]).reshape(-1, 3).T).T.reshape(p.shape)

    def with_data(self, data: Any, *, modality: str | None = None) -> Volume:
        """A new volume on the same voxel grid (same affine and meta) holding ``data``."""
        arr = np.asarray(data)
        if arr.shape != self.data.shape:
            raise ShapeError(
                f"with_data needs an array on the same grid {self.data.shape}; got {arr.shape}. Resample it first."
            )
        return Volume(arr, self.affine, self.modality if modality is None else modality, dict(self.meta))

    def to_torch(self, dtype: Any = None, device: Any = None) -> Any:
        """The voxel array as a torch tensor ``(X, Y, Z)`` (a copy; float32 by default for non-float data)."""
        import torch

        arr = np.array(self.data)
        if arr.dtype.kind in "bu" and arr.dtype != np.uint8:  # torch has no uint16/uint32 arithmetic
            arr = arr.astype(np.int64)
        tensor = torch.from_numpy(arr)
        if dtype is None and not tensor.is_floating_point() and self.modality != "labels":
            dtype = torch.float32
        return tensor.to(dtype=dtype, device=device)

    def __repr__(self) -> str:
        sx, sy, sz = self.spacing
        return (
            f"Volume(shape={self.shape}, spacing=({sx:.4g}, {sy:.4g}, {sz:.4g}) mm, orientation={self.orientation}, "
            f"modality={self.modality!r}, dtype={self.data.dtype})"
        )


def _points(value: Any, name: str) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise ShapeError(f"{name} must have shape (..., 3); got {p.shape}.")
    return p
