"""Batched Levenberg-Marquardt fit of the hand to 3D / 2D keypoints, with analytic Jacobians.

The pose is parameterised by the anatomical angles of the joint limits (``model.joint_limits()``: per
bone, ``R = F R_x(flexion) R_y(abduction) R_z(twist) F^T``), so the limits are box constraints that each
step projects onto (clamping the angles), and locked degrees of freedom are simply not free. A keypoint
``p_k`` moves with angle ``a`` of bone ``b`` (joint ``j``, parent ``P``) as ``w x (p_k - p_j)`` for a
descendant ``k`` of ``j``, with the world axis ``w = G_P F e_x``, ``G_P F R_x e_y`` or
``G_P F R_x R_y e_z``; the global orientation is a world-frame increment about the root joint; the shape
enters through the joint regressor, ``dq_k/dbeta = dq_P/dbeta + G_P (B_k - B_P)`` down the tree.
Robust losses are handled by iteratively reweighted least squares; the priors (normalised shape
coefficients, squared angles) are extra residual rows. Each fit of the batch has its own damping and
accepts or rejects its own steps, so the batch is a set of independent fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.rotations import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from .fit_targets import Keypoints2D, Keypoints3D
from .priors import robust
from .small_rotations import Chain, mm3, mv3

__all__ = ["HandKeypointSolver"]


def _cross_rows(v: torch.Tensor) -> torch.Tensor:
    """``[v]_x`` of ``v (..., 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape + (3,))


def _robust_weight(x: torch.Tensor, kind: str, c: float) -> torch.Tensor:
    """``rho'(x)`` for squared normalised residuals ``x`` (IRLS weights); see :func:`~.priors.robust`."""
    c2 = c * c
    if kind == "l2":
        return torch.ones_like(x)
    if kind == "huber":
        return torch.where(x <= c2, torch.ones_like(x), c / x.clamp_min(1e-12).sqrt())
    if kind == "cauchy":
        return c2 / (c2 + x)
    return (c2 / (x + c2)).square()  # geman_mcclure


