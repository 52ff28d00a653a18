"""Rigid and similarity registration of point sets: landmarks, principal axes and trimmed ICP.

* :func:`align_landmarks`: weighted Procrustes (Umeyama 1991) on corresponding landmarks;
* :func:`principal_axes_init`: centroids and principal axes matched, the four proper sign choices of the
  axes frame tried (a shape turned by 180 deg is found) and the one with the lowest trimmed ICP cost kept;
* :func:`icp`: trimmed ICP (Chetverikov et al. 2002, "The trimmed iterative closest point algorithm"):
  closest points from a KD-tree, only the ``trim`` share of the source points with the closest matches
  used for each Procrustes step, so that a partial target (a scan missing a part) and outliers do not pull;
* :func:`register_rigid`: one of the first two as the start, then :func:`icp`.

Points are ``(N, 3)`` numpy arrays or torch tensors in mm; the work is done in float64 with numpy/scipy and
the transforms come back as :class:`~anatomy.core.alignment.Similarity` (float64 torch, CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from anatomy.core.alignment import Similarity, procrustes
from anatomy.core.errors import ParameterError, ShapeError

__all__ = ["RigidResult", "align_landmarks", "icp", "principal_axes_init", "register_rigid"]


@dataclass(frozen=True)
class RigidResult:
    """Outcome of :func:`icp` / :func:`register_rigid`.

    Attributes:
        transform: the similarity taking the source onto the target (``scale`` 1 for a rigid fit).
        rms: root mean square distance (mm) of the kept closest-point pairs at the final transform.
        iterations: ICP steps run.
        converged: whether the largest point move of the last step was below ``tol``.
        kept_fraction: share of the source points whose pairs were used (the trim).
    """

    transform: Similarity
    rms: float
    iterations: int
    converged: bool
    kept_fraction: float

    def apply(self, points: Any) -> np.ndarray:
        """``points (N, 3)`` moved by the transform, float64 numpy."""
        return _move(_points(points, "points"), *_parts(self.transform))


def _points(value: Any, name: str, minimum: int = 1) -> np.ndarray:
    """``value`` as a C-contiguous float64 ``(N, 3)`` array, checked."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.ascontiguousarray(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be an (N, 3) array of numbers; got {type(value).__name__}.") from exc
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeError(f"{name} must have shape (N, 3); got {tuple(arr.shape)}.")
    if arr.shape[0] < minimum:
        raise ShapeError(f"{name} holds {arr.shape[0]} points; need at least {minimum}.")
    if not np.isfinite(arr).all():
        raise ShapeError(f"{name} holds NaN or infinite values; drop those points first.")
    return arr


def _parts(transform: Similarity) -> tuple[np.ndarray, np.ndarray, float]:
    rot = transform.rotation.detach().cpu().double().numpy()
    trans = transform.translation.detach().cpu().double().numpy()
    if rot.shape != (3, 3) or trans.shape != (3,) or transform.scale.numel() != 1:
        raise ShapeError(f"init must be one unbatched Similarity; got rotation {rot.shape}, translation {trans.shape}.")
    return rot, trans, float(transform.scale)


def _similarity(rot: np.ndarray, trans: np.ndarray, scale: float) -> Similarity:
    return Similarity(rotation=torch.from_numpy(rot.copy()), translation=torch.from_numpy(trans.copy()),
                      scale=torch.tensor(scale, dtype=torch.float64))


def _move(points: np.ndarray, rot: np.ndarray, trans: np.ndarray, scale: float) -> np.ndarray:
    return scale * points @ rot.T + trans


def _check_trim(trim: float) -> float:
    if isinstance(trim, bool) or not isinstance(trim, (int, float)) or not 0 < trim <= 1:
        raise ParameterError(f"trim must be in (0, 1] (share of the source points paired each step); got {trim!r}.")
    return float(trim)


