"""Fit the hand or head layer to a batch of targets: 3D / 2D keypoints and point clouds (``fit``).

Staged optimisation (``global`` -> ``pose`` -> ``shape``, see :mod:`.fit_variables`) with Adam, which
acts element by element: a batch of fits is exactly a batch of independent fits. The energy of each fit
is the sum of its robust data terms (:mod:`.keypoints`, :mod:`.clouds`; residuals in units of the
expected noise ``sigma``), the Gaussian priors of the normalised coefficients, a weak pose prior, the
joint limits (hand: ``model.joint_limits()``; head: ``model.jaw_penalty``), and, in a last short
stage on the full layer, the penetration penalty (``model.penetration()``). Units of a 3D target
(mm or m) are detected from its size (``units="auto"``) or given; the target's frame is found by the
closed-form start (Procrustes on keypoints, trimmed ICP for clouds) and the ``global`` stage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.alignment import Similarity
from ..core.errors import ParameterError
from .clouds import cloud_distances, cloud_start, cloud_term, match_cloud
from .fit_targets import Keypoints2D, Keypoints3D, PointCloud, Target, as_targets, batch_of
from .fit_variables import LEARNING_RATES, STAGES, FitVariables, model_kind
from .hand_keypoint_fit import run_lm, use_lm
from .keypoints import keypoint_index, keypoint_start, keypoint_term, palm_mask, similarity_kwargs
from .priors import ROBUST_LOSSES, pose_prior, shape_prior
from .report import fit_report
from .units import detect_units

__all__ = ["FitOptions", "FitResult", "fit"]


@dataclass(frozen=True)
class FitOptions:
    """Settings of :func:`fit` (defaults suit targets in mm with about 1 mm / 2 px of noise).

    * ``iterations``: Adam steps of the ``global``, ``pose`` and ``shape`` stages; ``lr``: a factor on the
      step sizes of :data:`~.fit_variables.LEARNING_RATES` (decayed by a cosine within each stage).
      ``lm_iterations``: the same for the hand's keypoint-only fits, which use Levenberg-Marquardt
      (:mod:`.hand_lm`) when the layer is in axis-angle mode and has joint limits; ``lm_dtype``
      (``"float64"`` or ``"float32"``) is the precision of its normal equations.
    * ``sigma_mm``, ``sigma_px``: expected noise of 3D data (mm) and of 2D keypoints (pixels).
    * ``loss``, ``loss_scale``: robust loss (:data:`~.priors.ROBUST_LOSSES`) and where it bends (sigmas).
    * ``shape_prior``, ``pose_prior``, ``limits``: weights of the coefficient prior, of the squared pose
      angles (rad^2) and of the squared joint-limit violations (rad^2).
    * ``penetration``: a last stage of ``penetration_steps`` on the full layer with the penetration penalty
      (mm^2, weight ``penetration_weight``); it costs full posed meshes, so it is skipped for batches larger
      than ``penetration_max_batch``.
    * ``fit_scale``: also fit a uniform scale; ``units``: ``"mm"``, ``"m"`` or ``"auto"`` (3D targets).
    * ``trim``, ``reject_mm``, ``match_every``, ``cloud_weight``: point-cloud matching (see :mod:`.clouds`).
    * ``output``: compute the full layer output at the end (the fitted meshes).
    """

    iterations: tuple[int, int, int] = (60, 200, 200)
    lm_iterations: tuple[int, int, int] = (6, 12, 12)
    lm_dtype: str = "float32"
    lr: float = 1.0
    sigma_mm: float = 1.0
    sigma_px: float = 2.0
    loss: str = "geman_mcclure"
    loss_scale: float = 5.0
    shape_prior: float = 1.0
    pose_prior: float = 0.01
    limits: float = 1000.0
    penetration: bool = True
    penetration_steps: int = 10
    penetration_weight: float = 1.0
    penetration_max_batch: int = 8
    fit_scale: bool = False
    units: str = "auto"
    trim: float = 0.1
    reject_mm: float = 5.0
    match_every: int = 10
    cloud_weight: float = 100.0
    output: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ROBUST_LOSSES:
            raise ParameterError(f"loss must be one of {ROBUST_LOSSES}, got {self.loss!r}.")
        if self.units not in ("mm", "m", "auto"):
            raise ParameterError(f"units must be 'mm', 'm' or 'auto', got {self.units!r}.")
        if len(self.iterations) != 3 or any(int(i) < 0 for i in self.iterations):
            raise ParameterError(f"iterations must be 3 non-negative step counts (global, pose, shape), "
                                 f"got {self.iterations!r}.")
        if self.lm_dtype not in ("float32", "float64"):
            raise ParameterError(f"lm_dtype must be 'float32' or 'float64', got {self.lm_dtype!r}.")
        if not 0.0 <= self.trim < 1.0:
            raise ParameterError(f"trim must be in [0, 1), got {self.trim}.")


@dataclass
class FitResult:
    """What :func:`fit` found, per target of the batch.

    ``params``: the layer's keyword arguments ``(B, ...)`` (``model(**params)`` gives the fit);
    ``output``: the layer's output for them (``None`` with ``FitOptions(output=False)``);
    ``residuals``: per target, the distances ``(B, K)`` (keypoints: mm or pixels) or a list of ``(N_b,)``
    (clouds: mm, every target point to the fitted surface); ``report``: units, per-target mean / 95th
    percentile, stage energies, seconds (JSON-ready); ``units_scale``: the factor applied to 3D targets
    (1000 for a target detected in metres; the fit and its meshes are in mm).
    """

    params: dict[str, torch.Tensor]
    output: Any
    residuals: list[Any]
    report: dict[str, Any]
    units_scale: float = 1.0
    log: list[tuple[str, float]] = field(default_factory=list)


class _Problem:
    """The targets of one batch and the energy of the current values."""

    def __init__(self, model: Any, targets: list[Target], opts: FitOptions) -> None:
        self.model, self.targets, self.opts = model, targets, opts
        self.kind = model_kind(model)
        self.batch = batch_of(targets[0])
        clouds = [t for t in targets if isinstance(t, PointCloud)]
        default_tissue = "skin" if self.kind == "hand" else "face"
        tissues = {t.tissue or default_tissue for t in clouds}
        if len(tissues) > 1:
            raise ParameterError(f"point clouds of one fit must sample one tissue, got {sorted(tissues)}.")
        self.vars = FitVariables(model, self.batch, fit_scale=opts.fit_scale, tissue=tissues.pop() if tissues
                                 else None)
        names = self.vars.names()
        self.kp = [(t, keypoint_index(t, names, self.kind)) for t in targets
                   if isinstance(t, (Keypoints3D, Keypoints2D))]
        self.kp_masks = [palm_mask(names, i, self.kind) for _, i in self.kp]
        self.clouds = clouds
        self.matches: list[list[Any]] = [[] for _ in clouds]

    def energy(self, stage: str, step: int) -> torch.Tensor:
        """``(B,)`` energies of the current values (correspondences refreshed every ``match_every`` steps)."""
        o, v = self.opts, self.vars
        kp, verts, _ = v.predict()
        total = kp.new_zeros(self.batch)
        for (t, index), mask in zip(self.kp, self.kp_masks):
            use = mask if stage == "global" and int(mask.sum()) >= 3 else torch.ones_like(mask)
            sigma = o.sigma_px if isinstance(t, Keypoints2D) else o.sigma_mm
            total = total + keypoint_term(kp, t, index, use, sigma=sigma, loss=o.loss, scale=o.loss_scale)[0]
        if self.clouds and verts is not None:
            faces = v.part_faces
            assert faces is not None
            refresh = step % max(1, o.match_every) == 0 or not self.matches[0]
            for c, cloud in enumerate(self.clouds):
                if refresh:
                    self.matches[c] = [match_cloud(verts[b].detach(), cloud, b, trim=o.trim, reject_mm=o.reject_mm)
                                       for b in range(self.batch)]
                terms = [cloud_term(verts[b], faces, cloud, b, self.matches[c][b], sigma=o.sigma_mm, loss=o.loss,
                                    scale=o.loss_scale, weight=o.cloud_weight) for b in range(self.batch)]
                total = total + torch.stack(terms)
        return total + self.priors()

    def priors(self) -> torch.Tensor:
        o, vals = self.opts, self.vars.values
        total = sum((shape_prior(vals[k]) for k in ("shape", "trait") if k in vals),
                    vals["transl"].new_zeros(self.batch))
        if "expression" in vals:
            total = total + shape_prior(vals["expression"])
        if self.kind == "hand":
            pose = vals["pose"]
            total = total + (o.pose_prior * pose_prior(pose) if pose.dim() == 3 else shape_prior(pose))
            lim = self.vars.limit_penalty()
            if lim is not None:
                total = total + o.limits * lim
        else:
            total = total + o.pose_prior * vals["jaw_pose"].square().sum(-1)
            total = total + o.limits * self.model.jaw_penalty(vals["jaw_pose"])
        return total


def _start(prob: _Problem) -> None:
    """Closed-form global start: Procrustes on keypoints, else ICP of the rest surface onto each cloud."""
    v = prob.vars
    with torch.no_grad():
        kp, verts, _ = v.predict()
        rest_out = v.full_output() if prob.kind == "head" else None
    root = (rest_out.joints[:, 0] if rest_out is not None else
            prob.model.joint_template[0].expand(prob.batch, 3)).to(kp)
    start = keypoint_start(kp, root, [(t, i, m) for (t, i), m in zip(prob.kp, prob.kp_masks)],
                           fit_scale=prob.opts.fit_scale)
    if start is None and prob.clouds and verts is not None:
        cloud = prob.clouds[0]
        sims = [cloud_start(verts[b], cloud.points[b], partial=cloud.partial, fit_scale=prob.opts.fit_scale)
                for b in range(prob.batch)]
        sim = Similarity(torch.stack([s.rotation for s in sims]).to(kp), torch.stack([s.translation for s in sims])
                         .to(kp), torch.stack([s.scale.reshape(()) for s in sims]).to(kp))
        start = similarity_kwargs(sim, root)
    if start is None:
        return
    v.values["global_orient"] = start["global_orient"].to(kp)
    v.values["transl"] = start["transl"].to(kp)
    if "log_scale" in v.values:
        v.values["log_scale"] = start["scale"].to(kp).log()


def _run_stage(prob: _Problem, stage: str, steps: int, log: list[tuple[str, float]],
               energy: Any = None, lr_scale: float = 1.0) -> None:
    """``steps`` of Adam (Kingma & Ba 2015; written out here: elementwise, so every fit of the batch is its own
    problem) on the stage's free variables, the step size decayed by a cosine to zero."""
    if steps <= 0:
        return
    free = prob.vars.free(stage)
    for _, t in free:
        t.requires_grad_(True)
    moments = [(torch.zeros_like(t), torch.zeros_like(t)) for _, t in free]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    value = torch.zeros(())
    for step in range(steps):
        value = (energy or prob.energy)(stage, step).sum()
        grads = torch.autograd.grad(value, [t for _, t in free])
        lr_factor = lr_scale * prob.opts.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        with torch.no_grad():
            for (name, t), (m, v), g in zip(free, moments, grads):
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                m_hat = m / (1.0 - beta1 ** (step + 1))
                v_hat = v / (1.0 - beta2 ** (step + 1))
                t.sub_(LEARNING_RATES[name] * lr_factor * m_hat / (v_hat.sqrt() + eps))
    for _, t in free:
        t.requires_grad_(False)
    log.append((stage, float(value.detach()) / prob.batch))


