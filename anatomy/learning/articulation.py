"""A skinned model's articulation learned from posed meshes in template correspondence.

SMPL-style alternating optimisation (Loper et al. 2015, "SMPL: A Skinned Multi-Person Linear Model",
ACM TOG 34(6), section 4: pose parameters from multi-pose registrations). From meshes ``(N, V, 3)`` of
``S`` subjects, initial per-joint poses and a base rig (parents, skinning weights, joint regressor),
:func:`learn_articulation` repeats:

1. **rest meshes and pose correctives**: every mesh is unposed with the current weights, joints and
   pose (the inverse of each vertex's blended transform). The correctives ``P`` are the ridge
   regression of the within-subject centred unposed meshes on the centred ``R_j - I`` features (row
   major, the ``ModelData.pose_basis`` convention); each vertex only uses the joints of its skinning
   support, and their children (spatially local correctives, as in STAR: Osman et al. 2020,
   "STAR: Sparse Trained Articulated Human Body Regressor", ECCV). Each subject's rest mesh is then the
   mean of its unposed rest scans (else of all its unposed meshes minus their mean corrective).
2. **joints**: each subject's rest joints from the joint regressor on its rest mesh.
3. **skinning weights**: per vertex, the least squares fit over all meshes, non-negative and summing
   to 1, on a support of at most ``support`` joints (the base's, filled with the nearest rotating
   joints), by :func:`simplex_lstsq`.
4. **poses**: every mesh's joint rotations and translation re-fitted (:func:`fit_poses`, Levenberg-Marquardt).

Last, the **joint regressor**: per joint, sparse non-negative weights summing to 1 on a few rest
vertices (the base's support and the nearest ones) mapping the rest meshes to the joint targets (by
the base regressor's joints of the learned rest meshes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.alignment import procrustes
from ..core.blend import pose_features
from ..core.errors import ParameterError, ShapeError
from ..core.kinematics import KinematicTree, forward_kinematics
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .pose_fit import chunk_slices, fit_poses, posed_vertices

__all__ = ["Articulation", "fit_poses", "learn_articulation", "simplex_lstsq"]


@dataclass(frozen=True)
class Articulation:
    """The learned arrays (float64). ``rest (S, V, 3)`` and ``rest_joints (S, J, 3)`` per subject;
    ``weights (V, J)``; ``regressor (J, V)``; ``pose_basis (9 F, V, 3)`` driven by ``feature_joints``;
    per mesh ``poses (N, J, 3)`` axis-angle, ``transl (N, 3)``, ``subjects (N,)`` (index into ``rest``);
    ``history``: mean vertex error (mm) over the training meshes after each iteration."""

    rest: torch.Tensor
    rest_joints: torch.Tensor
    weights: torch.Tensor
    regressor: torch.Tensor
    pose_basis: torch.Tensor
    feature_joints: tuple[int, ...]
    poses: torch.Tensor
    transl: torch.Tensor
    subjects: torch.Tensor
    history: list[float] = field(default_factory=list)


def simplex_lstsq(gram: torch.Tensor, rhs: torch.Tensor, valid: torch.Tensor, prior: torch.Tensor | None = None,
                  ridge: float = 0.0) -> torch.Tensor:
    """Per row ``b``: ``argmin_w w^T G w - 2 r^T w + lam |w - prior|^2`` with ``w >= 0``, ``sum w = 1`` and
    ``w = 0`` where not ``valid`` (``gram (B, k, k)``, ``rhs (B, k)``, ``valid (B, k)`` bool, ``k <= 10``;
    ``lam = ridge * (trace(G) - 1^T G 1 / k) / k``).

    Exact: the optimum of this small convex QP is the equality-constrained solution on its own support,
    so every subset of the valid slots is solved (KKT system) and the best feasible one kept.
    """
    batch, k = rhs.shape
    if k > 10:
        raise ParameterError(f"simplex_lstsq enumerates supports; k must be <= 10, got {k}.")
    if not bool(valid.any(1).all()):
        raise ParameterError("every row of simplex_lstsq needs at least one valid slot.")
    g = gram.double()
    r = rhs.double()
    # the ridge is relative to the spread of the columns about their mean (trace(G) - 1'G1 / k): the
    # common part of the columns (e.g. absolute positions) says nothing about the split
    spread = torch.diagonal(g, dim1=1, dim2=2).sum(1) - g.sum((1, 2)) / k
    lam = ridge * spread.clamp_min(1e-12) / k
    eye = torch.eye(k, dtype=g.dtype)
    g = g + lam[:, None, None] * eye
    if prior is not None:
        r = r + lam[:, None] * prior.double()
    best = torch.full((batch,), float("inf"), dtype=g.dtype)
    out = torch.zeros(batch, k, dtype=g.dtype)
    for bits in itertools.product((False, True), repeat=k):
        if not any(bits):
            continue
        sub = torch.tensor(bits)
        usable = ~(sub & ~valid).any(1)  # the subset only uses valid slots
        m = sub.to(g.dtype).expand(batch, k)
        a = g.new_zeros(batch, k + 1, k + 1)
        a[:, :k, :k] = g * m[:, :, None] * m[:, None, :] + torch.diag_embed(1 - m)
        a[:, :k, k] = m
        a[:, k, :k] = m
        b = torch.cat([r * m, g.new_ones(batch, 1)], 1)
        w = torch.linalg.solve(a, b[..., None])[:, :k, 0] * m
        cost = (w[:, None, :] @ g @ w[:, :, None])[:, 0, 0] - 2 * (w * r).sum(1)
        better = usable & (w >= -1e-10).all(1) & (cost < best)
        best = torch.where(better, cost, best)
        out = torch.where(better[:, None], w, out)
    out = out.clamp_min(0)
    return out / out.sum(1, keepdim=True)


def _weight_support(base: torch.Tensor, joints: torch.Tensor, template: torch.Tensor, free: Sequence[int],
                    parents: Sequence[int], k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(V, k)`` joint ids and validity, and the base weights ``(V, J)`` on rotating joints: the base's
    joints (a joint that does not rotate handed to its nearest rotating ancestor, whose transform it
    shares), then the nearest rotating joints (distance to the segment from the joint to the mean of its
    children)."""
    num_j = base.shape[1]
    owner = list(range(num_j))
    for j in range(num_j):
        while owner[j] not in free and parents[owner[j]] >= 0:
            owner[j] = parents[owner[j]]
    merged = torch.zeros_like(base).index_add_(1, torch.tensor(owner), base)
    ends = joints.clone()
    for j in range(num_j):
        kids = [c for c in range(num_j) if parents[c] == j]
        if kids:
            ends[j] = joints[kids].mean(0)
    seg = ends - joints
    u = (((template[:, None] - joints) * seg).sum(-1) / seg.pow(2).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    dist = (template[:, None] - joints - u[..., None] * seg).norm(dim=-1)
    score = torch.where(merged > 0, -1.0 - merged, dist)
    rotating = torch.zeros(num_j, dtype=torch.bool)
    rotating[list(free)] = True
    score = score.masked_fill(~rotating, float("inf"))
    kk = min(k, len(free))
    s, ids = score.topk(kk, dim=1, largest=False)
    return ids, torch.isfinite(s), merged


def _feature_mask(support: torch.Tensor, valid: torch.Tensor, feature_joints: Sequence[int],
                  parents: Sequence[int]) -> torch.Tensor:
    """``(V, F)``: the feature joints of each vertex's support and their children (a joint bends the
    skin of its own bone and of its parent's)."""
    num_j = len(parents)
    near = torch.zeros(num_j, num_j, dtype=torch.bool)  # near[a, b]: b is a or a child of a
    for a in range(num_j):
        near[a, a] = True
        if parents[a] >= 0:
            near[parents[a], a] = True
    hit = (near[support] & valid[..., None]).any(1)  # (V, J)
    return hit[:, list(feature_joints)]


def _reference(x: torch.Tensor, subj: torch.Tensor, num_s: int, ref: torch.Tensor) -> torch.Tensor:
    """Per subject, the mean of ``x (N, ...)`` over its reference meshes (``ref (N,)`` weights)."""
    total = torch.zeros(num_s, dtype=torch.float64).index_add_(0, subj, ref)
    shape = (-1,) + (1,) * (x.dim() - 1)
    out = torch.zeros(num_s, *x.shape[1:], dtype=torch.float64).index_add_(0, subj, x * ref.view(shape))
    return out / total.view(shape)


def _correctives(unposed: torch.Tensor, feats: torch.Tensor, subj: torch.Tensor, num_s: int, mask: torch.Tensor,
                 ridge: float, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ridge regression of the unposed meshes on the features, both relative to each subject's
    reference (the mean over its rest scans, else over all its meshes): ``(pose_basis (9F, V, 3),
    rest (S, V, 3))``."""
    n, v = unposed.shape[:2]
    mean_u = _reference(unposed, subj, num_s, ref)
    mean_f = _reference(feats, subj, num_s, ref)
    fc = feats - mean_f[subj]
    uc = (unposed - mean_u[subj]).reshape(n, v * 3)
    basis = torch.zeros(feats.shape[1], v, 3, dtype=torch.float64)
    patterns, group = torch.unique(mask, dim=0, return_inverse=True)
    for g in range(patterns.shape[0]):
        cols = torch.nonzero(patterns[g].repeat_interleave(9)).reshape(-1)
        if cols.numel() == 0:
            continue
        verts = torch.nonzero(group == g).reshape(-1)
        x = fc[:, cols]
        y = uc.view(n, v, 3)[:, verts].reshape(n, -1)
        xtx = x.T @ x
        lam = ridge * float(torch.diagonal(xtx).mean().clamp_min(1e-12))
        sol = torch.linalg.solve(xtx + lam * torch.eye(cols.numel(), dtype=x.dtype), x.T @ y)
        basis[cols[:, None], verts[None, :]] = sol.view(cols.numel(), verts.numel(), 3)
    rest = mean_u - torch.einsum("sp,pvd->svd", mean_f, basis)
    return basis, rest


def _transforms(rot: torch.Tensor, joints: torch.Tensor, tree: KinematicTree, transl: torch.Tensor) -> torch.Tensor:
    return forward_kinematics(rot, joints, tree, translation=transl).transforms


def _gauge(rest: torch.Tensor, template: torch.Tensor, p: torch.Tensor, t: torch.Tensor, subj: torch.Tensor,
           free: Sequence[int], joint_of: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fix the gauge of posed data: a subject's rest mesh turned by ``Q`` (and moved), its root rotation by
    ``Q^T`` and its other joint rotations conjugated by ``Q`` pose identically. Each rest mesh is put onto
    the base template by rigid Procrustes, the poses and translations changed to match."""
    frame = procrustes(rest, template.double().expand_as(rest))
    q = frame.rotation[subj]  # (N, 3, 3)
    new_rest = frame.apply(rest)
    j_old, j_new = joint_of(rest), joint_of(new_rest)  # (S, J, 3)
    rot = axis_angle_to_matrix(p)
    idx = torch.tensor([j for j in free if j != 0], dtype=torch.long)
    rot[:, 0] = rot[:, 0] @ q.transpose(1, 2)
    rot[:, idx] = q[:, None] @ rot[:, idx] @ q.transpose(1, 2)[:, None]
    new_p = torch.zeros_like(p)
    new_p[:, list(free)] = matrix_to_axis_angle(rot[:, list(free)])
    new_t = t + j_old[subj, 0] - j_new[subj, 0]
    return new_rest, new_p, new_t


def _unpose(meshes: torch.Tensor, transforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Invert each vertex's blended transform: ``meshes (n, V, 3)`` -> rest-posed points."""
    blended = torch.einsum("vj,njab->nvab", weights, transforms)
    moved = (meshes - blended[..., 3])[..., None]
    return torch.linalg.solve(blended[..., :3], moved)[..., 0]


def _fit_weights(meshes: torch.Tensor, points: torch.Tensor, transforms: torch.Tensor, support: torch.Tensor,
                 valid: torch.Tensor, prior: torch.Tensor, ridge: float, chunk: int) -> torch.Tensor:
    """Per-vertex simplex least squares of ``sum_i w_i A_{s_i} x = y`` over all meshes -> ``(V, J)``."""
    v, k = support.shape
    gram = torch.zeros(v, k, k, dtype=torch.float64)
    rhs = torch.zeros(v, k, dtype=torch.float64)
    for sl in chunk_slices(meshes.shape[0], chunk):
        a = transforms[sl][:, support]  # (n, V, k, 3, 4)
        cols = (a[..., :3] @ points[sl][:, :, None, :, None])[..., 0] + a[..., 3]  # (n, V, k, 3)
        gram += torch.einsum("nvid,nvjd->vij", cols, cols)
        rhs += torch.einsum("nvid,nvd->vi", cols, meshes[sl])
    w = simplex_lstsq(gram, rhs, valid, prior.gather(1, support), ridge)
    return torch.zeros(v, prior.shape[1], dtype=torch.float64).scatter_add_(1, support, w)


def _fit_regressor(rest: torch.Tensor, targets: torch.Tensor, base: torch.Tensor, k: int, ridge: float,
                   allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse non-negative rows summing to 1 (``(J, V)``): the base row's vertices, then the ``allowed`` rest
    vertices nearest to the mean target, ``k`` in all, fitted to ``targets (S, J, 3)`` from ``rest (S, V, 3)``."""
    num_j, v = base.shape
    mean_rest = rest.mean(0)
    dist = torch.cdist(targets.mean(0), mean_rest)  # (J, V)
    if allowed is not None:
        dist = dist.masked_fill(~allowed, float("inf"))
    score = torch.where(base > 0, -1.0 - base, dist)
    _, support = score.topk(k, dim=1, largest=False)  # (J, k)
    x = rest[:, support]  # (S, J, k, 3)
    gram = torch.einsum("sjid,sjkd->jik", x, x)
    rhs = torch.einsum("sjid,sjd->ji", x, targets)
    w = simplex_lstsq(gram, rhs, torch.ones(num_j, k, dtype=torch.bool), base.gather(1, support), ridge)
    return torch.zeros(num_j, v, dtype=torch.float64).scatter_add_(1, support, w)


def _check(meshes: Any, poses: Any, subjects: Any, weights: torch.Tensor, regressor: torch.Tensor,
           parents: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    y = torch.as_tensor(meshes)
    v, num_j = weights.shape
    if y.dim() != 3 or y.shape[1:] != (v, 3) or not y.is_floating_point():
        raise ShapeError(f"meshes must be (N, {v}, 3) float meshes in the base model's vertex order; got "
                         f"{tuple(y.shape)} {y.dtype}.")
    p = torch.as_tensor(poses)
    if p.dim() != 3 or p.shape != (y.shape[0], num_j, 3):
        raise ShapeError(f"poses must be (N, {num_j}, 3) axis-angle per joint with N = {y.shape[0]} meshes; got "
                         f"{tuple(p.shape)}.")
    s = torch.as_tensor(subjects)
    if s.shape != (y.shape[0],) or s.is_floating_point() or (s.numel() and int(s.min()) < 0):
        raise ShapeError(f"subjects must be ({y.shape[0]},) non-negative integer subject ids; got {tuple(s.shape)}.")
    if tuple(regressor.shape) != (num_j, v) or len(parents) != num_j:
        raise ShapeError(f"the base rig is inconsistent: weights {tuple(weights.shape)}, regressor "
                         f"{tuple(regressor.shape)}, {len(parents)} parents.")
    if not (bool(torch.isfinite(y).all()) and bool(torch.isfinite(p).all())):
        raise ParameterError("meshes or poses hold NaN or inf values.")
    _, subj = torch.unique(s, return_inverse=True)
    num_s = int(subj.max()) + 1 if subj.numel() else 0
    counts = torch.bincount(subj, minlength=num_s) if num_s else torch.zeros(0)
    if y.shape[0] < 4 or num_s < 1 or int(counts.max()) < 2:
        raise ParameterError(f"learning an articulation needs at least 4 meshes and a subject seen in 2 or more "
                             f"poses; got {y.shape[0]} meshes of {num_s} subjects (most poses of one subject: "
                             f"{int(counts.max()) if num_s else 0}).")
    return y.double(), p.double(), subj, num_s


def learn_articulation(
    meshes: Any, poses: Any, subjects: Any, template: torch.Tensor, weights: torch.Tensor, regressor: torch.Tensor,
    parents: Sequence[int], *, transl: Any = None, iterations: int = 3, inner: int = 3, warmup: int = 2,
    support: int = 4, weight_ridge: float = 1e-3, corrective_ridge: float = 1e-4, regressor_support: int = 8,
    regressor_ridge: float = 1e-3, rigid_vertices: Any = None, fit_vertices: int = 40, fit_steps: int = 5,
    chunk: int = 8, seed: int = 0,
) -> Articulation:
    """Learn rest meshes, skinning weights, pose correctives, joint regressor and poses (module docs).

    Args:
        meshes: ``(N, V, 3)`` posed meshes in the base's vertex order (mm).
        poses: ``(N, J, 3)`` initial axis-angle per joint (e.g. from the fits); joints never rotated here
            (nor the root) stay fixed and get no correctives. Meshes whose non-root rows are all zero are
            rest scans: only their root and translation are re-fitted. Posed data alone do not fix how
            each bone lies in a subject's rest mesh (a bone turned there and the opposite turn in every
            pose fit the meshes alike), so give every subject a rest scan (e.g. the phantoms' pose 0).
        subjects: ``(N,)`` subject id of each mesh (meshes of one subject share a rest mesh).
        template, weights, regressor, parents: the base rig: rest mesh ``(V, 3)`` (its joints start the
            alternation), ``(V, J)``, ``(J, V)`` (dense or sparse), ``J`` parents.
        transl: ``(N, 3)`` initial translations (default 0).
        iterations: rounds of the alternation; inner: unposing / correctives / joints passes per round;
            warmup: rounds of rest meshes and pose fits without correctives before them.
        support, regressor_support: non-zeros per vertex (skinning) and per joint (regressor).
        rigid_vertices: ``(V,)`` bool mask of the vertices of rigid tissue (the hand's bones; default none).
            They keep the base's skinning weights and get no pose correctives (else blends and correctives
            may stand in for a bone's rotation and the poses fitted to new meshes drift), and the regressor
            only adds vertices from them (soft tissue sliding around a joint would move the regressed joint).
        weight_ridge, corrective_ridge, regressor_ridge: ridge weights relative to each system's mean
            diagonal (weights and regressor rows pulled to the base's, correctives to zero).
        fit_vertices: vertices per joint (those it weighs most) in the pose fits; fit_steps: their iterations.
        chunk: meshes per block in the weight and unposing steps (memory).
    """
    w0 = (weights.to_dense() if weights.is_sparse else weights).double()
    r0 = (regressor.to_dense() if regressor.is_sparse else regressor).double()
    y, p, subj, num_s = _check(meshes, poses, subjects, w0, r0, parents)
    n, v = y.shape[:2]
    num_j = len(parents)
    allowed = None
    if rigid_vertices is not None:
        allowed = torch.as_tensor(rigid_vertices, dtype=torch.bool)
        if allowed.shape != (v,) or int(allowed.sum()) < regressor_support:
            raise ShapeError(f"rigid_vertices must be a ({v},) bool mask with at least regressor_support = "
                             f"{regressor_support} vertices set; got {tuple(allowed.shape)} with "
                             f"{int(allowed.sum())} set.")
    tree = KinematicTree.from_parents(parents)
    free = sorted({0} | {j for j in range(num_j) if bool(p[:, j].abs().sum() > 0)})
    feature_joints = tuple(j for j in free if j != 0)
    anchored = p[:, 1:].abs().sum((1, 2)) == 0  # rest scans: their joint rotations are known (zero)
    has_anchor = torch.zeros(num_s, dtype=torch.bool).index_fill_(0, subj[anchored], True)
    ref = torch.where(has_anchor[subj], anchored.double(), torch.ones(n, dtype=torch.float64))
    t = torch.zeros(n, 3, dtype=torch.float64) if transl is None else torch.as_tensor(transl).double()
    gen = torch.Generator().manual_seed(seed)
    top = w0.argmax(1)
    fit_ids = torch.cat([ids[torch.randperm(ids.numel(), generator=gen)[:fit_vertices]]
                         for j in range(num_j) if (ids := torch.nonzero(top == j).reshape(-1)).numel()])
    w, basis = w0.clone(), torch.zeros(9 * len(feature_joints), v, 3, dtype=torch.float64)
    history: list[float] = []

    def regress(meshes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("jv,svd->sjd", r0, meshes)

    # warm-up without correctives: unpose, rest meshes, their joints (twice), then re-fit the poses
    joints = torch.einsum("jv,vd->jd", r0, template.double()).expand(num_s, -1, -1)
    rest = template.double().expand(num_s, -1, -1)
    for step in range(2 * warmup + 2):
        rot = axis_angle_to_matrix(p)
        unposed = torch.cat([_unpose(y[sl], _transforms(rot[sl], joints[subj[sl]], tree, t[sl]), w)
                             for sl in chunk_slices(n, chunk)])
        rest = _reference(unposed, subj, num_s, ref)
        del unposed
        joints = regress(rest)
        if step % 2 == 1 and step < 2 * warmup:
            p, t, _ = fit_poses(y, rest[subj], joints[subj], w, parents, p, transl=t, free=free, vertex_ids=fit_ids,
                                steps=fit_steps, anchored=anchored)
            rest, p, t = _gauge(rest, template, p, t, subj, free, regress)
            joints = regress(rest)
    sup, valid, prior = _weight_support(w0, joints.mean(0), rest.mean(0), free, parents, support)
    mask = _feature_mask(sup, valid, feature_joints, parents)
    if allowed is not None:
        mask[allowed] = False  # rigid tissue: no correctives
    for _ in range(iterations):
        rot = axis_angle_to_matrix(p)
        feats = pose_features(rot, feature_joints)
        for _ in range(inner):  # the joints follow the rest meshes, which the correctives change
            unposed = torch.cat([_unpose(y[sl], _transforms(rot[sl], joints[subj[sl]], tree, t[sl]), w)
                                 for sl in chunk_slices(n, chunk)])
            basis, rest = _correctives(unposed, feats, subj, num_s, mask, corrective_ridge, ref)
            del unposed
            joints = regress(rest)
        transforms = torch.cat([_transforms(rot[sl], joints[subj[sl]], tree, t[sl]) for sl in chunk_slices(n, chunk)])
        points = rest[subj] + torch.einsum("np,pvd->nvd", feats, basis)
        w = _fit_weights(y, points, transforms, sup, valid, prior, weight_ridge, chunk)
        if allowed is not None:
            w[allowed] = w0[allowed]  # rigid tissue keeps the base's skinning
        del points
        p, t, _ = fit_poses(y, rest[subj], joints[subj], w, parents, p, transl=t, free=free, pose_basis=basis,
                            feature_joints=feature_joints, vertex_ids=fit_ids, steps=fit_steps, anchored=anchored)
        with torch.no_grad():
            rot = axis_angle_to_matrix(p)
            err = [(posed_vertices(rest[subj[sl]], joints[subj[sl]], w, tree, rot[sl], t[sl], basis, feature_joints)[0]
                    - y[sl]).norm(dim=-1).mean(1) for sl in chunk_slices(n, chunk)]
        history.append(float(torch.cat(err).mean()))
    reg = _fit_regressor(rest, regress(rest), r0, regressor_support, regressor_ridge, allowed)
    return Articulation(rest=rest, rest_joints=torch.einsum("jv,svd->sjd", reg, rest), weights=w, regressor=reg,
                        pose_basis=basis, feature_joints=feature_joints, poses=p, transl=t, subjects=subj,
                        history=history)
