"""Per-mesh pose fits of a skinned model (joint rotations, translation, optionally shape) to meshes in
its vertex order: :func:`fit_poses`, Levenberg-Marquardt with batched forward-difference Jacobians.

The meshes are independent least-squares problems, so each gets its own damping and step; a block of
meshes and all their parameter shifts go through the model as one batch (one forward pass per
iteration instead of one per parameter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.blend import pose_features
from ..core.kinematics import KinematicTree, forward_kinematics
from ..core.rotations import axis_angle_to_matrix
from ..core.skinning import skin_vertices

__all__ = ["chunk_slices", "fit_poses", "posed_vertices"]


def posed_vertices(rest: torch.Tensor, joints: torch.Tensor, weights: torch.Tensor, tree: KinematicTree,
           rot: torch.Tensor, transl: torch.Tensor, basis: torch.Tensor | None, feature_joints: Sequence[int]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed vertices ``(n, V, 3)`` and the skinning transforms of rest meshes ``(n|1, V, 3)``."""
    x = rest
    if basis is not None and len(feature_joints):
        x = x + torch.einsum("np,pvd->nvd", pose_features(rot, feature_joints), basis)
    kin = forward_kinematics(rot, joints.expand(rot.shape[0], -1, -1), tree, translation=transl)
    return skin_vertices(x.expand(rot.shape[0], -1, -1), kin.transforms, weights), kin.transforms


def _full(free_aa: torch.Tensor, free: Sequence[int], num_j: int) -> torch.Tensor:
    aa = free_aa.new_zeros(free_aa.shape[0], num_j, 3)
    return aa.index_copy(1, torch.tensor(list(free)), free_aa)


def fit_poses(
    meshes: torch.Tensor, rest: torch.Tensor, joints: torch.Tensor, weights: torch.Tensor, parents: Sequence[int],
    poses: torch.Tensor, *, transl: torch.Tensor | None = None, free: Sequence[int] | None = None,
    pose_basis: torch.Tensor | None = None, feature_joints: Sequence[int] = (), shape_basis: torch.Tensor | None = None,
    joint_shape_basis: torch.Tensor | None = None, vertex_ids: torch.Tensor | None = None, steps: int = 12,
    chunk: int = 8, anchored: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Re-fit per-mesh joint rotations ``poses (N, J, 3)`` (axis-angle; only the ``free`` joints move,
    default those rotated in ``poses`` and the root) and translations ``(N, 3)`` so the model reproduces
    ``meshes (N, V, 3)``; with ``shape_basis (K, V, 3)`` and ``joint_shape_basis (K, J, 3)`` also shape
    coefficients ``(N, K)`` added to ``rest (N|1, V, 3)`` and ``joints (N|1, J, 3)``.

    Levenberg-Marquardt per mesh (the meshes are independent problems, solved together in blocks of
    ``chunk``) on the vertex errors over ``vertex_ids`` (default all), with forward-difference Jacobians
    (float64). Meshes flagged in ``anchored (N,)`` only move their root and translation (rest scans,
    which pin down each subject's rest pose). Returns ``(poses, transl, coeffs)``.
    """
    n, num_j = poses.shape[0], len(parents)
    tree = KinematicTree.from_parents(parents)
    ids = torch.arange(meshes.shape[1]) if vertex_ids is None else vertex_ids
    if free is None:
        free = sorted({0} | {j for j in range(num_j) if bool(poses[:, j].abs().sum() > 0)})
    nf = len(free)
    w = weights[ids].double()
    sub_basis = None if pose_basis is None else pose_basis[:, ids].double()
    sub_shape = None if shape_basis is None else shape_basis[:, ids].double()
    k = 0 if sub_shape is None else sub_shape.shape[0]
    t0 = torch.zeros(n, 3, dtype=torch.float64) if transl is None else transl.double()
    theta = torch.cat([poses[:, list(free)].double().reshape(n, -1), t0, t0.new_zeros(n, k)], 1)
    rest_b = rest.double()[:, ids].expand(n, -1, -1)
    joints_b = joints.double().expand(n, -1, -1)
    target = meshes[:, ids].double()

    def residual(th: torch.Tensor, sl: slice | torch.Tensor) -> torch.Tensor:
        m = th.shape[0]
        r, j = rest_b[sl], joints_b[sl]
        if k and sub_shape is not None and joint_shape_basis is not None:
            c = th[:, 3 * nf + 3:]
            r = r + torch.einsum("nk,kvd->nvd", c, sub_shape)
            j = j + torch.einsum("nk,kjd->njd", c, joint_shape_basis.double())
        rot = axis_angle_to_matrix(_full(th[:, :3 * nf].reshape(m, nf, 3), free, num_j))
        pred, _ = posed_vertices(r, j, w, tree, rot, th[:, 3 * nf:3 * nf + 3], sub_basis, feature_joints)
        return (pred - target[sl]).reshape(m, -1)

    dim = theta.shape[1]
    movable = torch.ones(n, dim, dtype=torch.float64)
    if anchored is not None:
        movable[anchored.bool(), 3:3 * nf] = 0.0
    for sl in chunk_slices(n, chunk):
        th = theta[sl].clone()
        m = th.shape[0]
        damp = th.new_full((m,), 1e-3)
        with torch.no_grad():
            res = residual(th, sl)
            cost = res.pow(2).sum(1)
            for _ in range(steps):
                eps = 1e-6
                shifted = (th[:, None] + eps * torch.eye(dim, dtype=th.dtype)).reshape(m * dim, dim)
                rows = torch.arange(sl.start, sl.stop).repeat_interleave(dim)
                jac = ((residual(shifted, rows).view(m, dim, -1) - res[:, None]) / eps).transpose(1, 2)  # (m, M, D)
                jtj = jac.transpose(1, 2) @ jac
                jac = jac * movable[sl][:, None]
                grad = (jac.transpose(1, 2) @ res[..., None])[..., 0]
                diag = torch.diagonal(jtj, dim1=1, dim2=2)
                step = torch.linalg.solve(jtj + torch.diag_embed(damp[:, None] * diag + 1e-9), -grad[..., None])[..., 0]
                trial = th + step
                new_res = residual(trial, sl)
                new_cost = new_res.pow(2).sum(1)
                better = new_cost < cost
                th = torch.where(better[:, None], trial, th)
                res = torch.where(better[:, None], new_res, res)
                cost = torch.where(better, new_cost, cost)
                damp = torch.where(better, damp / 3, damp * 4).clamp(1e-9, 1e9)
        theta[sl] = th
    out = _full(theta[:, :3 * nf].reshape(n, nf, 3), free, num_j)
    return out, theta[:, 3 * nf:3 * nf + 3], theta[:, 3 * nf + 3:] if k else None


def chunk_slices(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]
