"""Differentiable geometry on triangle meshes and point sets (the public entry point).

Pure torch (plus scipy's KD-tree for neighbour *search*): every returned value is
recomputed in torch from the inputs, so it is differentiable with respect to the
floating inputs, and dtype/device follow the inputs (the KD-tree works on detached
CPU copies; only integer indices travel back).

Contents
--------
* :func:`face_normals`, :func:`vertex_normals` -- batched ``(..., V, 3)``.
* :func:`procrustes` -> :class:`Similarity` -- weighted Kabsch/Umeyama, batched.
* :func:`knn`, :func:`chamfer_distance` -> :class:`ChamferResult` -- one pair of sets.
* :func:`closest_points_on_mesh` -> :class:`ClosestPoints`, :func:`point_to_surface_distance`.
* :func:`barycentric_interpolate` -- landmarks embedded in faces, batched.

Conventions (DESIGN.md section 3): points are rows ``(..., 3)``, rotation matrices act
on column vectors, so a point set ``X (N, 3)`` is rotated as ``X @ R.T``.
"""

from .alignment import Similarity, procrustes
from .nearest import (
    ChamferResult,
    ClosestPoints,
    chamfer_distance,
    closest_points_on_mesh,
    knn,
    point_to_surface_distance,
)
from .surface import barycentric_interpolate, face_normals, vertex_normals

__all__ = [
    "ChamferResult",
    "ClosestPoints",
    "Similarity",
    "barycentric_interpolate",
    "chamfer_distance",
    "closest_points_on_mesh",
    "face_normals",
    "knn",
    "point_to_surface_distance",
    "procrustes",
    "vertex_normals",
]
