"""Model-based registration: fit a parametric layer (``Sculptor`` or ``Nimble``) to scanned surfaces.

The surfaces of a scan (points with optional normals, one set per tissue, in world mm) need not be in
correspondence with the model. :func:`fit_model_to_surfaces` runs an ICP-style loop around the layer
(the "model-based" first step of NIMBLE's and SCULPTOR's registrations, Li et al. 2022, Qiu et al.
2022): each outer iteration pairs model vertices with their nearest target points and target points
with their nearest model vertices (scipy KD-trees), then L-BFGS minimises, over the layer's
parameters, the point-to-plane + point-to-point distance of the pairs plus the model's priors.

* Start: a similarity of the model's mean onto the target by trimmed ICP on the ``anchors`` tissues
  (the bones: a CT's skin surface covers the scalp and neck, which the face sheet does not) from
  principal axes, :func:`~anatomy.registration.rigid.register_rigid`.
* Stages: the similarity alone, then the articulation (the jaw; the hand's bones from the palm out,
  one level of the finger chains at a time), then everything with the shape (and trait) spaces.
* Robustness: pairs farther than 3 median distances (at least ``reject_mm``), pairs whose normals
  disagree by more than 60°, and target points whose nearest model vertex lies on the rim of an open
  tissue (the face sheet) are dropped, so missing parts, outliers and anatomy the model lacks do not
  pull it.

The result is in correspondence with the template; the free-form residual is left to
:func:`~anatomy.registration.nonrigid.nonrigid_register` (see :mod:`.scan`).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..core.alignment import Similarity
from ..core.errors import ParameterError, ShapeError
from ..core.rotations import matrix_to_axis_angle
from ..core.surface import vertex_normals
from ..models.nimble import Nimble
from ..models.output import ModelOutput
from ..models.sculptor import Sculptor
from .hand_start import AmbiguousHandStartWarning, HandStart, search_hand_start
from .nonrigid import estimate_normals
from .rigid import align_landmarks, icp, register_rigid

__all__ = ["ModelFit", "fit_model_to_surfaces"]

_COS_MAX = math.cos(math.radians(60.0))
#: a hand fitted from its searched start that leaves more than this share of the scanned bone points farther than
#: _UNCOVERED_MM from its bone vertices (a scanned finger without a model finger) warns
_UNCOVERED_MM, _UNCOVERED_SHARE = 6.0, 0.01
_HAND_RETRIES = 2  # such a fit is redone from up to this many of the search's other starts; the best coverage kept
_HAND_LEVELS = (("pro",), ("int",), ("dis",))  # bone-name prefixes of the finger levels, palm outwards
# the hand keypoints each stage may use: those the bones fitted so far place (a flat template's finger
# tips would turn the palm towards a flexed hand's tips)
_PALM_KEYPOINTS = ("wrist", "thumb_cmc", "index_mcp", "middle_mcp", "ring_mcp", "little_mcp")
_LEVEL_KEYPOINTS = {"global": _PALM_KEYPOINTS, "articulation:pro": ("thumb_mcp", "_pip"),
                    "articulation:int": ("thumb_ip", "_dip")}


@dataclass
class ModelFit:
    """What :func:`fit_model_to_surfaces` found.

    ``params``: the layer's keyword arguments (batch 1) of the fit; ``output``: the layer's output for
    them; ``distances``: per tissue, the distance (mm) of every fitted vertex to the target surface (to the
    tangent plane of its nearest target point);
    ``log``: ``(stage, mean pair distance mm)`` per outer iteration; ``seconds``: wall time;
    ``hand_start``: the searched start of a hand fitted without keypoints that the returned fit came from
    (else ``None``).
    """

    params: dict[str, torch.Tensor]
    output: ModelOutput
    distances: dict[str, torch.Tensor]
    log: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    hand_start: HandStart | None = None


@dataclass
class _Target:
    points: torch.Tensor
    normals: torch.Tensor
    oriented: bool
    tree: cKDTree


def _as_target(name: str, value: Any, max_points: int, gen: torch.Generator) -> _Target:
    pts, nrm = (value if isinstance(value, (tuple, list)) else (value, None))
    pts = torch.as_tensor(np.asarray(pts, dtype=np.float64))
    if pts.dim() != 2 or pts.shape[1] != 3 or pts.shape[0] < 10:
        raise ShapeError(f"target {name!r} must be (N, 3) points with N >= 10, got {tuple(pts.shape)}.")
    if not bool(torch.isfinite(pts).all()):
        raise ParameterError(f"target {name!r} holds NaN or inf coordinates; drop them first.")
    if nrm is not None:
        nrm = torch.as_tensor(np.asarray(nrm, dtype=np.float64))
        if nrm.shape != pts.shape:
            raise ShapeError(f"target {name!r}: normals {tuple(nrm.shape)} must match points {tuple(pts.shape)}.")
    if pts.shape[0] > max_points:
        keep = torch.randperm(pts.shape[0], generator=gen)[:max_points]
        pts = pts[keep]
        nrm = None if nrm is None else nrm[keep]
    normals = estimate_normals(pts) if nrm is None else torch.nn.functional.normalize(nrm, dim=-1)
    return _Target(pts, normals, nrm is not None, cKDTree(pts.numpy()))


def _rim_vertices(faces: torch.Tensor, n: int) -> torch.Tensor:
    """``(n,)`` bool: vertices on an edge used by one face only (the rim of an open sheet)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
    uniq, counts = torch.unique(edges, dim=0, return_counts=True)
    rim = torch.zeros(n, dtype=torch.bool)
    rim[uniq[counts == 1].reshape(-1)] = True
    return rim


