"""LUCY-like phantom dataset: head CTs of subjects before and after a planned orthognathic surgery.

Per subject (its own seed, see :func:`~anatomy.scans.datasets.sample_seeds`):

* a random head of the default (or given) head model: ``shape ~ N(0, 1)``, neutral expression,
  **jaw closed** (teeth in occlusion, as planning CTs are taken), no rigid motion;
* a random surgical plan from :data:`SURGERY_PLAN` (a mandibular advancement or setback, and
  sometimes a Le Fort I maxillary advancement / impaction and a genioplasty), in millimetres of
  each trait's bony landmark (:func:`~anatomy.fitting.surgery.trait_movements`);
* the pre-operative traits are the **opposite of the plan** plus ``U(-0.25, 0.25)`` per trait, so
  the surgery corrects a deformity and the post-operative head is near the population mean;
* pre and post (:func:`~anatomy.fitting.simulate_surgery`): label map (``labels.nii.gz``), CT
  (``ct.nii.gz``, int16 HU; amalgam fillings and streaks in a share ``metal_fraction`` of the
  subjects, in both sessions), the meshes ``skull.ply``, ``mandible.ply``, ``face.ply`` (world mm,
  the frame of the volumes), ``landmarks.json`` and ``params.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
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
from .phantom_ct import HU, METAL_HU, ct_from_labels
from .phantom_labels import phantom_labels

__all__ = ["SURGERY_PLAN", "make_head_dataset", "plan_surgery"]

#: ``(trait names, probability, min mm, max mm)``: with that probability one of the names (uniformly)
#: moves its bony landmark by ``U(min, max)`` mm. Single-jaw movements of 2-8 mm and Le Fort I
#: advancements of 2-5 mm are the usual range (larger ones are staged; see
#: :data:`~anatomy.fitting.surgery.PLAUSIBLE_MOVEMENT_MM`).
SURGERY_PLAN: tuple[tuple[tuple[str, ...], float, float, float], ...] = (
    (("mandibular_advancement", "mandibular_setback"), 1.0, 2.0, 8.0),
    (("maxillary_advancement",), 0.5, 2.0, 5.0),
    (("maxillary_impaction",), 0.3, 1.0, 4.0),
    (("genioplasty_advancement",), 0.2, 2.0, 6.0),
)


def _check_plan(plan: Sequence[Any], table: dict[str, float]) -> None:
    from ..fitting.surgery import PLAUSIBLE_MOVEMENT_MM

    if not table:
        raise ParameterError("the head model's traits carry no names or bone movements (e.g. an official SCULPTOR "
                             "file); a LUCY-like dataset needs a model with described traits (the default head).")
    for item in plan:
        try:
            names, p, lo, hi = item
            ok = bool(names) and 0.0 <= p <= 1.0 and 0.0 <= lo <= hi <= PLAUSIBLE_MOVEMENT_MM
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"surgery plan item {item!r}: expected (trait names, probability 0..1, min mm, max "
                                 f"mm) with 0 <= min <= max <= {PLAUSIBLE_MOVEMENT_MM:g}.")
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ParameterError(f"surgery plan names unknown traits {unknown}; this model's traits are "
                                 f"{list(table)}.")


def plan_surgery(rng: np.random.Generator, plan: Sequence[Any] = SURGERY_PLAN) -> dict[str, float]:
    """One random surgical plan ``{trait name: mm}`` drawn from ``plan`` (see :data:`SURGERY_PLAN`)."""
    moves: dict[str, float] = {}
    for names, p, lo, hi in plan:
        if rng.random() < p:
            name = names[int(rng.integers(len(names)))]
            moves[name] = moves.get(name, 0.0) + round(float(rng.uniform(lo, hi)), 2)
    return moves


def make_head_dataset(out: str | os.PathLike[str], subjects: int, *,
                      spacing: float | Sequence[float] = (0.48, 0.48, 1.0), seed: int = 0,
                      plan: Sequence[Any] = SURGERY_PLAN, metal_fraction: float = 0.3, psf_mm: float = 0.8,
                      noise_hu: float = 10.0, supersample: int = 2, margin: float = 10.0, model: Any = None,
                      max_bytes: int | None = None, progress: Progress | None = None) -> DatasetReport:
    """Write a LUCY-like dataset of ``subjects`` x (pre, post) head CTs to the new folder ``out``.

    Args:
        out: a new or empty folder (refused otherwise, before anything is written).
        subjects: number of subjects (each gives two samples, ``ses-pre`` and ``ses-post``).
        spacing: voxel size in mm, a number or ``(x, y, z)`` (LUCY: 0.48 x 0.48 x 1).
        seed: the dataset seed; the same seed gives identical files.
        plan: the surgical plan distribution (:data:`SURGERY_PLAN`).
        metal_fraction: share of subjects with amalgam fillings (and their streaks) in the CT.
        psf_mm, noise_hu: CT blur (FWHM) and noise (see :func:`~anatomy.scans.ct_from_labels`).
        supersample, margin: of :func:`~anatomy.scans.phantom_labels`.
        model: a :class:`~anatomy.Sculptor` with described traits (default: the embedded head, float64).
        max_bytes: memory limit of one phantom (default 60 % of the available memory); every
            subject's grid is checked before the first file is written.
        progress: called with one line per written sample (e.g. ``print``).

    Returns:
        a :class:`~anatomy.scans.datasets.DatasetReport`; ``out/manifest.json`` lists every sample.
    """
    from .. import __version__
    from ..fitting.surgery import simulate_surgery, trait_movements
    from ..models.sculptor import Sculptor

    n = check_count("subjects", subjects)
    seed = check_count("seed", seed, 0, 2**32 - 1)
    check_supersample(supersample)
    check_nonnegative(psf_mm=psf_mm, noise_hu=noise_hu, metal_fraction=metal_fraction)
    if not metal_fraction <= 1.0:
        raise ParameterError(f"metal_fraction must be in [0, 1]; got {metal_fraction}.")
    writer = DatasetWriter(out, spacing, margin, max_bytes, progress)
    head = Sculptor(dtype=torch.float64) if model is None else model
    if not isinstance(head, Sculptor):
        raise ParameterError(f"model must be a Sculptor (head layer); got {type(head).__name__}.")
    table = trait_movements(head)
    _check_plan(plan, table)
    names = list(table)
    plans = []
    for s in range(n):  # every subject's heads first: the memory check comes before any file
        gen, rng = sample_seeds(seed, s)
        params = head.sample(1, generator=gen, spaces=("shape",), jaw=False)
        moves = plan_surgery(rng, plan)
        metal = bool(rng.random() < metal_fraction)
        delta = torch.zeros(1, head.space_sizes["trait"], dtype=torch.float64)
        for name, mm in moves.items():
            delta[0, names.index(name)] += mm / table[name]
        noise = torch.from_numpy(rng.uniform(-0.25, 0.25, size=tuple(delta.shape)))
        params["trait"] = (noise - delta).to(head.template.dtype)
        result = simulate_surgery(params, moves, head)
        writer.check_memory([result.pre, result.post])
        plans.append((params, moves, metal))  # the heads are made again below: no meshes held for all subjects
    for s, (params, moves, metal) in enumerate(plans):
        subject = f"sub-{s:03d}"
        result = simulate_surgery(params, moves, head)
        for k, (session, output) in enumerate((("pre", result.pre), ("post", result.post))):
            t0 = time.perf_counter()
            _, rng = sample_seeds(seed, s, k + 1)
            labels, frac = phantom_labels(output, writer.spacing, margin, supersample, max_bytes=writer.max_bytes)
            ct = ct_from_labels(labels, frac, psf_mm=psf_mm, noise_hu=noise_hu, metal=metal, generator=rng)
            del frac
            ct = ct.with_data(np.clip(np.rint(ct.data), -1024, 3071).astype(np.int16))
            folder = writer.folder(subject, f"ses-{session}")
            sample_params = dict(params, trait=params["trait"] + (result.trait_delta if session == "post" else 0))
            if output.landmarks is None:
                raise ParameterError("the head model has no landmarks; a LUCY-like dataset needs them.")
            marks = output.landmarks[0].detach().cpu().double().numpy()
            files = {"ct": writer.volume(folder, "ct", ct), "labels": writer.volume(folder, "labels", labels),
                     **writer.meshes(folder, output, output.tissue_names)}
            files["landmarks"] = writer.json(folder / "landmarks.json", {
                "units": "mm", "frame": "the head model's frame (RAS+), which the volumes share",
                "landmarks": {name: marks[i].tolist() for i, name in enumerate(output.landmark_names)},
                "groups": {k: list(v) for k, v in output.landmark_groups.items()}})
            files["params"] = writer.json(folder / "params.json", {
                "model": head.data_meta.get("name"), "params": float_lists(sample_params),
                "surgery_mm": moves, "session": session})
            writer.add({"subject": subject, "session": session, "files": files, "shape": list(labels.shape),
                        "affine": labels.affine.tolist(), "params": float_lists(sample_params),
                        "surgery_mm": moves, "trait_delta": result.trait_delta[0].double().tolist(),
                        "metal": metal}, time.perf_counter() - t0)
    trait_mm = {name: table[name] for name in names}
    return writer.finish({
        "name": "lucy_like", "description": "LUCY-like head CT phantoms before and after orthognathic surgery",
        "version": "1", "generator": f"anatomy {__version__} anatomy.scans.datasets_head.make_head_dataset",
        "seed": int(seed), "num_subjects": n, "sessions": ["pre", "post"], "modality": "ct",
        "units": {"length": "mm", "angle": "rad (axis-angle)", "ct": "HU (int16)"},
        "model": {"kind": "head", "name": head.data_meta.get("name"), "trait_mm_per_unit": trait_mm},
        "surgery_plan": [[list(group), p, lo, hi] for group, p, lo, hi in plan],
        "modality_facts": {"hu": {t.name: v for t, v in HU.items()}, "metal_hu": METAL_HU, "psf_fwhm_mm": psf_mm,
                           "noise_hu": noise_hu, "metal_fraction": metal_fraction, "supersample": supersample},
    })
