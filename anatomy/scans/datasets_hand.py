"""MRI-Hand-like phantom dataset: T1-weighted hand MRIs of subjects in many poses.

Per subject (its own seed, see :func:`~anatomy.scans.datasets.sample_seeds`) a random hand shape
``~ N(0, 1)`` of the default (or given) hand model; pose 0 is the rest pose (flat hand), poses
1.. are drawn by :meth:`~anatomy.Nimble.sample_pose` (every joint angle uniform inside its
anatomical limits; with ``collision_free`` the bones are then pushed apart). Muscles and skin
either follow the bones by the layer's skinning (``soft_tissue="skinning"``) or settle to a
quasi-static elastic equilibrium around the posed bones (``"elastic"``,
:func:`anatomy.scans.phantom_soft.settle_soft_tissue`; the default when that module is present).

Per pose: label map (``labels.nii.gz``), MRI (``mri.nii.gz``, uint16, fat = :data:`MRI_SCALE`), the meshes
``bones.ply`` (the 20 bones), ``muscles.ply``, ``skin.ply`` (world mm, the frame of the volumes),
``joints.json`` (25 joints and the 21 common hand keypoints) and ``params.json``.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..core.errors import ParameterError
from .datasets import (
    DatasetReport,
    DatasetWriter,
    Progress,
    check_count,
    check_nonnegative,
    check_supersample,
    float_lists,
    sample_seeds,
)
from .phantom_labels import phantom_labels
from .phantom_mri import RELAXATION, mri_from_labels, t1_intensities

__all__ = ["MRI_SCALE", "SOFT_TISSUE", "default_soft_tissue", "make_hand_dataset"]

SOFT_TISSUE = ("elastic", "skinning")
MRI_SCALE = 1000.0  # stored MRI = signal (fat = 1) x MRI_SCALE, rounded to uint16 (like a scanner's magnitude)


def default_soft_tissue() -> str:
    """``"elastic"`` when :mod:`anatomy.scans.phantom_soft` is installed, else ``"skinning"``."""
    return "elastic" if importlib.util.find_spec("anatomy.scans.phantom_soft") is not None else "skinning"


def _soft_tissue(name: str | None) -> str:
    chosen = default_soft_tissue() if name is None else name
    if chosen not in SOFT_TISSUE:
        raise ParameterError(f"soft_tissue must be one of {SOFT_TISSUE} (or None for the default); got {name!r}.")
    if chosen == "elastic" and default_soft_tissue() != "elastic":
        raise ParameterError("soft_tissue='elastic' needs anatomy.scans.phantom_soft, which this installation lacks; "
                             "use soft_tissue='skinning'.")
    return chosen


def make_hand_dataset(out: str | os.PathLike[str], subjects: int, *, poses: int = 50,
                      spacing: float | Sequence[float] = 0.5, seed: int = 0, soft_tissue: str | None = None,
                      shape_sd: float = 1.0,
                      collision_free: bool = False, bias: float = 0.2, noise: float = 0.02, psf_mm: float = 0.0,
                      supersample: int = 2, margin: float = 5.0, model: Any = None, max_bytes: int | None = None,
                      progress: Progress | None = None) -> DatasetReport:
    """Write an MRI-Hand-like dataset of ``subjects`` x ``poses`` hand MRIs to the new folder ``out``.

    Args:
        out: a new or empty folder (refused otherwise, before anything is written).
        subjects, poses: counts (pose 0 of every subject is the flat rest pose).
        spacing: voxel size in mm, a number or ``(x, y, z)``.
        seed: the dataset seed; the same seed gives identical files.
        soft_tissue: ``"elastic"``, ``"skinning"`` or ``None`` (:func:`default_soft_tissue`). Every
            subject's rest pose is settled before the first file is written (a shape the solve
            refuses raises at once).
        shape_sd: shape coefficients are ``N(0, shape_sd**2)`` (0: every subject has the mean shape).
        collision_free: push the bones of each sampled pose apart (:meth:`~anatomy.Nimble.separate_bones`;
            about 15 s per pose on one core). Without it neighbouring fingers may cross.
        bias, noise, psf_mm: of :func:`~anatomy.scans.mri_from_labels`.
        supersample, margin: of :func:`~anatomy.scans.phantom_labels`.
        model: a :class:`~anatomy.Nimble` with joint limits (default: the embedded hand).
        max_bytes: memory limit of one phantom (default 60 % of the available memory); every
            pose's grid is checked before the first file is written.
        progress: called with one line per written sample (e.g. ``print``).

    Returns:
        a :class:`~anatomy.scans.datasets.DatasetReport`; ``out/manifest.json`` lists every sample.
    """
    from .. import __version__
    from ..models.nimble import Nimble

    n = check_count("subjects", subjects)
    k = check_count("poses", poses, 1, 10_000)
    seed = check_count("seed", seed, 0, 2**32 - 1)
    check_supersample(supersample)
    check_nonnegative(shape_sd=shape_sd, bias=bias, noise=noise, psf_mm=psf_mm)
    soft = _soft_tissue(soft_tissue)
    writer = DatasetWriter(out, spacing, margin, max_bytes, progress)
    hand = Nimble() if model is None else model
    if not isinstance(hand, Nimble) or not hand.has_joint_limits:
        raise ParameterError("model must be a Nimble hand layer with joint limits (e.g. the default anatomy.Nimble()).")
    settle: Callable[..., Any] | None = None
    if soft == "elastic":
        from .phantom_soft import settle_soft_tissue

        settle = settle_soft_tissue
    plans = []
    for s in range(n):  # every subject's hands first: the checks come before any file is written
        gen, _ = sample_seeds(seed, s)
        shape = shape_sd * torch.randn(1, hand.space_sizes["shape"], generator=gen, dtype=torch.float64)
        shape = shape.to(hand.template.dtype)
        pose = torch.zeros(k, 20, 3, dtype=hand.template.dtype)
        if k > 1:
            pose[1:] = hand.sample_pose(k - 1, generator=gen, collision_free=collision_free)
        with torch.no_grad():
            outputs = hand(pose, shape)
        writer.check_memory([outputs], slack_mm=2.0)  # all poses' bounding box, + 2 mm for the elastic solve
        rest = None
        if settle is not None:  # settled first: a hand the solve refuses stops the run before any file
            try:
                with torch.no_grad():
                    rest = settle(hand, hand(pose[:1], shape), shape=shape)
            except ParameterError as exc:
                raise ParameterError(f"sub-{s:03d}: soft_tissue='elastic' cannot settle this hand shape ({exc}); use "
                                     f"soft_tissue='skinning' or a smaller shape_sd (nothing was written).") from exc
        plans.append((shape, pose, rest))
    for s, (shape, pose, rest) in enumerate(plans):
        subject = f"sub-{s:03d}"
        for i in range(k):
            t0 = time.perf_counter()
            _, rng = sample_seeds(seed, s, i + 1)
            if i == 0 and rest is not None:
                output = rest
            else:
                with torch.no_grad():
                    output = hand(pose[i:i + 1], shape)
                if settle is not None:
                    output = settle(hand, output, shape=shape)
            labels, frac = phantom_labels(output, writer.spacing, margin, supersample, max_bytes=writer.max_bytes)
            mri = mri_from_labels(labels, frac, bias=bias, noise=noise, psf_mm=psf_mm, generator=rng)
            del frac
            mri = mri.with_data(np.clip(np.rint(mri.data * MRI_SCALE), 0, 65535).astype(np.uint16))
            folder = writer.folder(subject, f"ses-pose{i:02d}")
            params = {"pose": pose[i:i + 1], "shape": shape}
            files = {"mri": writer.volume(folder, "mri", mri), "labels": writer.volume(folder, "labels", labels),
                     **writer.meshes(folder, output, ("bones", "muscles", "skin"))}
            joints = output.joints[0].double().numpy()
            keys = output.keypoints[0].double().numpy()
            files["joints"] = writer.json(folder / "joints.json", {
                "units": "mm", "frame": "the hand model's frame, which the volumes share",
                "joints": {name: joints[j].tolist() for j, name in enumerate(output.joint_names)},
                "keypoints": {name: keys[j].tolist() for j, name in enumerate(hand.keypoint_names)}})
            files["params"] = writer.json(folder / "params.json", {
                "model": hand.data_meta.get("name"), "params": float_lists(params), "pose_index": i,
                "soft_tissue": soft})
            writer.add({"subject": subject, "session": f"pose{i:02d}", "pose_index": i, "files": files,
                        "shape": list(labels.shape), "affine": labels.affine.tolist(), "params": float_lists(params)},
                       time.perf_counter() - t0)
    level = t1_intensities()
    return writer.finish({
        "name": "mri_hand_like", "description": "MRI-Hand-like T1 hand MRI phantoms in many poses",
        "version": "1", "generator": f"anatomy {__version__} anatomy.scans.datasets_hand.make_hand_dataset",
        "seed": int(seed), "num_subjects": n, "poses_per_subject": k, "modality": "mri",
        "units": {"length": "mm", "angle": "rad (axis-angle)",
                  "mri": f"T1 signal x {MRI_SCALE:g} (fat = {MRI_SCALE:g}), uint16"},
        "model": {"kind": "hand", "name": hand.data_meta.get("name")},
        "soft_tissue": soft, "collision_free": bool(collision_free), "shape_sd": float(shape_sd),
        "modality_facts": {"t1_intensity": {t.name: v for t, v in level.items()}, "mri_scale": MRI_SCALE,
                           "relaxation_pd_t1ms_t2ms": {t.name: list(v) for t, v in RELAXATION.items()},
                           "tr_ms": 500.0, "te_ms": 15.0, "field_T": 1.5, "bias": bias, "noise": noise,
                           "psf_fwhm_mm": psf_mm, "supersample": supersample},
    })
