"""Driver of the hand's keypoint fit by Levenberg-Marquardt (:mod:`.hand_lm`): starts for 2D-only targets.

From two or more views the keypoints are first triangulated and fitted in 3D; from one view the first two
stages run from four starts (a hand seen from one side is ambiguous) and each fit keeps its best.
"""

from __future__ import annotations

from typing import Any

import torch

from .camera import triangulate
from .fit_targets import Keypoints2D, Keypoints3D
from .fit_variables import STAGES
from .hand_lm import HandKeypointSolver
from .keypoints import palm_mask

__all__ = ["run_lm", "use_lm"]


def use_lm(prob: Any) -> bool:
    """Whether ``prob`` is a hand fit to keypoints only that Levenberg-Marquardt can do."""
    m = prob.model
    return (prob.kind == "hand" and not prob.clouds and m.pose_mode == "axis_angle" and m.has_joint_limits
            and sum(prob.opts.lm_iterations) > 0)


def _lm_targets(prob: Any) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
    return [(t, i, m) for (t, i), m in zip(prob.kp, prob.kp_masks)]


def run_lm(prob: Any, log: list[tuple[str, float]]) -> None:
    """The hand's keypoint fit by Levenberg-Marquardt; the result goes back into ``prob.vars``.

    With only 2D keypoints: from two or more views the keypoints are first triangulated and fitted in 3D
    (a start near the answer); from one view the ``global`` and ``pose`` stages run from four starts (the
    closed-form one and its turns by 180 degrees about the camera's axes: a hand seen from one side is
    ambiguous) and each fit keeps its best."""
    v = prob.vars.values
    targets = _lm_targets(prob)
    solver = HandKeypointSolver(prob.model, prob.batch, targets, opts=prob.opts)
    solver.set_start(v["global_orient"], v["transl"], v["log_scale"].exp() if "log_scale" in v else None)
    views = [t for t, _, _ in targets if isinstance(t, Keypoints2D)]
    its = prob.opts.lm_iterations
    if len(views) == len(targets) and len(views) >= 2:
        lifted = _triangulated(prob, targets)
        if lifted is not None:
            solver.targets = [lifted]
            for stage, steps in zip(STAGES, its):
                solver.run(stage, int(steps))
            solver.targets = targets
    elif len(views) == len(targets) == 1:
        _multi_start(solver, views[0], its)
    for stage, steps in zip(STAGES, its):
        if steps > 0:
            log.append((stage, solver.run(stage, int(steps))))
    params = solver.params(v["transl"].dtype)
    v["pose"] = params["pose"][:, 1:].contiguous()
    for k in ("global_orient", "transl", "shape"):
        if k in v:
            v[k] = params[k]
    if "log_scale" in v:
        v["log_scale"] = params["scale"].log()


def _triangulated(prob: Any, targets: list[Any]) -> tuple[Any, torch.Tensor, torch.Tensor] | None:
    """The model keypoints seen (by name) in two or more views, triangulated: a 3D keypoint target."""
    names = prob.vars.names()
    seen: dict[int, list[tuple[Any, int]]] = {}
    for t, index, _ in targets:
        for col, k in enumerate(index.tolist()):
            seen.setdefault(k, []).append((t, col))
    ids = sorted(k for k, s in seen.items() if len(s) >= 2)
    if len(ids) < 3:
        return None
    pts, conf = [], []
    for k in ids:
        views = seen[k]
        px = [t.points[:, col:col + 1] for t, col in views]
        w = [t.weight[:, col:col + 1] for t, col in views]
        pts.append(triangulate(px, [t.camera for t, _ in views], w)[:, 0])
        conf.append((torch.stack(w).squeeze(-1) > 0).sum(0).ge(2).double())
    target = Keypoints3D(torch.stack(pts, 1), torch.stack(conf, 1), tuple(names[k] for k in ids))
    index = torch.tensor(ids)
    return target, index, palm_mask(names, index, prob.kind)


def _multi_start(solver: HandKeypointSolver, view: Keypoints2D, its: tuple[int, int, int]) -> None:
    """Global and pose stages from the current start and its 180-degree turns about the camera axes (about
    the hand's centre); every fit keeps the start with the lowest cost."""
    start = [t.clone() for t in solver.state()]
    results = []
    cam_rot = view.camera.rotation.to(solver.transl)
    for axis in (None, 0, 1, 2):
        state = [t.clone() for t in start]
        if axis is not None:
            flip = torch.diag(torch.tensor([-1.0, -1.0, -1.0]).index_fill(0, torch.tensor(axis), 1.0)).to(cam_rot)
            turn = cam_rot.T @ flip @ cam_rot  # 180 degrees about the camera's axis, in world
            pos, _, _ = solver.pose(tuple(state))
            centre, root = pos.mean(1), pos[:, 0]
            state[1] = turn @ state[1]
            # the hand turns about its centre: the root joint goes to turn (root - centre) + centre
            state[2] = (root - centre) @ turn.T + centre - (root - state[2])
        solver.angles, solver.orient, solver.transl, solver.log_scale, solver.shape = state
        for stage, steps in zip(STAGES[:2], its[:2]):
            solver.run(stage, int(steps))
        results.append((solver.state(), solver.cost(solver.state(), "pose")))
    costs = torch.stack([c for _, c in results])  # (4, B)
    best = costs.argmin(0)
    chosen = []
    for part in range(5):
        stack = torch.stack([r[0][part] for r in results])
        chosen.append(stack[best, torch.arange(stack.shape[1], device=stack.device)])
    solver.angles, solver.orient, solver.transl, solver.log_scale, solver.shape = chosen
