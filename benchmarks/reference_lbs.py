"""A straightforward SMPL-style blend-shape + LBS forward pass, the benchmarks' yardstick.

Written the way most public body/hand layers do it: separate shape and pose
contractions, a joint regressor applied to the shaped vertices every call, a
Python loop over the joints for the kinematic chain, and dense per-vertex 4x4
transforms for skinning. It is deliberately not optimised.
"""

from __future__ import annotations

import torch


def reference_lbs(
    betas: torch.Tensor,  # (B, K)
    rot_mats: torch.Tensor,  # (B, J, 3, 3)
    template: torch.Tensor,  # (V, 3)
    shapedirs: torch.Tensor,  # (V, 3, K)
    posedirs: torch.Tensor,  # (P, 3V), P = 9 (J - 1)
    j_regressor: torch.Tensor,  # (J, V)
    parents: list[int],
    weights: torch.Tensor,  # (V, J)
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_j = rot_mats.shape[:2]
    v_shaped = template + torch.einsum("bl,mkl->bmk", betas, shapedirs)
    joints = torch.einsum("bik,ji->bjk", v_shaped, j_regressor)
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + torch.matmul(pose_feature, posedirs).view(batch, -1, 3)

    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    bottom = torch.tensor([0, 0, 0, 1], dtype=rot_mats.dtype, device=rot_mats.device).expand(batch, num_j, 1, 4)
    local = torch.cat([torch.cat([rot_mats, rel[..., None]], -1), bottom], -2)
    chain = [local[:, 0]]
    for j in range(1, num_j):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, 1)
    posed_joints = world[:, :, :3, 3]
    joints_h = torch.cat([joints, torch.zeros_like(joints[..., :1])], -1)[..., None]
    rel_t = torch.nn.functional.pad(world @ joints_h, [3, 0])
    transforms = world - rel_t

    w = weights.expand(batch, -1, -1)
    per_vertex = torch.matmul(w, transforms.view(batch, num_j, 16)).view(batch, -1, 4, 4)
    homo = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], -1)
    verts = torch.matmul(per_vertex, homo[..., None])[:, :, :3, 0]
    return verts, posed_joints