class _Vars:
    """The free parameters of one fit and how they map to the layer's keyword arguments."""

    def __init__(self, model: Any, start: Any, kind: str, pose: torch.Tensor | None = None) -> None:
        dt = torch.float64
        rot, trans, size = (torch.as_tensor(np.asarray(a), dtype=dt) for a in (start.rotation, start.translation,
                                                                              start.scale))
        with torch.no_grad():
            root = model().joints[0, 0].to(dt)
        self.orient = matrix_to_axis_angle(rot.reshape(3, 3))[None].clone().requires_grad_(True)
        # a similarity W = s R v + t is the layer's s (R (v - j0) + j0) + transl with this transl
        self.transl = (trans.reshape(3) + size.reshape(()) * (rot.reshape(3, 3) @ root - root))[None]
        self.transl = self.transl.clone().requires_grad_(True)
        self.log_scale = torch.log(size.reshape(1)).clone().requires_grad_(True)
        sizes = dict(model.space_sizes) if hasattr(model, "space_sizes") else {}
        self.spaces = {k: torch.zeros(1, sizes[k], dtype=dt, requires_grad=True)
                       for k in ("shape", "trait") if sizes.get(k)}
        self.jaw = torch.zeros(1, 3, dtype=dt, requires_grad=True) if kind == "head" else None
        self.pose = None
        if kind == "hand":
            rows = torch.zeros(20, 3, dtype=dt) if pose is None else pose.to(dt).reshape(20, 3)
            self.pose = rows[None].clone().requires_grad_(True)

    def load(self, params: Mapping[str, Any]) -> None:
        """Take the values of a previous fit's ``params`` (the layer's keyword arguments, batch 1)."""
        own = self.kwargs()
        missing = [k for k in own if k not in params]
        if missing:
            raise ParameterError(f"init lacks {missing}; pass the params of a fit_model_to_surfaces result for "
                                 f"this model (ModelFit.params).")
        with torch.no_grad():
            for key, value in params.items():
                if key not in own:
                    raise ParameterError(f"init names {key!r}, which this fit does not solve for; its parameters "
                                         f"are {list(own)}.")
                v = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
                target = self.log_scale if key == "scale" else own[key]
                if v.numel() != target.numel() or not bool(torch.isfinite(v).all()):
                    raise ShapeError(f"init[{key!r}] must hold {target.numel()} finite values, got shape "
                                     f"{tuple(v.shape)}.")
                target.copy_(v.log().reshape(target.shape) if key == "scale" else v.reshape(target.shape))

    def groups(self, stage: str) -> list[torch.Tensor]:
        free = [self.orient, self.transl, self.log_scale]
        if stage != "global":
            free += [t for t in (self.jaw, self.pose) if t is not None]
        if stage == "all":
            free += list(self.spaces.values())
        return free

    def kwargs(self) -> dict[str, torch.Tensor]:
        kw = {"global_orient": self.orient, "transl": self.transl, "scale": self.log_scale.exp(), **self.spaces}
        if self.jaw is not None:
            kw["jaw_pose"] = self.jaw
        if self.pose is not None:
            kw["pose"] = self.pose
        return kw