def _penetration_energy(prob: _Problem) -> Any:
    model = prob.model
    pen = model.penetration()

    def energy(stage: str, step: int) -> torch.Tensor:
        out = prob.vars.full_output()
        if prob.kind == "hand":
            p = pen.penalty(out.bones, out.skin, out.muscles)
        else:
            p = pen.penalty(out, margin=1.0)
        return prob.energy(stage, step) + prob.opts.penetration_weight * p

    return energy


def fit(model: Any, targets: Any, *, options: FitOptions | None = None, **overrides: Any) -> FitResult:
    """Fit ``model`` (a :class:`~anatomy.models.Nimble` or :class:`~anatomy.models.Sculptor` layer) to a batch
    of targets: one :class:`Keypoints3D`, :class:`Keypoints2D` or :class:`PointCloud`, or several (summed:
    e.g. several camera views, or a cloud with keypoints). ``options`` / keyword overrides: :class:`FitOptions`.
    The fit runs on the model's device and dtype; the model itself is not changed. See the module text."""
    start_time = time.perf_counter()
    opts = options or FitOptions()
    if overrides:
        opts = FitOptions(**{**opts.__dict__, **overrides})
    items = as_targets(targets)
    items, units_scale = detect_units(model, items, opts.units)
    prob = _Problem(model, items, opts)
    log: list[tuple[str, float]] = []
    _start(prob)
    if use_lm(prob):
        run_lm(prob, log)
    else:
        for stage, steps in zip(STAGES, opts.iterations):
            _run_stage(prob, stage, int(steps), log)
    if opts.penetration and prob.batch <= opts.penetration_max_batch and opts.penetration_steps > 0:
        # small steps: the fit has converged, the penalty only nudges it
        _run_stage(prob, "shape", opts.penetration_steps, log, _penetration_energy(prob), lr_scale=0.01)
    with torch.no_grad():
        kp, verts, _ = prob.vars.predict()
        output = prob.vars.full_output() if opts.output else None
        residuals: list[Any] = []
        for t in items:
            if isinstance(t, PointCloud):
                faces = prob.vars.part_faces
                assert verts is not None and faces is not None
                residuals.append([cloud_distances(verts[b], faces, t, b) for b in range(prob.batch)])
            else:
                j = [k for k, (tt, _) in enumerate(prob.kp) if tt is t][0]
                index = prob.kp[j][1]
                residuals.append(keypoint_term(kp, t, index, torch.ones_like(prob.kp_masks[j]), sigma=1.0,
                                               loss="l2", scale=1.0)[1])
    seconds = time.perf_counter() - start_time
    report = fit_report(items, residuals, units_scale=units_scale, seconds=seconds, log=log,
                        kind=prob.kind)
    if not math.isfinite(sum(v for _, v in log)) and log:
        report["warning"] = "the energy is not finite: check the targets' units and frame"
    return FitResult(prob.vars.params(), output, residuals, report, units_scale, log)