class HandKeypointSolver:
    """Fits ``batch`` hands (a :class:`~anatomy.models.Nimble` in axis-angle mode with joint limits) to
    keypoint targets ``[(target, model keypoint index, global-stage mask)]``; see the module text."""

    def __init__(self, model: Any, batch: int, targets: Sequence[tuple[Keypoints3D | Keypoints2D, torch.Tensor,
                 torch.Tensor]], *, opts: Any) -> None:
        self.model, self.batch, self.targets, self.opts = model, batch, list(targets), opts
        dt = torch.float64 if opts.lm_dtype == "float64" else torch.float32
        dev = model.template.device
        lim = model.joint_limits().to(dev, dt)
        self.frames, self.lower, self.upper = lim.frames, lim.lower, lim.upper
        free = (self.upper - self.lower) > 1e-9
        free[0] = False  # bone 0 turns with the global orientation
        self.free = free.reshape(-1)
        self.nf = int(self.free.sum())
        self.chain = Chain(model.tree, dev)
        self.parents = list(model.tree.parents)
        self.bone_joint = model._bone_joints.tolist()
        self.kp_joint = model._keypoint_joints.to(dev)
        nj = model.num_joints
        anc = torch.zeros(nj, nj, dtype=torch.bool)  # anc[k, j]: j is k or an ancestor of k
        for k in range(nj):
            j = k
            while j >= 0:
                anc[k, j] = True
                j = self.parents[j]
        self.bone_mask = anc[:, self.bone_joint].to(dev, dt)  # (J, 20)
        flat = torch.nonzero(self.free).flatten()
        self.free_bone, self.free_angle = (flat // 3).to(dev), (flat % 3).to(dev)
        self.free_mask = self.bone_mask[:, self.free_bone][:, None]  # (J, 1, nf): angle moves joint
        self.joint_t = model.joint_template.to(dt)
        k = model.num_coeffs
        self.k = k
        self.joint_b = None if model.joint_basis is None else model.joint_basis.to(dt).view(k, nj, 3).permute(1, 2, 0)
        self.fit_scale = bool(opts.fit_scale)
        self.angles = torch.zeros(batch, 20, 3, dtype=dt, device=dev).clamp(self.lower, self.upper)
        self.orient = torch.eye(3, dtype=dt, device=dev).expand(batch, 3, 3).clone()
        self.transl = torch.zeros(batch, 3, dtype=dt, device=dev)
        self.log_scale = torch.zeros(batch, dtype=dt, device=dev)
        self.shape = torch.zeros(batch, k, dtype=dt, device=dev)

    # -- model -------------------------------------------------------------------------------------
    def local_rotations(self, angles: torch.Tensor, orient: torch.Tensor) -> torch.Tensor:
        bones = mm3(mm3(self.frames, euler_to_matrix(angles, "XYZ")), self.frames.transpose(-1, -2))
        bones = torch.cat([orient[:, None], bones[:, 1:]], 1)
        eye = torch.eye(3, dtype=bones.dtype, device=bones.device).expand(bones.shape[0], 3, 3)
        rots = [eye] * self.model.num_joints
        out = torch.stack([bones[:, self.bone_joint.index(j)] if j in self.bone_joint else rots[j]
                           for j in range(self.model.num_joints)], 1)
        return out

    def rest_joints(self, shape: torch.Tensor) -> torch.Tensor:
        j = self.joint_t.expand(shape.shape[0], -1, -1)
        if self.joint_b is not None and self.k:
            j = j + (self.joint_b @ shape.t()).permute(2, 0, 1)
        return j

    def pose(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(world joints (B, J, 3), global rotations (B, J, 3, 3), rest joints)`` of a state."""
        angles, orient, transl, log_scale, shape = state
        rest = self.rest_joints(shape)
        scale = log_scale.exp() if self.fit_scale else None
        pos, glob = self.chain(self.local_rotations(angles, orient), rest, scale=scale, transl=transl)
        return pos, glob, rest

    # -- residuals ---------------------------------------------------------------------------------
    def residuals(self, pos: torch.Tensor, stage: str) -> list[tuple[torch.Tensor, torch.Tensor, Any]]:
        """Per target ``(r (B, K, d) in sigmas, row weights (B, K), projector)``."""
        out = []
        kp = pos[:, self.kp_joint]
        for t, index, mask in self.targets:
            use = mask if stage == "global" and int(mask.sum()) >= 3 else torch.ones_like(mask)
            p = kp[:, index.to(kp.device)]
            w = t.weight.to(p) * use.to(p)
            if isinstance(t, Keypoints2D):
                r = (t.camera.project(p) - t.points.to(p)) / self.opts.sigma_px
            else:
                r = (p - t.points.to(p)) / self.opts.sigma_mm
            out.append((r, w, p))
        return out

    def cost(self, state: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        pos, _, _ = self.pose(state)
        o = self.opts
        total = state[4].square().sum(-1) + o.pose_prior * state[0][:, 1:].square().sum((-1, -2))
        for r, w, _ in self.residuals(pos, stage):
            total = total + (w * robust(r.square().sum(-1), o.loss, o.loss_scale)).sum(-1)
        return total

    def jacobian_points(self, pos: torch.Tensor, glob: torch.Tensor, state: tuple[torch.Tensor, ...]
                        ) -> torch.Tensor:
        """``(B, J, 3, D)``: derivative of every world joint w.r.t. the parameters
        ``[orient increment 3, transl 3, log scale 1, free angles nf, shape K]``."""
        angles, _, transl, log_scale, shape = state
        b, nj = pos.shape[:2]
        cols = []
        cols.append(-_cross_rows(pos - pos[:, :1]))  # (B, J, 3, 3): w x (p - p0) = -[p - p0]_x w
        cols.append(torch.eye(3, dtype=pos.dtype, device=pos.device).expand(b, nj, 3, 3))
        cols.append((pos - transl[:, None])[..., None] if self.fit_scale else pos.new_zeros(b, nj, 3, 1))
        # angle axes in world: G_P F [e_x, R_x e_y, R_x R_y e_z]
        par = [self.parents[j] for j in self.bone_joint]
        g_par = glob[:, par]  # (B, 20, 3, 3)
        gf = mm3(g_par, self.frames)
        zeros = torch.zeros_like(angles[..., 0])
        rx = euler_to_matrix(torch.stack([angles[..., 0], zeros, zeros], -1), "XYZ")
        rxy = euler_to_matrix(torch.stack([angles[..., 0], angles[..., 1], zeros], -1), "XYZ")
        axes = torch.stack([gf[..., :, 0], mv3(mm3(gf, rx), torch.tensor([0.0, 1.0, 0.0]).to(pos)),
                            mv3(mm3(gf, rxy), torch.tensor([0.0, 0.0, 1.0]).to(pos))], -1)  # (B, 20, 3, 3 angles)
        # only the free angles, written out as a cross product w x lever (torch.linalg.cross is slow here)
        free_bone, free_angle = self.free_bone, self.free_angle
        w = axes.transpose(-1, -2)[:, free_bone, free_angle]  # (B, nf, 3)
        lever = pos[:, :, None] - pos[:, None, [self.bone_joint[i] for i in free_bone.tolist()]]  # (B, J, nf, 3)
        wx, wy, wz = (w[:, None, :, i] for i in range(3))
        lx, ly, lz = lever.unbind(-1)
        d = torch.stack([wy * lz - wz * ly, wz * lx - wx * lz, wx * ly - wy * lx], 2)  # (B, J, 3, nf)
        cols.append(d * self.free_mask)
        if self.k:
            assert self.joint_b is not None
            s = log_scale.exp()[:, None, None] if self.fit_scale else 1.0
            dq: list[torch.Tensor] = [torch.zeros(0)] * nj
            for j in range(nj):
                p = self.parents[j]
                if p < 0:
                    dq[j] = self.joint_b[j].expand(b, 3, self.k)
                else:
                    dq[j] = dq[p] + mm3_rect(glob[:, p], self.joint_b[j] - self.joint_b[p])
            cols.append(torch.stack(dq, 1) * (s[..., None] if torch.is_tensor(s) else s))
        return torch.cat(cols, -1)

    # -- solve -------------------------------------------------------------------------------------
    def state(self) -> tuple[torch.Tensor, ...]:
        return (self.angles, self.orient, self.transl, self.log_scale, self.shape)

    def apply(self, state: tuple[torch.Tensor, ...], step: torch.Tensor) -> tuple[torch.Tensor, ...]:
        angles, orient, transl, log_scale, shape = state
        b = step.shape[0]
        rot = axis_angle_to_matrix(step[:, :3])
        new_angles = angles.reshape(b, 60).clone()
        new_angles[:, self.free] = new_angles[:, self.free] + step[:, 7:7 + self.nf]
        new_angles = torch.maximum(torch.minimum(new_angles.view(b, 20, 3), self.upper), self.lower)
        return (new_angles, rot @ orient, transl + step[:, 3:6], log_scale + step[:, 6],
                shape + step[:, 7 + self.nf:])

    def run(self, stage: str, iterations: int) -> float:
        """``iterations`` LM steps of ``stage`` (``global``: orientation, translation, scale; ``pose``: + angles;
        ``shape``: + shape). Returns the mean final cost."""
        o = self.opts
        b = self.batch
        dim = 7 + self.nf + self.k
        active = torch.zeros(dim, dtype=torch.bool)
        active[:6] = True
        active[6] = self.fit_scale
        if stage != "global":
            active[7:7 + self.nf] = True
        if stage == "shape":
            active[7 + self.nf:] = True
        act = active.to(self.transl.device)
        state = self.state()
        cost = self.cost(state, stage)
        damp = torch.full((b,), 1e-3, dtype=cost.dtype, device=cost.device)
        for _ in range(iterations):
            pos, glob, _ = self.pose(state)
            jp = self.jacobian_points(pos, glob, state)[..., act]  # (B, J, 3, D')
            jp_kp = jp[:, self.kp_joint]
            jtj = torch.zeros(b, int(act.sum()), int(act.sum()), dtype=cost.dtype, device=cost.device)
            jtr = torch.zeros(b, int(act.sum()), dtype=cost.dtype, device=cost.device)
            for (t, index, _), (r, w, p) in zip(self.targets, self.residuals(pos, stage)):
                jt = jp_kp[:, index.to(jp.device)]  # (B, K, 3, D')
                if isinstance(t, Keypoints2D):
                    jt = _projection_jacobian(t, p) @ jt
                    jt = jt / o.sigma_px
                else:
                    jt = jt / o.sigma_mm
                rw = w * _robust_weight(r.square().sum(-1), o.loss, o.loss_scale)  # (B, K)
                jr = jt.flatten(1, 2)  # (B, K d, D')
                wr = rw.repeat_interleave(r.shape[-1], 1)
                jtj = jtj + jr.transpose(1, 2) @ (wr[..., None] * jr)
                jtr = jtr + (jr.transpose(1, 2) @ (wr * r.flatten(1))[..., None])[..., 0]
            # priors: shape coefficients and squared angles (identity Jacobians in these parameters)
            prior_diag = torch.zeros(dim, dtype=cost.dtype, device=cost.device)
            prior_diag[7:7 + self.nf] = o.pose_prior
            prior_diag[7 + self.nf:] = 1.0
            pd = prior_diag[act]
            prior_r = torch.cat([state[0].reshape(b, 60)[:, self.free] * o.pose_prior, state[4]], 1)
            jtr = jtr + torch.cat([torch.zeros(b, 7, dtype=cost.dtype, device=cost.device), prior_r], 1)[:, act]
            jtj = jtj + torch.diag_embed(pd.expand(b, -1))
            # active set: an angle on a bound whose descent direction leaves the box is held this step
            held = self.held(state, jtr, act)
            keep = (~held).to(jtj.dtype)
            jtj = jtj * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(held.to(jtj.dtype))
            jtr = jtr * keep
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            lhs = jtj + torch.diag_embed(damp[:, None] * diag + 1e-9)
            step_act = -torch.linalg.solve(lhs, jtr[..., None])[..., 0]
            step = torch.zeros(b, dim, dtype=cost.dtype, device=cost.device)
            step[:, act] = step_act
            trial = self.apply(state, step)
            new_cost = self.cost(trial, stage)
            better = new_cost < cost
            state = tuple(torch.where(better.view((-1,) + (1,) * (x.dim() - 1)), y, x) for x, y in zip(state, trial))
            cost = torch.where(better, new_cost, cost)
            damp = torch.where(better, damp / 3.0, damp * 4.0).clamp(1e-9, 1e9)
        self.angles, self.orient, self.transl, self.log_scale, self.shape = state
        return float(cost.mean())

    def held(self, state: tuple[torch.Tensor, ...], jtr: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``(B, D')`` bool: active parameters that are angles on a bound with the gradient pointing out."""
        b = jtr.shape[0]
        dim = act.numel()
        ang = state[0].reshape(b, 60)[:, self.free]
        lo, hi = self.lower.reshape(60)[self.free], self.upper.reshape(60)[self.free]
        full = torch.zeros(b, dim, dtype=jtr.dtype, device=jtr.device)
        full[:, act] = jtr
        g = full[:, 7:7 + self.nf]  # descent direction is -g
        out = torch.zeros(b, dim, dtype=torch.bool, device=jtr.device)
        out[:, 7:7 + self.nf] = ((ang <= lo + 1e-9) & (g > 0)) | ((ang >= hi - 1e-9) & (g < 0))
        return out[:, act]

    def set_start(self, global_orient: torch.Tensor, transl: torch.Tensor, scale: torch.Tensor | None) -> None:
        self.orient = axis_angle_to_matrix(global_orient.to(self.transl))
        self.transl = transl.to(self.transl).clone()
        if scale is not None and self.fit_scale:
            self.log_scale = scale.to(self.transl).log()

    def params(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The layer's keyword arguments: axis-angle ``pose (B, 20, 3)`` (row 0 zero), ``global_orient``, ..."""
        bones = mm3(mm3(self.frames, euler_to_matrix(self.angles, "XYZ")), self.frames.transpose(-1, -2))
        pose = matrix_to_axis_angle(bones)
        pose[:, 0] = 0.0
        out = {"pose": pose, "global_orient": matrix_to_axis_angle(self.orient), "transl": self.transl,
               "shape": self.shape}
        if self.fit_scale:
            out["scale"] = self.log_scale.exp()
        return {k: v.to(dtype) for k, v in out.items()}


def mm3_rect(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (B, 3, 3) @ b (3, K)`` -> ``(B, 3, K)``."""
    return a @ b


def _projection_jacobian(target: Keypoints2D, points: torch.Tensor) -> torch.Tensor:
    """``(B, K, 2, 3)``: derivative of the pixels of world ``points (B, K, 3)`` w.r.t. the points."""
    cam = target.camera
    rot = cam.rotation.to(points)
    q = cam.to_camera(points)
    z = q[..., 2].clamp_min(1e-3)
    zero = torch.zeros_like(z)
    du = torch.stack([cam.fx / z, zero, -cam.fx * q[..., 0] / z.square()], -1)
    dv = torch.stack([zero, cam.fy / z, -cam.fy * q[..., 1] / z.square()], -1)
    return torch.stack([du, dv], -2) @ rot
