"""Surface quantities of triangle meshes, batched and differentiable.

Face and vertex normals, and barycentric points on faces (landmarks).
"""

from __future__ import annotations

import torch

from ._geometry_common import (
    _check_faces,
    _check_points,
    _safe_normalize,
)
from .checks import (
    check_finite,
    check_like,
    check_shape,
    check_tensor,
)

# --------------------------------------------------------------------------------------
# normals
# --------------------------------------------------------------------------------------


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Normals of the triangles ``faces`` of ``vertices``.

    Args:
        vertices: ``(..., V, 3)`` float.
        faces: ``(F, 3)`` integer vertex indices, counter-clockwise seen from outside.
        normalize: unit normals if True; else ``(b - a) x (c - a)``, whose length is twice
            the triangle area.

    Returns:
        ``(..., F, 3)``. A degenerate (zero-area) face gets a zero unit normal with a zero,
        finite gradient.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    faces = _check_faces(faces, "faces", vertices.shape[-2], vertices)
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    n = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return _safe_normalize(n) if normalize else n


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals: the normalised sum of the (unnormalised) incident face normals.

    Args:
        vertices: ``(..., V, 3)`` float.
        faces: ``(F, 3)`` integer vertex indices.

    Returns:
        ``(..., V, 3)`` unit normals. A vertex used by no face (or whose incident normals
        cancel) gets a zero normal, with a finite (zero) gradient.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    faces = _check_faces(faces, "faces", vertices.shape[-2], vertices)
    fn = face_normals(vertices, faces, normalize=False)  # (..., F, 3), length = 2 * area
    lead = fn.shape[:-2]
    n_faces, n_verts = faces.shape[0], vertices.shape[-2]
    flat = fn.reshape(-1, n_faces, 1, 3).expand(-1, n_faces, 3, 3).reshape(-1, 3 * n_faces, 3)
    acc = fn.new_zeros(flat.shape[0], n_verts, 3).index_add(1, faces.reshape(-1), flat)
    return _safe_normalize(acc).reshape(*lead, n_verts, 3)


# --------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------


def barycentric_interpolate(
    vertices: torch.Tensor, face_vertex_ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Points given by barycentric ``weights`` on triangles ``face_vertex_ids`` (e.g. landmarks).

    Args:
        vertices: ``(..., V, 3)`` float.
        face_vertex_ids: ``(L, 3)`` integer vertex indices of each landmark's triangle.
        weights: ``(L, 3)`` float barycentric weights (not required to sum to 1), same
            dtype/device as ``vertices``.

    Returns:
        ``(..., L, 3)`` = ``sum_j weights[l, j] * vertices[..., ids[l, j], :]``.
    """
    vertices = _check_points(vertices, "vertices", batched=True)
    ids = _check_faces(face_vertex_ids, "face_vertex_ids", vertices.shape[-2], vertices)
    w = check_tensor(weights, "weights")
    check_shape(w, "weights", [ids.shape[0], 3])
    check_like(w, "weights", vertices, "vertices")
    check_finite(w, "weights")
    return (vertices[..., ids, :] * w[:, :, None]).sum(-2)
