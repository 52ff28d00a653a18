"""Learn a model file's spaces from registrations: :func:`learn_model`.

* **Head** (base: a SCULPTOR-like model with ``skull``, ``mandible``, ``face``): the trait space from
  the pre/post pairs of each subject (sessions ``pre`` and ``post``), each post aligned on the
  cranial vault (the skull vertices above the median height of the base skull, which orthognathic
  surgery does not move), every pair first moved into the base's frame on the same vertices. When
  every pair carries its planned trait coefficients (``trait_delta`` of the phantom datasets'
  manifest), the traits are regressed one by one and keep their names and units (a movement no pair
  made keeps the base's field); else they are principal components. The shape space comes from one
  registration per subject (the pre session when there is one), aligned by generalised Procrustes,
  with the trait directions projected out. Expression scans (sessions starting with ``expr``, e.g.
  ``expr01``) give the expression space: principal components of their changes from the subject's
  neutral registration (session ``neutral``, ``rest`` or ``pre``), aligned on the skull; they do not
  enter the shape space.
* **Hand** (base: ``bones``, ``muscles``, ``skin``): without posed registrations, the shape space from
  one rest-pose registration per subject (session ``pose00`` or ``rest``, else the subject's only one).
  When posed registrations carry their fitted pose (``params.pose`` of the phantom datasets' manifest,
  ``(1, 20, 3)``), :func:`learn_posed_hand` learns the articulation from all of them (skinning weights,
  joint regressor, pose correctives, pose PCA; :mod:`~anatomy.learning.articulation`) and the shape
  space from the unposed rest meshes.

The template becomes the learned shape mean; the base's rig (joints, skinning weights, landmarks, pose
correctives, limits) is kept, except what :func:`learn_posed_hand` learns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.alignment import procrustes
from ..core.errors import ParameterError, ShapeError
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..io.model_data import ModelData
from ..io.official_nimble import BONE_TO_JOINT
from .articulation import learn_articulation
from .model_file import with_learned_articulation, with_learned_spaces
from .pose_space import pose_pca
from .registrations import Registration, read_registrations
from .shape_space import LinearSpace, align_meshes, fit_linear_space, trait_space

__all__ = ["in_model_frame", "learn_model", "learn_posed_hand", "leave_one_out_error"]

_REST_SESSIONS = ("pose00", "rest", "pre", "neutral", "")
_EXPRESSION_PREFIX = "expr"  # sessions "expr01", "expression-smile", ...: expression scans of a subject


def _one_per_subject(regs: Sequence[Registration], prefer: Sequence[str]) -> list[Registration]:
    by_subject: dict[str, list[Registration]] = {}
    for r in regs:
        by_subject.setdefault(r.subject, []).append(r)
    chosen = []
    for subject, items in by_subject.items():
        ranked = sorted(items, key=lambda r: prefer.index(r.session) if r.session in prefer else len(prefer))
        if ranked[0].session not in prefer and len(items) > 1:
            raise ParameterError(f"subject {subject}: sessions {[r.session for r in items]} hold no rest/pre "
                                 f"registration ({', '.join(s for s in prefer if s)}); cannot pick one.")
        chosen.append(ranked[0])
    return chosen


def leave_one_out_error(meshes: torch.Tensor, components: int) -> float:
    """Mean vertex error (mm) of reconstructing each aligned mesh from a space of ``components``
    components learned from the others."""
    errors = []
    for i in range(meshes.shape[0]):
        rest = torch.cat([meshes[:i], meshes[i + 1:]])
        space = fit_linear_space(rest, components=min(components, rest.shape[0] - 1))
        back = space.reconstruct(space.coefficients(meshes[i:i + 1]))
        errors.append(float((back - meshes[i:i + 1]).norm(dim=-1).mean()))
    return float(np.mean(errors))


def _project_out(x: torch.Tensor, space: LinearSpace) -> torch.Tensor:
    """``x (N, V, 3)`` without its components along the directions of ``space``."""
    flat = space.basis.reshape(space.num_components, -1)
    keep = flat.norm(dim=1) > 0
    if not bool(keep.any()):
        return x
    q, _ = torch.linalg.qr(flat[keep].T)
    d = x.reshape(x.shape[0], -1)
    return (d - (d @ q) @ q.T).reshape(x.shape)


def _head_traits(regs: Sequence[Registration], base: ModelData, variance: float
                 ) -> tuple[LinearSpace | None, bool, int]:
    pairs: dict[str, dict[str, Registration]] = {}
    for r in regs:
        if r.session in ("pre", "post"):
            pairs.setdefault(r.subject, {})[r.session] = r
    complete = [p for p in pairs.values() if len(p) == 2]
    if not complete:
        return None, False, 0
    pre = torch.from_numpy(np.stack([p["pre"].vertices for p in complete]))
    post = torch.from_numpy(np.stack([p["post"].vertices for p in complete]))
    skull = next(t for t in base.tissues if t.name == "skull")
    z = base.template[skull.start:skull.stop, 2].double()
    fixed = torch.zeros(base.num_vertices, dtype=torch.bool)
    fixed[skull.start:skull.stop] = z > z.median()
    # every pair into the base's frame first (on the vault), so the changes share one frame
    frame = procrustes(pre, base.template.double().expand_as(pre), fixed.double().expand(len(complete), -1))
    pre, post = frame.apply(pre), frame.apply(post)
    deltas = [p["pre"].info.get("trait_delta") for p in complete]
    named = all(d is not None for d in deltas)
    movements = torch.tensor(deltas, dtype=torch.float64) if named else None
    space = trait_space(pre, post, fixed=fixed, movements=movements, variance=variance)
    return space, named, len(complete)


def _is_expression(r: Registration) -> bool:
    return r.session.lower().startswith(_EXPRESSION_PREFIX)


def _expression_space(regs: Sequence[Registration], base: ModelData, variance: float
                      ) -> tuple[LinearSpace | None, dict[str, Any]]:
    """The expression space from expression scans: each one's change from its subject's neutral (or
    rest / pre) registration, aligned rigidly on the skull (expressions move soft tissue and the jaw),
    by principal components (:func:`~anatomy.learning.trait_space` without named movements)."""
    neutral = {r.subject: r for r in _one_per_subject([r for r in regs if not _is_expression(r)], _REST_SESSIONS)}
    pairs = [(neutral[r.subject], r) for r in regs if _is_expression(r) and r.subject in neutral]
    orphans = sorted({r.subject for r in regs if _is_expression(r) and r.subject not in neutral})
    report: dict[str, Any] = {"expression_scans": len(pairs)}
    if orphans:
        report["expression_without_neutral"] = orphans
    if not pairs:
        return None, report
    skull = next(t for t in base.tissues if t.name == "skull")
    fixed = torch.zeros(base.num_vertices, dtype=torch.bool)
    fixed[skull.start:skull.stop] = True
    rest = torch.from_numpy(np.stack([a.vertices for a, _ in pairs]))
    moved = torch.from_numpy(np.stack([b.vertices for _, b in pairs]))
    frame = procrustes(rest, base.template.double().expand_as(rest), fixed.double().expand(len(pairs), -1))
    space = trait_space(frame.apply(rest), frame.apply(moved), fixed=fixed, variance=variance)
    report["expression"] = {"components": space.num_components,
                            "explained": [round(float(e), 4) for e in space.explained]}
    return space, report


def in_model_frame(vertices: Any, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A posed hand registration ``vertices (V, 3)`` with its fitted ``params`` (``pose (1, 20, 3)`` and
    optionally ``global_orient``, ``transl``, ``scale``, as ``anatomy register`` writes them) as the
    layer's pose alone: ``((vertices - transl) / scale, pose)`` with ``global_orient`` folded into the
    root row (the layer turns the root by ``global_orient`` before posing, then scales about the
    origin and translates)."""
    pose = torch.as_tensor(np.asarray(params["pose"], dtype=np.float64)).reshape(1, -1, 3).clone()
    verts = torch.as_tensor(np.asarray(vertices, dtype=np.float64))
    if "transl" in params:
        verts = verts - torch.as_tensor(np.asarray(params["transl"], dtype=np.float64)).reshape(1, 3)
    if "scale" in params:
        scale = float(np.asarray(params["scale"], dtype=np.float64).reshape(-1)[0])
        if not scale > 0:
            raise ParameterError(f"a registration's scale must be positive, got {scale}.")
        verts = verts / scale
    if "global_orient" in params:
        turn = axis_angle_to_matrix(torch.as_tensor(np.asarray(params["global_orient"], dtype=np.float64)).reshape(3))
        pose[0, 0] = matrix_to_axis_angle(turn @ axis_angle_to_matrix(pose[0, 0]))
    return verts, pose


