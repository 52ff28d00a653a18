"""Head applications of the SCULPTOR layer: the face from a skull, the skull from a face.

Both fit the head model to a registered target (the bone tissues, or the face) that may sit in
any rigid pose (e.g. scanner coordinates), then read the other tissues off the fitted model, in
the target's frame. One fitting loop serves both (:func:`_fit_head`):

* model frame: ``M(x)``, the target's vertices of the layer at zero global pose, as a function of
  ``x`` = the free linear coefficients (shape, trait, and expression for the skull-from-face
  fit) and the jaw (``jaw_pose`` axis-angle, ``jaw_offset`` mm);
* world frame: ``W = s M(x) R^T + t`` (``s = 1`` unless ``fit_scale``; with it, residuals are
  divided by the initial Procrustes scale so that they stay in the model's millimetres);
* energy: ``sum_i |W_i - Y_i|^2 + prior_weight * (|c|^2 + |jaw_pose / 0.25 rad|^2 +
  |jaw_offset / 3 mm|^2)``: a Gaussian prior on the coefficients (N(0, 1) for the default head),
  so ``prior_weight`` is the variance (mm^2) of the per-coordinate noise one expects on the target.

It starts from the Procrustes alignment of the mean head to the target and runs Levenberg-
Marquardt in float64; the rotation is updated multiplicatively, ``R <- exp([dw]x) R``, so any
orientation works. The layer is affine in the coefficients for a fixed jaw rotation, so the
Jacobian of ``M`` by central differences is exact there and accurate to ~1e-9 mm/rad for the jaw;
the rigid columns are analytic. At the end the rigid transform becomes the layer's
``global_orient`` / ``transl`` / ``scale`` and the layer is run once more (``HeadFit.output``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..core.alignment import procrustes
from ..core.errors import ParameterError
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..models.sculptor import Sculptor, SculptorOutput
from .targets import read_target, tissue_vertex_ids

__all__ = ["HeadFit", "predict_face", "predict_skull", "bone_tissues"]

#: prior standard deviations of the jaw (the coefficients have unit variance)
JAW_POSE_SD_RAD = 0.25
JAW_OFFSET_SD_MM = 3.0
_STEP = {"coeff": 1e-3, "jaw": 1e-4}  # central-difference steps (coefficients, radians/mm)


@dataclass(frozen=True)
class HeadFit:
    """Result of :func:`predict_face` / :func:`predict_skull`; batch ``B``.

    * ``params``: the layer's keyword arguments at the fit (``shape``, ``trait``, ``expression``
      when the model has it, ``jaw_pose``, ``jaw_offset``, ``global_orient``, ``transl``,
      ``scale``): ``model(**fit.params)`` reproduces ``output``.
    * ``output``: :class:`SculptorOutput` at the fit, in the target's frame.
    * ``face (B, Vf, 3)``: the fitted face (for :func:`predict_face` with a neutral expression).
    * ``residual_mm (B, N)``: distance of each target vertex to its fitted vertex; ``rms_mm (B,)``.
    * ``iterations``, ``converged``: per head; ``seconds``: wall time of the whole call.
    """

    params: dict[str, torch.Tensor]
    output: SculptorOutput
    face: torch.Tensor
    residual_mm: torch.Tensor
    rms_mm: torch.Tensor
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    seconds: float

    @property
    def skull(self) -> torch.Tensor:
        """Fitted ``skull`` tissue ``(B, n, 3)`` (includes the mandible in an official-layout model)."""
        return self.output.skull

    @property
    def mandible(self) -> torch.Tensor:
        """Fitted mandible ``(B, n, 3)`` (the tissue, or the skull's mandible part)."""
        return self.output.mandible


def bone_tissues(model: Sculptor) -> tuple[str, ...]:
    """The model's bone tissues in stack order: every tissue but ``face``."""
    return tuple(t.name for t in model.layout if t.name != "face")


def _float64(model: Sculptor) -> Sculptor:
    if model.template.dtype == torch.float64:
        return model
    return copy.deepcopy(model).to(torch.float64)


@dataclass
class _Problem:
    """The model-frame function ``M(x)`` at the target's vertex ids, with the layout of ``x``."""

    model: Sculptor
    ids: torch.Tensor
    spaces: dict[str, int]
    fit_jaw: bool

    @property
    def size(self) -> int:
        return sum(self.spaces.values()) + (6 if self.fit_jaw else 0)

    def kwargs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, k in self.spaces.items():
            out[name] = x[:, i:i + k]
            i += k
        if self.fit_jaw:
            out["jaw_pose"], out["jaw_offset"] = x[:, i:i + 3], x[:, i + 3:i + 6]
        return out

    def prior_scale(self, weight: float) -> torch.Tensor:
        """``sqrt(weight) / sd`` per entry of ``x``."""
        ref = self.model.template
        sd = [torch.ones(sum(self.spaces.values()), dtype=ref.dtype, device=ref.device)]
        if self.fit_jaw:
            sd += [ref.new_full((3,), JAW_POSE_SD_RAD), ref.new_full((3,), JAW_OFFSET_SD_MM)]
        return weight ** 0.5 / torch.cat(sd)

    def steps(self) -> torch.Tensor:
        ref = self.model.template
        n_c = sum(self.spaces.values())
        return torch.cat([ref.new_full((n_c,), _STEP["coeff"]), ref.new_full((self.size - n_c,), _STEP["jaw"])])

    def points(self, x: torch.Tensor) -> torch.Tensor:
        """``M(x)`` for a batch of ``x (K, P)`` -> ``(K, N, 3)``."""
        return self.model(**self.kwargs(x), jaw_range="ignore").vertices[:, self.ids]

    def points_and_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``M(x) (N, 3)`` and ``dM/dx (P, N, 3)`` by central differences (one batched forward)."""
        h = self.steps()
        delta = torch.diag(h)
        batch = torch.cat([x[None], x[None] + delta, x[None] - delta])
        pts = self.points(batch)
        p = self.size
        return pts[0], (pts[1:p + 1] - pts[p + 1:]) / (2 * h[:, None, None])


def _cross_columns(p: torch.Tensor) -> torch.Tensor:
    """``(3N, 3)``: column k holds ``e_k x p_i`` stacked over the points (d(w x p)/dw)."""
    eye = torch.eye(3, dtype=p.dtype, device=p.device)
    return torch.stack([torch.linalg.cross(eye[k].expand_as(p), p, dim=-1).reshape(-1) for k in range(3)], 1)


def _lm_one(prob: _Problem, target: torch.Tensor, *, fit_scale: bool, prior_weight: float, max_iter: int,
            tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, bool]:
    """Levenberg-Marquardt for one target ``(N, 3)``; returns ``x, R, t, s, iterations, converged``."""
    ref = prob.model.template
    x = ref.new_zeros(prob.size)
    with torch.no_grad():
        mean = prob.points(x[None])[0]
        sim = procrustes(mean, target, scale=fit_scale)
    # residuals in model millimetres: a target in other units (fit_scale) is divided by the initial
    # scale, so that prior_weight keeps its meaning; undone at the end
    unit = sim.scale.clone()
    target = target / unit
    rot, t, log_s = sim.rotation, sim.translation / unit, torch.zeros_like(unit)
    prior = prob.prior_scale(prior_weight)

    def cost_of(m: torch.Tensor, xv: torch.Tensor, r: torch.Tensor, tv: torch.Tensor, ls: torch.Tensor) -> float:
        res = torch.exp(ls) * m @ r.T + tv - target
        return float(res.square().sum() + (prior * xv).square().sum())

    with torch.no_grad():
        cost = cost_of(mean, x, rot, t, log_s)
        damping, converged, it = 1e-3, False, 0
        scale_ref = float(target.square().sum()) + 1.0
        for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
            m, dm = prob.points_and_jacobian(x)
            s = torch.exp(log_s)
            p = s * m @ rot.T
            res = (p + t - target).reshape(-1)
            cols = [(s * dm @ rot.T).reshape(prob.size, -1).T, _cross_columns(p),
                    torch.eye(3, dtype=ref.dtype, device=ref.device).repeat(target.shape[0], 1)]
            if fit_scale:
                cols.append(p.reshape(-1, 1))
            jac = torch.cat(cols, 1)
            hess = jac.T @ jac
            grad = jac.T @ res
            n_x = prob.size
            hess[:n_x, :n_x] += torch.diag(prior.square())
            grad[:n_x] += prior.square() * x
            accepted = False
            for _ in range(30):
                lhs = hess + damping * torch.diag(torch.diag(hess).clamp_min(1e-12))
                step = -torch.linalg.solve(lhs, grad)
                x_new = x + step[:n_x]
                rot_new = axis_angle_to_matrix(step[n_x:n_x + 3]) @ rot
                t_new = t + step[n_x + 3:n_x + 6]
                ls_new = log_s + step[n_x + 6] if fit_scale else log_s
                cost_new = cost_of(prob.points(x_new[None])[0], x_new, rot_new, t_new, ls_new)
                if cost_new <= cost:
                    accepted = True
                    break
                damping *= 4.0
            if not accepted:
                converged = True  # no descent direction left at double precision
                break
            decrease = cost - cost_new
            x, rot, t, log_s, cost = x_new, rot_new, t_new, ls_new, cost_new
            damping = max(damping / 3.0, 1e-9)
            if decrease <= tol * max(cost, 1e-30) or cost <= 1e-24 * scale_ref or \
                    float(step.abs().max()) < 1e-13:
                converged = True
                break
    return x, rot, t * unit, torch.exp(log_s) * unit, it, converged


def _fit_head(
    model: Sculptor | None, target: Any, *, tissues: tuple[str, ...] | None, what: str, faces: Any,
    free_spaces: tuple[str, ...], fit_jaw: bool, fit_scale: bool, prior_weight: float, max_iter: int, tol: float,
) -> HeadFit:
    """The shared loop of :func:`predict_face` and :func:`predict_skull` (see the module docs)."""
    start = time.perf_counter()
    if model is None:
        model = Sculptor(dtype=torch.float64)
    if not isinstance(model, Sculptor):
        raise ParameterError(f"model must be a Sculptor (or None for the embedded default head), "
                             f"got {type(model).__name__}.")
    if not prior_weight >= 0 or prior_weight == float("inf"):
        raise ParameterError(f"prior_weight must be a finite number >= 0, got {prior_weight}.")
    if max_iter < 1:
        raise ParameterError(f"max_iter must be at least 1, got {max_iter}.")
    tissues = bone_tissues(model) if tissues is None else tissues
    y = read_target(target, model, tissues, what, faces=faces).to(model.template.device)
    model64 = _float64(model)
    spaces = {k: n for k, n in model64.space_sizes.items() if k in free_spaces}
    prob = _Problem(model64, tissue_vertex_ids(model64, tissues), spaces, fit_jaw)
    rows: list[dict[str, torch.Tensor]] = []
    iterations, converged = [], []
    for b in range(y.shape[0]):
        x, rot, t, s, it, ok = _lm_one(prob, y[b], fit_scale=fit_scale, prior_weight=prior_weight,
                                       max_iter=max_iter, tol=tol)
        iterations.append(it)
        converged.append(ok)
        rows.append(layer_params(prob, x, rot, t, s))
    return finish_fit(model, rows, tissue_vertex_ids(model, tissues), y, iterations, converged, start)


def layer_params(prob: _Problem, x: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, s: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """The layer's keyword arguments (batch 1) of an LM solution ``W = s R M(x) + t``."""
    model64 = prob.model
    kw = prob.kwargs(x[None])
    with torch.no_grad():
        root = model64(**kw, jaw_range="ignore").joints[0, 0]  # the root joint the global rotation turns about
    row = {name: kw.get(name, x.new_zeros(1, k)) for name, k in model64.space_sizes.items()}
    row["jaw_pose"] = kw.get("jaw_pose", x.new_zeros(1, 3))
    row["jaw_offset"] = kw.get("jaw_offset", x.new_zeros(1, 3))
    # W = s R M + t  ==  layer: s (R (v - j0) + j0) + transl
    row["global_orient"] = matrix_to_axis_angle(rot)[None]
    row["transl"] = (t + s * (rot @ root - root))[None]
    row["scale"] = s.reshape(1)
    return row


def finish_fit(model: Sculptor, rows: list[dict[str, torch.Tensor]], ids: torch.Tensor, y: torch.Tensor,
               iterations: list[int], converged: list[bool], start: float) -> HeadFit:
    """A :class:`HeadFit` of per-sample solutions: the layer run once more, residuals at ``ids`` against ``y``."""
    dtype = model.template.dtype
    params = {k: torch.cat([r[k] for r in rows]).to(dtype) for k in rows[0]}
    with torch.no_grad():
        output = model(**params)
        fitted = output.vertices[:, ids]
        residual = (fitted.to(torch.float64) - y).norm(dim=-1).to(dtype)
    return HeadFit(params=params, output=output, face=output.face, residual_mm=residual,
                   rms_mm=residual.square().mean(-1).sqrt(), iterations=tuple(iterations),
                   converged=tuple(converged), seconds=time.perf_counter() - start)


def predict_face(
    skull: Any,
    model: Sculptor | None = None,
    *,
    faces: Any = None,
    fit_jaw: bool = True,
    fit_scale: bool = False,
    prior_weight: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-14,
) -> HeadFit:
    """Forensic facial reconstruction: fit the head to a skull, read off the face (neutral expression).

    Args:
        skull: the model's bone tissues (all but ``face``, stack order: skull then mandible) in the
            model's topology, in any rigid pose: vertices ``(Vb, 3)`` / ``(B, Vb, 3)``, a mesh file
            path, an object with ``.vertices`` / ``.faces``, or a list of those, one per bone tissue.
        model: a :class:`Sculptor` (``None``: the embedded default head in float64). Results come in
            its dtype; the fit itself runs in float64.
        faces: the target's faces, when not read from a file; they must equal the model's.
        fit_jaw: also fit ``jaw_pose`` and ``jaw_offset`` (else they stay zero).
        fit_scale: also fit a uniform scale (a skull scanned in other units, or a size outside the
            shape space).
        prior_weight: weight of the Gaussian prior (see the module docs): the expected variance of
            the target's per-coordinate noise, mm^2; 0 fits the bones exactly, without a prior.
        max_iter, tol: Levenberg-Marquardt iterations and relative cost decrease to stop at.

    Raises:
        TopologyError: the mesh is not in the model's bone topology (count or faces).
        ParameterError: NaN/Inf coordinates, bad options.
        ModelFileError: a path that is not a readable mesh.
    """
    model_spaces = ("shape", "trait")
    return _fit_head(model, skull, tissues=None, what="skull", faces=faces, free_spaces=model_spaces,
                     fit_jaw=fit_jaw, fit_scale=fit_scale, prior_weight=prior_weight, max_iter=max_iter, tol=tol)


def predict_skull(
    face: Any,
    model: Sculptor | None = None,
    *,
    faces: Any = None,
    fit_jaw: bool = True,
    fit_expression: bool = True,
    fit_scale: bool = False,
    prior_weight: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-14,
) -> HeadFit:
    """The reverse: fit the head to a face surface (``face`` tissue, model topology, any rigid pose)
    with shape, trait, expression (``fit_expression``, when the model has that space) and jaw, and
    read off the bones: ``fit.skull``, ``fit.mandible``, in the target's frame. Arguments and errors
    as :func:`predict_face`."""
    spaces = ("shape", "trait", "expression") if fit_expression else ("shape", "trait")
    return _fit_head(model, face, tissues=("face",), what="face", faces=faces, free_spaces=spaces,
                     fit_jaw=fit_jaw, fit_scale=fit_scale, prior_weight=prior_weight, max_iter=max_iter, tol=tol)
