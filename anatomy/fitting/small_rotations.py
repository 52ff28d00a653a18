"""Small-matrix kernels for the fits: Rodrigues, 3x3 products and a kinematic chain, written elementwise.

torch's batched matrix product is slow for millions of 3x3 matrices on a CPU (1,024 x 25 products take
4.2 ms as ``a @ b`` on one core of the 2-core machine, far more than the arithmetic), and a batched fit
makes exactly such products in every step. These functions give the same values as
:func:`anatomy.core.rotations.axis_angle_to_matrix` and :func:`anatomy.core.kinematics.forward_kinematics`
(tests compare them) with elementwise operations only; the tree is walked one depth level at a time.
"""

from __future__ import annotations

import torch

from ..core.kinematics import KinematicTree
from ..core.rotations import matrix_to_euler

__all__ = ["Chain", "limit_penalty", "mm3", "mv3", "rodrigues"]


def mm3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``(..., 3, 3)`` matrices, elementwise (three broadcast products: a reduction over a
    middle dimension is slow)."""
    return a[..., :, 0:1] * b[..., 0:1, :] + a[..., :, 1:2] * b[..., 1:2, :] + a[..., :, 2:3] * b[..., 2:3, :]


def mv3(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a @ v`` for ``(..., 3, 3)`` matrices and ``(..., 3)`` vectors."""
    return a[..., :, 0] * v[..., 0:1] + a[..., :, 1] * v[..., 1:2] + a[..., :, 2] * v[..., 2:3]


def rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` -> rotation ``(..., 3, 3)``: ``I cos t + a [v]_x + b v v^T`` with
    ``a = sin t / t``, ``b = (1 - cos t) / t^2`` (Taylor series near 0: finite value and gradient)."""
    t2 = (aa * aa).sum(-1)
    small = t2 < 1e-6
    safe = torch.where(small, torch.ones_like(t2), t2)
    t = safe.sqrt()
    a = torch.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, (1.0 - torch.cos(t)) / safe)
    c = 1.0 - b * t2  # cos t
    x, y, z = aa.unbind(-1)
    rows = [c + b * x * x, b * x * y - a * z, b * x * z + a * y,
            b * x * y + a * z, c + b * y * y, b * y * z - a * x,
            b * x * z - a * y, b * y * z + a * x, c + b * z * z]
    return torch.stack(rows, -1).reshape(aa.shape + (3,))


class Chain:
    """Forward kinematics of a tree by depth level, elementwise (see the module text)."""

    def __init__(self, tree: KinematicTree, device: torch.device) -> None:
        parents = list(tree.parents)
        depth = [0] * len(parents)
        for j, p in enumerate(parents):
            depth[j] = 0 if p < 0 else depth[p] + 1
        self.levels: list[torch.Tensor] = []
        self.parent_pos: list[torch.Tensor] = []  # index of each joint's parent within the previous level
        self.parent_ids: list[torch.Tensor] = []
        for d in range(max(depth) + 1):
            ids = [j for j in range(len(parents)) if depth[j] == d]
            self.levels.append(torch.tensor(ids, device=device))
            if d:
                prev = self.levels[d - 1].tolist()
                self.parent_pos.append(torch.tensor([prev.index(parents[j]) for j in ids], device=device))
                self.parent_ids.append(torch.tensor([parents[j] for j in ids], device=device))
        self.inverse = torch.argsort(torch.cat(self.levels))

    def __call__(self, rotations: torch.Tensor, joints: torch.Tensor, *, scale: torch.Tensor | None = None,
                 transl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``rotations (B, J, 3, 3)`` local, rest ``joints (B, J, 3)`` -> posed ``(positions (B, J, 3),
        global rotations (B, J, 3, 3))``, with ``scale (B,)`` about the origin and then ``transl (B, 3)``."""
        glob_r = [rotations[:, self.levels[0]]]
        glob_t = [joints[:, self.levels[0]]]
        for d in range(1, len(self.levels)):
            ids, pp, par = self.levels[d], self.parent_pos[d - 1], self.parent_ids[d - 1]
            rel = joints[:, ids] - joints[:, par]
            pr = glob_r[-1][:, pp]
            glob_r.append(mm3(pr, rotations[:, ids]))
            glob_t.append(mv3(pr, rel) + glob_t[-1][:, pp])
        pos = torch.cat(glob_t, 1)[:, self.inverse]
        rot = torch.cat(glob_r, 1)[:, self.inverse]
        if scale is not None:
            pos = pos * scale[:, None, None]
        if transl is not None:
            pos = pos + transl[:, None]
        return pos, rot


def limit_penalty(frames: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, rotations: torch.Tensor
                  ) -> torch.Tensor:
    """:meth:`anatomy.constraints.JointLimits.penalty` (sum of squared angle violations, ``(B,)``), elementwise."""
    f = frames.to(rotations)
    in_frame = mm3(mm3(f.transpose(-1, -2), rotations), f)
    ang = matrix_to_euler(in_frame, "XYZ")
    v = torch.relu(ang - upper.to(ang)) + torch.relu(lower.to(ang) - ang)
    return v.square().sum((-1, -2))