def _model_kind(model: Any) -> str:
    if isinstance(model, Sculptor):
        return "head"
    if isinstance(model, Nimble):
        if model.pose_mode != "axis_angle":
            raise ParameterError("fit_model_to_surfaces needs a Nimble layer in pose_mode='axis_angle'.")
        return "hand"
    raise ParameterError(f"model must be a Sculptor or Nimble layer, got {type(model).__name__}.")


def _stages(model: Any, kind: str, outer: int) -> list[tuple[str, torch.Tensor | None, int]]:
    """``(stage name, free pose rows or None, outer iterations)``."""
    if kind == "head":
        return [("global", None, outer), ("articulation", None, max(2, outer // 2)), ("all", None, 2 * outer)]
    names = list(model.bone_names)
    rows = torch.tensor([n.startswith(("carpal", "met")) for n in names])  # the palm: one rigid piece at first
    stages: list[tuple[str, torch.Tensor | None, int]] = [("global", rows.clone(), outer)]
    for prefixes in _HAND_LEVELS:
        rows = rows | torch.tensor([n.startswith(prefixes) for n in names])
        stages.append((f"articulation:{prefixes[0]}", rows.clone(), max(2, outer // 2)))
    stages.append(("all", None, 2 * outer))
    return stages


def _model_landmarks(output: Any, kind: str) -> torch.Tensor:
    return output.keypoints if kind == "hand" else output.landmarks


def _landmarks(layer: Any, mean: Any, kind: str, given: Mapping[str, Any] | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices into the model's keypoints/landmarks and the given points ``(L, 3)`` float64."""
    if given is None or len(given) == 0:
        return torch.zeros(0, dtype=torch.long), None
    if not isinstance(given, Mapping):
        raise ParameterError("landmarks must be a mapping: name -> (x, y, z) in world mm.")
    known = list(layer.keypoint_names) if kind == "hand" else list(mean.landmark_names or ())
    bad = [k for k in given if k not in known]
    if bad:
        raise ParameterError(f"landmarks {bad} are not this model's; its names are {known}.")
    pts = torch.as_tensor(np.asarray([np.asarray(given[k], dtype=np.float64) for k in given]))
    if pts.shape != (len(given), 3) or not bool(torch.isfinite(pts).all()):
        raise ShapeError(f"landmarks must each be 3 finite coordinates (mm); got an array of shape {tuple(pts.shape)}.")
    return torch.tensor([known.index(k) for k in given]), pts


def _landmark_stages(layer: Any, kind: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per stage, which of the given landmarks pull (``(L,)`` bool); every one outside the hand's early stages."""
    every = torch.ones(len(index), dtype=torch.bool)
    if kind != "hand":
        return {"global": every, "all": every}
    names = [layer.keypoint_names[i] for i in index.tolist()]
    stages: dict[str, torch.Tensor] = {"all": every}
    allowed: tuple[str, ...] = ()
    for stage, more in _LEVEL_KEYPOINTS.items():
        allowed = allowed + more
        stages[stage] = torch.tensor([n in allowed or n.endswith(allowed) for n in names], dtype=torch.bool)
    stages["articulation:dis"] = every
    return stages


def _start(source: np.ndarray, target: np.ndarray, kind: str) -> Similarity:
    """The similarity start: trimmed ICP from the centroids with the frames' axes as they are (a scan in
    RAS+ like the model) and from principal axes; the one with the lower trimmed RMS per unit scale."""
    shift = target.mean(0) - source.mean(0)
    one = torch.tensor(1.0, dtype=torch.float64)
    plain = Similarity(torch.eye(3, dtype=torch.float64), torch.from_numpy(shift), one)
    runs = [icp(source, target, init=plain, scale=True, trim=0.7),
            register_rigid(source, target, scale=True, trim=0.7, all_axes=kind == "hand")]
    best = min(runs, key=lambda r: r.rms / float(r.transform.scale))
    return best.transform


class _Pairs:
    """Fixed correspondences of one outer iteration, for one tissue."""

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, sample: torch.Tensor, rim: torch.Tensor,
                 target: _Target, reject_mm: float, active: torch.Tensor | None = None) -> None:
        live = torch.ones(len(sample), dtype=torch.bool) if active is None else active[sample]
        v = verts[sample]
        vn = vertex_normals(verts, faces)[sample]
        d, j = target.tree.query(v.numpy())
        j = torch.from_numpy(j)
        cos = (vn * target.normals[j]).sum(-1)
        cos = cos if target.oriented else cos.abs()
        d = torch.from_numpy(d)
        ok = live & (cos >= _COS_MAX) & (d <= max(reject_mm, 3.0 * float(d[live].median())))
        self.a_ids, self.a_pts, self.a_nrm = sample[ok], target.points[j[ok]], target.normals[j[ok]]
        tree = cKDTree(v.numpy())
        d2, k = tree.query(target.points.numpy())
        k = torch.from_numpy(k)
        d2 = torch.from_numpy(d2)
        near = live[k] & ~rim[sample[k]]
        ok2 = near & (d2 <= max(reject_mm, 3.0 * float(d2[near].median()))) if bool(near.any()) else near
        self.b_ids, self.b_pts, self.b_nrm = sample[k[ok2]], target.points[ok2], target.normals[ok2]
        self.mean = float(torch.cat([d[ok], d2[ok2]]).mean()) if bool(ok.any() or ok2.any()) else math.inf

    def energy(self, verts: torch.Tensor) -> torch.Tensor:
        a = verts[self.a_ids] - self.a_pts
        plane = (a * self.a_nrm).sum(-1).square().mean() + 0.1 * a.square().sum(-1).mean()
        b = verts[self.b_ids] - self.b_pts
        return plane + (b * self.b_nrm).sum(-1).square().mean() + 0.1 * b.square().sum(-1).mean()


def fit_model_to_surfaces(
    model: Any,
    targets: Mapping[str, Any],
    *,
    anchors: Sequence[str] | None = None,
    outer: int = 6,
    inner: int = 30,
    max_points: int = 4000,
    prior: float = 1e-3,
    reject_mm: float = 5.0,
    landmarks: Mapping[str, Any] | None = None,
    landmark_weight: float = 1.0,
    search_start: bool = True,
    init: ModelFit | Mapping[str, Any] | None = None,
    seed: int = 0,
) -> ModelFit:
    """Fit the layer ``model`` (``Sculptor`` or ``Nimble``) to scanned surfaces; see the module text.

    Args:
        model: the layer (float32 or float64; the fit runs in float64 on a copy of its parameters).
        targets: tissue name of the model -> ``points (N, 3)`` or ``(points, normals)``, world mm (numpy
            or torch). Unknown tissue names are refused; tissues of the model without a target are left
            to the others and the priors.
        anchors: the tissues the starting similarity is found on (default: the bones: ``skull`` and
            ``mandible`` of the head, ``bones`` of the hand, when given; else every target).
        outer, inner: outer (correspondence) iterations of the similarity stage (the articulation stages run
            half as many, the last stage twice as many) and L-BFGS iterations in each.
        max_points: targets and model tissues are subsampled to at most this many points each.
        prior: weight of the squared normalised coefficients (shape, trait) and of the joint limits.
        reject_mm: pairs closer than this are never rejected as outliers.
        landmarks: optional named points (world mm): the hand's 21 keypoints (``model.keypoint_names``)
            or the head's landmarks (``model.landmark_names``). Three or more give the starting
            similarity (weighted Procrustes) instead of ICP; all of them pull in every stage with
            ``landmark_weight`` (per mm^2 of mean squared distance).
        search_start: a hand with a ``bones`` target and fewer than 3 palm keypoints starts from the palm
            placement and finger angles that :func:`~anatomy.registration.hand_start.search_hand_start` finds
            on the bones (else from its rest pose, which leaves a posed hand's fingers on the wrong finger).
            A fit from it that leaves over 1 % of the bone points 6 mm from its bones (a finger on the wrong
            finger) is redone from up to two of the search's other starts (``HandStart.others``) and the fit
            covering the bones best is kept; an ambiguous search, or a kept fit still leaving them uncovered,
            warns (:class:`~anatomy.registration.hand_start.AmbiguousHandStartWarning`).
        init: warm start from an earlier fit of this layer (a :class:`ModelFit` or its ``params``): no start
            search and no early stages, only ``outer`` iterations of the final stage (everything free). For
            a refit on cleaned-up targets; the head CT registration's second fit costs a third of the first.
        seed: of the subsampling.
    """
    start_time = time.perf_counter()
    kind = _model_kind(model)
    if not isinstance(targets, Mapping) or not targets:
        raise ParameterError("targets must be a non-empty mapping: tissue name -> points or (points, normals).")
    names = list(model().tissue_names)
    unknown = [k for k in targets if k not in names]
    if unknown:
        raise ParameterError(f"targets name tissues {unknown} that the model lacks; its tissues are {names}.")
    gen = torch.Generator().manual_seed(seed)
    tgt = {k: _as_target(k, v, max_points, gen) for k, v in targets.items()}
    anchor_names: list[str] = list(anchors) if anchors is not None else (
        [k for k in ("skull", "mandible", "bones") if k in tgt] or list(tgt))
    if not anchor_names or any(a not in tgt for a in anchor_names):
        raise ParameterError(f"anchors {anchor_names} must name given targets ({list(tgt)}).")

    solver = _Solver(copy.deepcopy(model).double(), kind, landmarks, prior, landmark_weight)  # the caller's
    mean = solver.mean                                                                          # layer stays as is
    first = solver.lm_stage["global"]
    found: HandStart | None = None
    if init is not None:
        if not isinstance(init, (ModelFit, Mapping)):
            raise ParameterError(f"init must be a ModelFit or its params mapping, got {type(init).__name__}.")
        one = torch.tensor(1.0, dtype=torch.float64)
        start = Similarity(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), one)
    elif solver.lm_points is not None and int(first.sum()) >= 3:
        start = align_landmarks(_model_landmarks(mean, kind)[0, solver.lm_index[first]].detach().numpy(),
                                solver.lm_points[first].numpy())
    elif kind == "hand" and search_start and "bones" in tgt:
        found = search_hand_start(solver.layer, tgt["bones"].points, seed=seed)
        start = found.similarity
        if found.ambiguous:
            warnings.warn(f"the searched hand start is ambiguous (mean distance to the bones {found.chamfer_mm:.2f} "
                          f"mm, a clearly different start {found.runner_up_mm:.2f} mm): fingers may end on the wrong "
                          f"finger; pass the hand's keypoints (landmarks=).", AmbiguousHandStartWarning, stacklevel=2)
    else:
        source = torch.cat([mean.tissue(a)[0] for a in anchor_names]).detach()
        start = _start(source.numpy(), torch.cat([tgt[a].points for a in anchor_names]).numpy(), kind)
    solver.variables = _Vars(solver.layer, start, kind, None if found is None else found.pose)
    if init is not None:
        solver.variables.load(init.params if isinstance(init, ModelFit) else init)
    faces = {k: mean.faces(k).cpu() for k in tgt}
    # the surface vertices only: a tetrahedral tissue's inner nodes (the skin volume's, on the muscles) are not
    # on the scanned surface
    surface = {k: torch.unique(faces[k]) for k in tgt}
    samples = {k: surface[k][torch.randperm(len(surface[k]), generator=gen)[:max_points]] for k in tgt}
    rims = {k: _rim_vertices(faces[k], mean.tissue(k).shape[1]) for k in tgt}
    part_rows = _bone_rows(solver.layer, mean) if kind == "hand" and "bones" in tgt else {}
    stages = _stages(solver.layer, kind, outer) if init is None else [("all", None, outer)]
    run = functools.partial(_run_stages, solver, stages, tgt, faces, samples, rims, part_rows, reject_mm, inner)
    log = run()
    params, out = solver.result()
    if found is not None:
        # a fit leaving scanned bone points uncovered has a finger on the wrong finger: refit from the next
        # clearly different starts and keep the fit that covers the bones best
        share = _uncovered(out, tgt["bones"])
        for other in found.others[:_HAND_RETRIES]:
            if share <= _UNCOVERED_SHARE:
                break
            solver.variables = _Vars(solver.layer, other.similarity, kind, other.pose)
            log += run()
            other_params, other_out = solver.result()
            other_share = _uncovered(other_out, tgt["bones"])
            if other_share < share:  # the search's verdict (runner-up, ambiguity, other starts) stays
                share, params, out = other_share, other_params, other_out
                found = replace(other, runner_up_mm=found.runner_up_mm, ambiguous=found.ambiguous,
                                 others=found.others)
        if share > _UNCOVERED_SHARE:
            warnings.warn(f"{100 * share:.1f} % of the scanned bone points lie farther than {_UNCOVERED_MM:g} mm from "
                          f"the hand fitted from its searched start: a finger is probably on the wrong finger; pass "
                          f"the hand's keypoints (landmarks=).", AmbiguousHandStartWarning, stacklevel=2)
    distances = {k: _plane_distance(out.tissue(k)[0], t) for k, t in tgt.items()}
    return ModelFit(params, out, distances, log, time.perf_counter() - start_time, found)


def _run_stages(solver: _Solver, stages: Sequence[tuple[str, torch.Tensor | None, int]], tgt: Mapping[str, _Target],
                faces: Mapping[str, torch.Tensor], samples: Mapping[str, torch.Tensor],
                rims: Mapping[str, torch.Tensor], part_rows: Mapping[str, torch.Tensor], reject_mm: float,
                inner: int) -> list[tuple[str, float]]:
    """Run the stages from ``solver.variables`` (changed in place); the log ``(stage, mean pair mm)``."""
    log: list[tuple[str, float]] = []
    for stage, rows, n_outer in stages:
        if rows is None or stage == "all" or not part_rows:
            rows = None
        active = {} if rows is None else {k: rows[ids] for k, ids in part_rows.items()}  # the bones fitted so far
        free = solver.variables.groups(stage)
        hook = solver.freeze_pose_rows(stage, rows)
        for _ in range(n_outer):
            with torch.no_grad():
                out = solver.run(solver.variables.kwargs())
            pairs = {k: _Pairs(out.tissue(k)[0], faces[k], samples[k], rims[k], t, reject_mm, active.get(k))
                     for k, t in tgt.items() if rows is None or k in active}
            log.append((stage, float(np.mean([p.mean for p in pairs.values()]))))
            _lbfgs(free, functools.partial(solver.loss, pairs, stage), inner)
        if hook is not None:
            hook.remove()
    return log


def _uncovered(out: ModelOutput, bones: _Target) -> float:
    """The share of the scanned bone points farther than ``_UNCOVERED_MM`` from the fitted bone vertices."""
    far, _ = cKDTree(out.tissue("bones")[0].detach().numpy()).query(bones.points.numpy())
    return float(np.mean(far > _UNCOVERED_MM))


def _plane_distance(verts: torch.Tensor, target: _Target) -> torch.Tensor:
    """Each vertex's distance to the target surface, approximated by the tangent plane of its nearest target
    point (the point cloud is subsampled, so the distance to the point itself would count its spacing)."""
    _, j = target.tree.query(verts.numpy())
    j = torch.from_numpy(j)
    return ((verts - target.points[j]) * target.normals[j]).sum(-1).abs()


def _bone_rows(layer: Any, mean: ModelOutput) -> dict[str, torch.Tensor]:
    """Each bone vertex's pose row (the index of its bone in ``layer.bone_names``)."""
    layout = mean._layout("bones")
    if layout.part_ids is None:
        return {}
    row_of = torch.tensor([list(layer.bone_names).index(n) for n in layout.part_names])
    return {"bones": row_of[layout.part_ids.cpu()]}


def _lbfgs(free: list[torch.Tensor], loss: Callable[[], torch.Tensor], inner: int) -> None:
    opt = torch.optim.LBFGS(free, max_iter=inner, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)


class _Solver:
    """The layer (a float64 copy), its priors and landmarks: the loss of one outer iteration."""

    variables: _Vars

    def __init__(self, layer: Any, kind: str, landmarks: Mapping[str, Any] | None, prior: float,
                 landmark_weight: float) -> None:
        self.layer, self.kind, self.prior, self.landmark_weight = layer, kind, prior, landmark_weight
        self.mean = layer()
        self.lm_index, self.lm_points = _landmarks(layer, self.mean, kind, landmarks)
        self.lm_stage = _landmark_stages(layer, kind, self.lm_index)
        self.limits = layer.joint_limits() if kind == "hand" and layer.has_joint_limits else None

    def run(self, kw: dict[str, torch.Tensor]) -> ModelOutput:
        return self.layer(**kw, jaw_range="ignore") if self.kind == "head" else self.layer(**kw)

    def result(self) -> tuple[dict[str, torch.Tensor], ModelOutput]:
        """The current parameters (detached copies) and the layer's output for them."""
        params = {k: v.detach().clone() for k, v in self.variables.kwargs().items()}
        with torch.no_grad():
            return params, self.run(params)

    def freeze_pose_rows(self, stage: str, rows: torch.Tensor | None) -> Any:
        """Pose rows outside ``rows`` (and row 0, the carpal bone, which ``global_orient`` turns) keep
        their values: their gradient is masked. Returns the hook handle, or ``None``."""
        pose = self.variables.pose
        if pose is None or stage == "global":
            return None
        mask = torch.ones(20, dtype=torch.bool) if rows is None else rows.clone()
        mask[0] = False
        return pose.register_hook(functools.partial(torch.mul, other=mask[None, :, None].to(pose.dtype)))

    def loss(self, pairs: Mapping[str, _Pairs], stage: str) -> torch.Tensor:
        v = self.variables
        kw = v.kwargs()
        out = self.run(kw)
        loss = torch.stack([p.energy(out.tissue(k)[0]) for k, p in pairs.items()]).sum()
        loss = loss + self.prior * sum((c.square().sum() for c in v.spaces.values()), torch.tensor(0.0))
        use = self.lm_stage.get(stage, self.lm_stage["all"])
        if self.lm_points is not None and bool(use.any()):
            lm = _model_landmarks(out, self.kind)[0, self.lm_index[use]]
            loss = loss + self.landmark_weight * (lm - self.lm_points[use]).square().sum(-1).mean()
        if v.jaw is not None:
            loss = loss + self.layer.jaw_penalty(v.jaw).sum()
        if self.limits is not None and v.pose is not None:
            loss = loss + self.prior * self.limits.penalty(self.layer.bone_rotations(kw["pose"])).sum()
        return loss
