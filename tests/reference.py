"""Naive reference implementations used as test oracles (float64, loops, no tricks).

Independent of the package's core: per-joint chain composition with 4x4 matrices
and per-vertex skinning, written as directly from the formulas as possible.
"""

from __future__ import annotations

import torch


def rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """One axis-angle vector (3,) -> (3, 3) by the textbook formula (not safe at 0)."""
    theta = aa.norm()
    if float(theta) < 1e-12:
        return torch.eye(3, dtype=aa.dtype) + torch.tensor(
            [[0, -aa[2], aa[1]], [aa[2], 0, -aa[0]], [-aa[1], aa[0], 0]], dtype=aa.dtype
        )
    k = aa / theta
    kx = torch.zeros(3, 3, dtype=aa.dtype)
    kx[0, 1], kx[0, 2], kx[1, 0], kx[1, 2], kx[2, 0], kx[2, 1] = -k[2], k[1], k[2], -k[0], -k[1], k[0]
    return torch.eye(3, dtype=aa.dtype) + torch.sin(theta) * kx + (1 - torch.cos(theta)) * kx @ kx


def naive_lbs(
    template: torch.Tensor,  # (V, 3)
    rotations: torch.Tensor,  # (B, J, 3, 3)
    weights: torch.Tensor,  # (V, J)
    regressor: torch.Tensor,  # (J, V)
    parents: list[int],
    bases: torch.Tensor | None = None,  # (K, V, 3)
    coeffs: torch.Tensor | None = None,  # (B, K)
    pose_basis: torch.Tensor | None = None,  # (P, V, 3)
    pose_joints: list[int] | None = None,
    offsets: torch.Tensor | None = None,  # (B, J, 3)
    scale: torch.Tensor | None = None,  # (B,)
    translation: torch.Tensor | None = None,  # (B, 3)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices (B, V, 3) and posed joints (B, J, 3), one sample and one joint at a time."""
    batch, num_j = rotations.shape[:2]
    num_v = template.shape[0]
    eye = torch.eye(3, dtype=template.dtype)
    all_verts, all_joints = [], []
    for b in range(batch):
        shaped = template.clone()
        if bases is not None and coeffs is not None:
            for k in range(bases.shape[0]):
                shaped = shaped + coeffs[b, k] * bases[k]
        joints = regressor @ shaped
        posed = shaped.clone()
        if pose_basis is not None and pose_joints is not None:
            feats = torch.cat([(rotations[b, j] - eye).reshape(-1) for j in pose_joints])
            for p in range(feats.shape[0]):
                posed = posed + feats[p] * pose_basis[p]
        world = []
        for j in range(num_j):
            local = torch.eye(4, dtype=template.dtype)
            local[:3, :3] = rotations[b, j]
            t = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
            if offsets is not None:
                t = t + offsets[b, j]
            local[:3, 3] = t
            world.append(local if parents[j] < 0 else world[parents[j]] @ local)
        s = scale[b] if scale is not None else torch.ones((), dtype=template.dtype)
        t = translation[b] if translation is not None else torch.zeros(3, dtype=template.dtype)
        post = torch.cat([torch.cat([s * eye, t[:, None]], 1), torch.eye(4, dtype=template.dtype)[3:]], 0)
        world = [post @ w for w in world]
        skin = []
        for j in range(num_j):
            unpose = torch.eye(4, dtype=template.dtype)
            unpose[:3, 3] = -joints[j]
            skin.append(world[j] @ unpose)
        verts = torch.zeros(num_v, 3, dtype=template.dtype)
        for v in range(num_v):
            m = sum(weights[v, j] * skin[j] for j in range(num_j))
            verts[v] = (m @ torch.cat([posed[v], torch.ones(1, dtype=template.dtype)]))[:3]
        all_verts.append(verts)
        all_joints.append(torch.stack([w[:3, 3] for w in world]))
    return torch.stack(all_verts), torch.stack(all_joints)


def random_model(num_v: int, parents: list[int], num_k: int, dtype: torch.dtype = torch.float64,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but valid model arrays: weights and regressor rows sum to 1."""
    g = torch.Generator().manual_seed(seed)
    num_j = len(parents)
    weights = torch.rand(num_v, num_j, generator=g, dtype=dtype) ** 4
    weights = weights / weights.sum(1, keepdim=True)
    regressor = torch.rand(num_j, num_v, generator=g, dtype=dtype)
    regressor = regressor / regressor.sum(1, keepdim=True)
    return {
        "template": torch.randn(num_v, 3, generator=g, dtype=dtype) * 10,
        "weights": weights,
        "regressor": regressor,
        "bases": torch.randn(num_k, num_v, 3, generator=g, dtype=dtype),
        "pose_basis": torch.randn(9 * (num_j - 1), num_v, 3, generator=g, dtype=dtype) * 0.5,
    }