def align_landmarks(source_pts: Any, target_pts: Any, weights: Any = None, scale: bool = True) -> Similarity:
    """The (weighted) least-squares similarity taking landmarks ``source_pts`` onto ``target_pts``.

    Args:
        source_pts, target_pts: ``(K, 3)`` corresponding points, ``K >= 3`` not all on one line.
        weights: optional ``(K,)`` non-negative weights, not all zero.
        scale: also fit a uniform scale (else rigid).
    """
    src = _points(source_pts, "source_pts", 3)
    dst = _points(target_pts, "target_pts", 3)
    if src.shape != dst.shape:
        raise ShapeError(f"source_pts and target_pts must pair up; got {src.shape[0]} and {dst.shape[0]} points.")
    w = None
    if weights is not None:
        w_arr = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
        if w_arr.shape != (src.shape[0],) or not np.isfinite(w_arr).all() or (w_arr < 0).any() or w_arr.sum() <= 0:
            raise ParameterError(f"weights must be ({src.shape[0]},) finite, >= 0 and not all zero; got {w_arr!r}.")
        w = torch.from_numpy(w_arr)
    centred = src - src.mean(0)
    if np.linalg.svd(centred, compute_uv=False)[1] <= 1e-9 * max(1.0, float(np.abs(centred).max())):
        raise ShapeError("source_pts lie on one line (or one point); the rotation about it is undetermined.")
    return procrustes(torch.from_numpy(src), torch.from_numpy(dst), weights=w, scale=scale)


def _keep_count(count: int, trim: float) -> int:
    return max(3, min(count, int(math.ceil(trim * count))))


def _icp_loop(src: np.ndarray, tree: cKDTree, dst: np.ndarray, rot: np.ndarray, trans: np.ndarray, size: float, *,
              scale: bool, trim: float, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float, int, bool]:
    keep_n = _keep_count(src.shape[0], trim)
    moved = _move(src, rot, trans, size)
    src_t = torch.from_numpy(src)
    for it in range(1, max_iter + 1):
        dist, idx = tree.query(moved)
        keep = np.argpartition(dist, keep_n - 1)[:keep_n] if keep_n < src.shape[0] else np.arange(src.shape[0])
        fit = procrustes(src_t[keep], torch.from_numpy(dst[idx[keep]]), scale=scale)
        rot, trans, size = _parts(fit)
        new = _move(src, rot, trans, size)
        step = float(np.sqrt(((new - moved) ** 2).sum(1).max()))
        moved = new
        if step < tol:
            return rot, trans, size, it, True
    return rot, trans, size, max_iter, False


def _trimmed_rms(moved: np.ndarray, tree: cKDTree, trim: float) -> float:
    dist, _ = tree.query(moved)
    keep_n = _keep_count(len(dist), trim)
    return float(np.sqrt(np.mean(np.partition(dist, keep_n - 1)[:keep_n] ** 2)))