def learn_posed_hand(
    base: ModelData, meshes: Any, poses: Any, subjects: Sequence[str] | Any, *, transl: Any = None,
    components: int | None = None, variance: float = 0.99, iterations: int = 3,
    provenance: dict[str, Any] | None = None, **options: Any,
) -> tuple[ModelData, dict[str, Any]]:
    """A hand model file learned from posed meshes ``(N, V, 3)`` in the base's vertex order with their
    fitted poses ``(N, 20, 3)`` (Nimble axis-angle rows) and subject labels ``(N,)``: skinning weights,
    joint regressor, pose correctives and poses by :func:`~anatomy.learning.articulation.learn_articulation`
    (``options`` go there), the shape space from the learned rest meshes, the pose PCA
    (:func:`~anatomy.learning.pose_pca`) from the re-fitted poses. Give every subject a rest scan (pose
    rows all zero but the root). Returns the ``ModelData`` (``Nimble(data)``) and a report."""
    bone_poses = torch.as_tensor(poses, dtype=torch.float64)
    if bone_poses.dim() != 3 or bone_poses.shape[1:] != (len(BONE_TO_JOINT), 3):
        raise ShapeError(f"poses must be (N, {len(BONE_TO_JOINT)}, 3) Nimble axis-angle rows; got "
                         f"{tuple(bone_poses.shape)}.")
    labels = sorted(set(subjects))
    subj = torch.tensor([labels.index(s) for s in subjects])
    if len(labels) < 2:
        raise ParameterError(f"a shape space needs posed registrations of at least 2 subjects; got {len(labels)}.")
    joint_poses = bone_poses.new_zeros(bone_poses.shape[0], base.num_joints, 3)
    joint_poses[:, list(BONE_TO_JOINT)] = bone_poses
    if "rigid_vertices" not in options and any(t.name == "bones" for t in base.tissues):
        options["rigid_vertices"] = base.tissue_mask("bones")  # no correctives; the joints regressed from them
    art = learn_articulation(meshes, joint_poses, subj, base.template, base.skinning_weights, base.joint_regressor,
                             base.parents, transl=transl, iterations=iterations, **options)
    shape = fit_linear_space(art.rest, components=None if components is None else min(components, len(labels) - 1),
                             variance=variance)
    fitted = art.poses[:, list(BONE_TO_JOINT)]
    extras, pca_report = pose_pca(fitted) if fitted.shape[0] > 2 else ({}, None)
    report: dict[str, Any] = {
        "posed_meshes": int(bone_poses.shape[0]), "subjects": len(labels),
        "feature_joints": [base.joint_names[j] for j in art.feature_joints],
        "training_error_mm": [round(h, 4) for h in art.history],
        "shape": {"components": shape.num_components, "explained": [round(float(e), 4) for e in shape.explained]},
        "pose_pca": pca_report,
    }
    data = with_learned_articulation(base, shape, art.weights, art.regressor, art.pose_basis, art.feature_joints,
                                     pose_extras=extras, provenance={
                                         "articulation": {"method": "SMPL-style alternating optimisation",
                                                          "iterations": iterations, **report},
                                         **(provenance or {})})
    return data, report