def icp(source: Any, target: Any, *, init: Similarity | None = None, scale: bool = False, trim: float = 0.8,
        max_iter: int = 200, tol: float = 1e-4) -> RigidResult:
    """Trimmed ICP taking ``source (N, 3)`` onto ``target (M, 3)`` (Chetverikov et al. 2002).

    Each step pairs every moved source point with its closest target point (scipy ``cKDTree``), keeps the
    ``trim`` share of the pairs with the smallest distances and refits the transform to them by Procrustes.
    Set ``trim`` a little below the share of the source that the target covers (e.g. 0.6 for a scan missing
    30 % of the shape); ``trim=1`` is plain ICP.

    Args:
        source, target: point sets (numpy or torch), mm.
        init: starting transform (default identity); see :func:`principal_axes_init`.
        scale: also fit a uniform scale.
        trim: share of the source points used per step, in (0, 1].
        max_iter: most steps; tol: stop when no source point moved more than this (mm) in a step.
    """
    src = _points(source, "source", 3)
    dst = _points(target, "target", 1)
    trim = _check_trim(trim)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ParameterError(f"max_iter must be a positive int; got {max_iter!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ParameterError(f"tol must be a finite number >= 0 (mm); got {tol!r}.")
    rot, trans, size = (np.eye(3), np.zeros(3), 1.0) if init is None else _parts(init)
    tree = cKDTree(dst)
    rot, trans, size, its, done = _icp_loop(src, tree, dst, rot, trans, size, scale=scale, trim=trim,
                                            max_iter=max_iter, tol=tol)
    rms = _trimmed_rms(_move(src, rot, trans, size), tree, trim)
    keep_n = _keep_count(src.shape[0], trim)
    return RigidResult(_similarity(rot, trans, size), rms, its, done, keep_n / src.shape[0])


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and principal axes (columns, largest variance first, det +1)."""
    centre = points.mean(0)
    _, vecs = np.linalg.eigh(np.cov((points - centre).T))
    axes = vecs[:, ::-1].copy()
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    return centre, axes


_FLIPS = [np.diag(d) for d in ((1.0, 1.0, 1.0), (1.0, -1.0, -1.0), (-1.0, 1.0, -1.0), (-1.0, -1.0, 1.0))]


def principal_axes_init(source: Any, target: Any, *, scale: bool = False, trim: float = 0.8,
                        probe_iter: int = 30, all_axes: bool = False) -> Similarity:
    """A start for :func:`icp` without landmarks: centroids and principal axes matched.

    The axes' signs are ambiguous, so each of the four proper sign choices (``all_axes``: the 24 proper
    signed permutations, for shapes whose axis lengths are close or a scan whose missing part reorders
    them) is refined by ``probe_iter`` steps of trimmed ICP and the one with the lowest trimmed RMS
    (relative to its scale) is returned. With ``scale`` the start scale is the ratio of the RMS radii.
    """
    src = _points(source, "source", 3)
    dst = _points(target, "target", 3)
    trim = _check_trim(trim)
    c_src, a_src = _frame(src)
    c_dst, a_dst = _frame(dst)
    size = 1.0
    if scale:
        r_src = float(np.sqrt(((src - c_src) ** 2).sum(1).mean()))
        size = float(np.sqrt(((dst - c_dst) ** 2).sum(1).mean())) / max(r_src, 1e-12)
    choices = _FLIPS
    if all_axes:
        perms = [np.eye(3)[list(p)] for p in ((0, 1, 2), (1, 2, 0), (2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0))]
        choices = [f @ (p * np.linalg.det(p)) for p in perms for f in _FLIPS]
    tree = cKDTree(dst)
    best: tuple[float, Similarity] | None = None
    for flip in choices:
        rot = a_dst @ flip @ a_src.T
        trans = c_dst - size * rot @ c_src
        rot, trans, s, _, _ = _icp_loop(src, tree, dst, rot, trans, size, scale=scale, trim=trim,
                                        max_iter=probe_iter, tol=1e-3)
        cost = _trimmed_rms(_move(src, rot, trans, s), tree, trim) / s
        if best is None or cost < best[0]:
            best = (cost, _similarity(rot, trans, s))
    assert best is not None
    return best[1]


def register_rigid(source: Any, target: Any, *, landmarks: tuple[Any, Any] | None = None,
                   landmark_weights: Any = None, scale: bool = False, trim: float = 0.8, max_iter: int = 200,
                   tol: float = 1e-4, all_axes: bool = False) -> RigidResult:
    """Rigid (or similarity, ``scale=True``) registration of ``source`` onto ``target``.

    The start is :func:`align_landmarks` of ``landmarks = (source_landmarks, target_landmarks)`` when given,
    else :func:`principal_axes_init`; then :func:`icp` with ``trim`` (see there).
    """
    if landmarks is not None:
        if not isinstance(landmarks, (tuple, list)) or len(landmarks) != 2:
            raise ParameterError("landmarks must be a pair (source_landmarks (K, 3), target_landmarks (K, 3)).")
        start = align_landmarks(landmarks[0], landmarks[1], landmark_weights, scale=scale)
    else:
        start = principal_axes_init(source, target, scale=scale, trim=trim, all_axes=all_axes)
    return icp(source, target, init=start, scale=scale, trim=trim, max_iter=max_iter, tol=tol)