def learn_model(
    registrations: str | Path | Sequence[Registration], base: ModelData, *, components: int | None = None,
    variance: float = 0.99, provenance: dict[str, Any] | None = None,
) -> tuple[ModelData, dict[str, Any]]:
    """A model file (``ModelData``) with spaces learned from ``registrations`` (a folder, see
    :func:`~anatomy.learning.read_registrations`, or the registrations themselves) on the rig of ``base``,
    and a report (counts, components, explained variance, leave-one-out reconstruction error in mm)."""
    tissues = [(t.name, t.num_vertices) for t in base.tissues]
    names = [n for n, _ in tissues]
    regs = read_registrations(registrations, tissues) if isinstance(registrations, str | Path) \
        else list(registrations)
    head = {"skull", "mandible", "face"} <= set(names)
    hand = {"bones", "muscles", "skin"} <= set(names)
    if not head and not hand:
        raise ParameterError(f"learn_model knows heads (skull, mandible, face) and hands (bones, muscles, skin); "
                             f"the base model has {names}.")
    report: dict[str, Any] = {"registrations": len(regs), "kind": "head" if head else "hand"}
    spaces: dict[str, LinearSpace] = {}
    named: tuple[str, ...] = ()
    trait = None
    if head:
        trait, is_named, num_pairs = _head_traits(regs, base, variance)
        report["pairs"] = num_pairs
        if trait is not None:
            spaces["trait"] = trait
            named = ("trait",) if is_named else ()
            report["trait"] = {"components": trait.num_components, "named": is_named,
                               "explained": [round(float(e), 4) for e in trait.explained]}
    if head:
        expression, expression_report = _expression_space(regs, base, variance)
        report.update(expression_report)
        if expression is not None:
            spaces["expression"] = expression
        regs = [r for r in regs if not _is_expression(r)]  # shape and traits from the neutral heads
    if hand and not head:
        posed = [r for r in regs if r.session not in _REST_SESSIONS]
        if posed and all("pose" in r.info.get("params", {}) for r in regs):
            # anatomy register fits global_orient / transl / scale too: fold them into the pose and the meshes
            framed = [in_model_frame(r.vertices, r.info["params"]) for r in regs]
            data, hand_report = learn_posed_hand(
                base, torch.stack([v for v, _ in framed]), torch.cat([p for _, p in framed]), [r.subject for r in regs],
                components=components, variance=variance,
                provenance={"registrations": len(regs), **(provenance or {})})
            report.update(hand_report)
            return data, report
        if posed:
            report["posed_ignored"] = "posed sessions lack params.pose; only the rest sessions were used"
    chosen = _one_per_subject(regs, _REST_SESSIONS)
    if len(chosen) < 2:
        raise ParameterError(f"a shape space needs registrations of at least 2 subjects; got {len(chosen)}.")
    aligned, _, _ = align_meshes(torch.from_numpy(np.stack([r.vertices for r in chosen])))
    if trait is not None:
        mean = aligned.mean(0)
        aligned = mean + _project_out(aligned - mean, trait)
    shape = fit_linear_space(aligned, components=None if components is None else min(components, len(chosen) - 1),
                             variance=variance)
    spaces["shape"] = shape
    report["subjects"] = len(chosen)
    report["shape"] = {"components": shape.num_components,
                       "explained": [round(float(e), 4) for e in shape.explained],
                       "leave_one_out_mm": round(leave_one_out_error(aligned, shape.num_components), 4)
                       if len(chosen) > 2 else None}
    data = with_learned_spaces(base, spaces, named=named,
                               provenance={"registrations": len(regs), "subjects": len(chosen), **(provenance or {})})
    if named and trait is not None and "trait" in base.spaces:
        # a named movement that no pair made has no data: keep the base's field for it
        unmade = [k for k in range(trait.num_components) if not bool(trait.basis[k].abs().sum() > 0)]
        if unmade and base.spaces["trait"].shape[0] == trait.num_components:
            data.spaces["trait"][unmade] = base.spaces["trait"][unmade].to(data.spaces["trait"])
        report["trait"]["kept_from_base"] = unmade
    return data, report
