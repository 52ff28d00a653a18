"""Where to start a hand fit without keypoints: the palm and each finger chain found by search on the bones.

A posed hand fitted from its rest pose by local optimisation ends with fingers on the wrong finger, so
:func:`search_hand_start` finds the pose first by a discrete search on the scanned bone surface, with the bones
moved rigidly (each bone by its joint's rotation about its rest joint centre, the mean shape):

1. **Palm** (carpal and the four fixed metacarpals, one rigid piece): trimmed ICP of the rest palm onto all the
   bone points from the 60 rotations of the icosahedral group (every rotation is within about 40° of one), the
   palm centred on the bones; the lowest trimmed RMS wins, the next best clearly different palms are kept.
2. **Fingers and thumb**, each chain independently from its base on the palm, one level at a time (the
   proximal bone's two angles, then the middle's, then the distal's flexion): every angle on a grid inside the
   model's joint limits, scored by the truncated distance of the chain's bones posed so far to the bone points;
   a beam of the best few partial chains goes on to the next level.
3. Each kept palm with its chains is scored by the two-way mean distance (chamfer) of all bones. The palm
   alone is easily pulled along the fingers (its ICP sees the phalanges too) and then no finger reaches its own
   finger, so the best is improved by a hill climb: the palm turned by ``climb_deg`` (coarse, then fine) about
   each of its own axes, the fingers searched again from each turned palm; a lower chamfer is kept until none
   is. The lowest wins. When a palm turned by more than 30° scores within ``margin`` of it, or the best is far
   from the bones (``poor_mm``), the start is ``ambiguous``.

:func:`estimate_hand_keypoints` gives the 21 keypoints of that start (a few mm from the true ones), for code
that wants keypoints; :func:`~anatomy.registration.fit_model_to_surfaces` uses the start itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..core.alignment import Similarity
from ..core.errors import ParameterError, ShapeError
from ..core.kinematics import Kinematics, KinematicTree, forward_kinematics
from ..core.rotations import matrix_to_axis_angle
from ..io.official_nimble import BONE_TO_JOINT, KEYPOINT_JOINTS
from .rigid import icp

__all__ = ["AmbiguousHandStartWarning", "HandStart", "estimate_hand_keypoints", "search_hand_start"]

_PALM = ("carpal", "met2", "met3", "met4", "met5")
_CHAINS = (("met1", "pro1", "dis1"), *((f"pro{i}", f"int{i}", f"dis{i}") for i in range(2, 6)))
_FREE_RANGE = 0.2  # rad: an angle with a smaller range (the +-5 deg twists) stays at zero in the search
_STEP = 0.2  # rad: about the grid spacing of the searched angles
_TRUNCATE_MM = 6.0  # the finger score counts a vertex at most this far from the bones
_POINTS_PER_BONE = 40
_PALM_POINTS, _TARGET_POINTS = 250, 3000
_CLIMB_GAIN_MM = 0.02  # a turned palm is taken only when it lowers the chamfer by more than this
_CLIMB_STEPS = 5  # turned palms taken at most per step size


class AmbiguousHandStartWarning(UserWarning):
    """The bones fit two clearly different hand starts about equally well (a symmetric or partial scan):
    the fit may put fingers on the wrong finger; pass the hand's keypoints (``landmarks=``)."""


@dataclass
class HandStart:
    """What :func:`search_hand_start` found.

    ``similarity``: the rest model's palm onto the bones (rigid, scale 1); ``pose``: ``(20, 3)`` float64
    axis-angle rows of the layer (row 0 zero); ``keypoints``: the 21 keypoints of that start, world mm;
    ``chamfer_mm``: two-way mean distance between the start's bones and the bone points; ``runner_up_mm``:
    the same for the best start whose palm is turned more than 30° from this one (inf when none);
    ``ambiguous``: whether the runner-up is within the margin or the best is poor; ``others``: the runner-up
    starts, best first.
    """

    similarity: Similarity
    pose: torch.Tensor
    keypoints: dict[str, np.ndarray]
    chamfer_mm: float
    runner_up_mm: float
    ambiguous: bool
    others: list[HandStart]


class _RigidHand:
    """The layer's bones moved rigidly: per bone a rotation about its rest joint, chained from the carpal."""

    def __init__(self, layer: Any) -> None:
        names = list(getattr(layer, "bone_names", ()))
        if names[:1] != ["carpal"] or any(n not in names for c in _CHAINS for n in c) or not layer.has_joint_limits:
            raise ParameterError("search_hand_start needs a Nimble layer with the NIMBLE bones and joint limits "
                                 "(the embedded default hand has them); pass the keypoints instead.")
        self.names = names
        with torch.no_grad():
            rest = layer()
        dt = torch.float64
        layout = rest._layout("bones")
        if layout.part_ids is None:
            raise ParameterError("search_hand_start needs the bones' part ids (which bone each vertex is on).")
        row_of = torch.tensor([names.index(n) for n in layout.part_names])
        self.rows = row_of[layout.part_ids.cpu()]
        self.verts = rest.tissue("bones")[0].detach().cpu().to(dt)
        self.joints = rest.joints[0].detach().cpu().to(dt)
        self.tree = KinematicTree.from_parents(list(layer.tree.parents))
        self.bone_joint = list(BONE_TO_JOINT)
        self.keypoint_joints = list(KEYPOINT_JOINTS)
        self.keypoint_names = list(layer.keypoint_names)
        self.limits = layer.joint_limits().to(dtype=dt)

    def sample(self, bones: list[int], count: int, gen: torch.Generator) -> torch.Tensor:
        """Up to ``count`` vertex ids of each bone in ``bones``, concatenated."""
        ids = []
        for b in bones:
            own = torch.nonzero(self.rows == b).reshape(-1)
            ids.append(own[torch.randperm(len(own), generator=gen)[:count]])
        return torch.cat(ids)

    def kinematics(self, angles: torch.Tensor) -> Kinematics:
        """``angles (B, 20, 3)`` joint angles -> the posed tree in the model's rest frame (no global motion)."""
        rot = torch.eye(3, dtype=angles.dtype).repeat(angles.shape[0], self.tree.num_joints, 1, 1)
        rot[:, self.bone_joint] = self.limits.rotations(angles)
        return forward_kinematics(rot, self.joints.expand(angles.shape[0], -1, -1), self.tree)

    def pose(self, angles: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Vertices ``ids`` of the bones posed by ``angles (B, 20, 3)``: ``(B, n, 3)`` in the rest frame."""
        moves = self.kinematics(angles).transforms[:, self.bone_joint][:, self.rows[ids]]  # (B, n, 3, 4)
        return (moves[..., :3] @ self.verts[ids][None, :, :, None])[..., 0] + moves[..., 3]

    def keypoints(self, angles: torch.Tensor) -> torch.Tensor:
        """``(21, 3)`` keypoints of one pose ``angles (1, 20, 3)`` in the rest frame."""
        return self.kinematics(angles).positions[0, self.keypoint_joints]


def _move(points: torch.Tensor, sim: Similarity) -> torch.Tensor:
    return sim.scale * points @ sim.rotation.T + sim.translation


def _palm_candidates(hand: _RigidHand, target: np.ndarray, gen: torch.Generator, keep: int) -> list[Any]:
    """The best ``keep`` palm placements (ICP results), clearly different from each other."""
    palm_ids = hand.sample([hand.names.index(n) for n in _PALM], _PALM_POINTS // len(_PALM), gen)
    palm = hand.verts[palm_ids].numpy()
    coarse = target[:: max(1, len(target) // 1500)]
    centre = palm.mean(0)
    results = []
    for rot in Rotation.create_group("I").as_matrix():
        trans = coarse.mean(0) - rot @ centre
        init = Similarity(torch.from_numpy(rot), torch.from_numpy(trans), torch.tensor(1.0, dtype=torch.float64))
        results.append(icp(palm, coarse, init=init, trim=0.9, max_iter=20, tol=0.05))
    results.sort(key=lambda r: r.rms)
    chosen: list[Any] = []
    for r in results[: 2 * keep]:
        fine = icp(palm, target, init=r.transform, trim=0.9, max_iter=40, tol=1e-2)
        if all(not _same_palm(fine.transform, c.transform) for c in chosen):
            chosen.append(fine)
    chosen.sort(key=lambda r: r.rms)
    return chosen[:keep]


def _turn_deg(a: Similarity, b: Similarity) -> float:
    rel = (a.rotation.T @ b.rotation).to(torch.float64)
    return math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(rel)) - 1.0) / 2.0))))


def _same_palm(a: Similarity, b: Similarity) -> bool:
    return _turn_deg(a, b) < 15.0 and float((a.translation - b.translation).norm()) < 8.0


def _grid(lo: float, hi: float) -> torch.Tensor:
    if hi - lo < _FREE_RANGE:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(lo, hi, max(3, math.ceil((hi - lo) / _STEP) + 1), dtype=torch.float64)


def _diverse(values: torch.Tensor, score: np.ndarray, count: int) -> torch.Tensor:
    """Indices of up to ``count`` rows of ``values (n, m)`` (angles), best ``score`` first, each more than 1.5
    grid steps from those already taken in some angle: the beam keeps different ways of bending a finger
    rather than one way and its small variants."""
    taken: list[int] = []
    for i in np.argsort(score, kind="stable").tolist():
        if all(float((values[i] - values[j]).abs().max()) > 1.5 * _STEP for j in taken):
            taken.append(i)
            if len(taken) == count:
                break
    return torch.tensor(taken)


def _search_chain(hand: _RigidHand, chain: tuple[str, ...], angles: torch.Tensor, tree: cKDTree, sim: Similarity,
                  gen: torch.Generator, beam: int) -> torch.Tensor:
    """``(k, 20, 3)``: ``angles (20, 3)`` with the chain's joints set by a beam search, one level at a time;
    different candidates, best first."""
    lower, upper = hand.limits.lower, hand.limits.upper
    states = angles[None].clone()
    scored: list[int] = []
    for name in chain:
        b = hand.names.index(name)
        scored.append(b)
        axes = [_grid(float(lower[b, k]), float(upper[b, k])) for k in range(3)]
        values = torch.cartesian_prod(*axes).reshape(-1, 3)
        cand = states.repeat_interleave(len(values), 0)
        cand[:, b] = values.repeat(len(states), 1)
        ids = hand.sample(scored, _POINTS_PER_BONE, gen)
        moved = _move(hand.pose(cand, ids), sim)
        dist, _ = tree.query(moved.reshape(-1, 3).numpy())
        score = np.minimum(dist, _TRUNCATE_MM).reshape(len(cand), -1).mean(1)
        states = cand[_diverse(cand[:, scored].reshape(len(cand), -1), score, beam)]
    return states


def _combine(hand: _RigidHand, options: list[torch.Tensor], sim: Similarity, target: np.ndarray, tree: cKDTree,
             ids: torch.Tensor, pairs: bool, sweeps: int = 3) -> torch.Tensor:
    """``(20, 3)``: one of each chain's candidate angles ``options[c] (k, 20, 3)``, chosen by coordinate descent
    on the two-way chamfer of the whole hand (target points left without a model finger count against it, so
    two fingers on one scanned finger lose): each chain alone, then (``pairs``) each pair of neighbouring chains
    together (two crossed fingers swap only together)."""
    rows = [torch.tensor([hand.names.index(n) for n in chain]) for chain in _CHAINS]
    pick = [0] * len(rows)

    def angles_of(choice: list[int]) -> torch.Tensor:
        angles = torch.zeros(len(hand.names), 3, dtype=torch.float64)
        for chain_rows, cand, i in zip(rows, options, choice):
            angles[chain_rows] = cand[i, chain_rows]
        return angles

    moves = [(c,) for c in range(len(rows))] + ([(c, c + 1) for c in range(len(rows) - 1)] if pairs else [])
    for _ in range(sweeps):
        changed = False
        for move in moves:
            ranges = [range(len(options[c])) for c in move]
            choices = [list(pick) for _ in range(math.prod(len(r) for r in ranges))]
            for choice, combo in zip(choices, np.ndindex(*(len(r) for r in ranges))):
                for c, i in zip(move, combo):
                    choice[c] = int(i)
            moved = _move(hand.pose(torch.stack([angles_of(c) for c in choices]), ids), sim).numpy()
            best = choices[int(np.argmin([_chamfer(m, target, tree) for m in moved]))]
            changed |= best != pick
            pick = best
        if not changed:
            break
    return angles_of(pick)


def _fit_hand(hand: _RigidHand, sim: Similarity, target: np.ndarray, tree: cKDTree, ids: torch.Tensor,
              gen: torch.Generator, beam: int, rounds: int, pairs: bool) -> tuple[float, Similarity, torch.Tensor]:
    """``rounds`` finger searches from the palm placement ``sim``, each followed by a similarity ICP of the whole
    posed hand (which places the palm better than the palm alone, and gives the scale); the chamfer (mm), the
    similarity and the angles ``(20, 3)`` of the last."""
    for _ in range(rounds):
        rest = torch.zeros(len(hand.names), 3, dtype=torch.float64)
        options = [_search_chain(hand, chain, rest, tree, sim, gen, beam) for chain in _CHAINS]
        angles = _combine(hand, options, sim, target, tree, ids, pairs)
        posed = hand.pose(angles[None], ids)[0]
        sim = icp(posed.numpy(), target, init=sim, scale=True, trim=0.9, max_iter=40, tol=1e-2).transform
    moved = _move(hand.pose(angles[None], ids)[0], sim)
    return _chamfer(moved.numpy(), target, tree), sim, angles


def _turned(sim: Similarity, centre: torch.Tensor, deg: float) -> list[Similarity]:
    """``sim`` turned by ``+-deg`` about each of its own (the rest palm's) axes through the world point
    ``centre``: six placements."""
    out = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            vec = torch.zeros(3, dtype=torch.float64)
            vec[axis] = sign * math.radians(deg)
            turn = sim.rotation @ torch.from_numpy(Rotation.from_rotvec(vec.numpy()).as_matrix()) @ sim.rotation.T
            out.append(Similarity(turn @ sim.rotation, turn @ (sim.translation - centre) + centre, sim.scale))
    return out


def _climb(hand: _RigidHand, start: tuple[float, Similarity, torch.Tensor], target: np.ndarray, tree: cKDTree,
           ids: torch.Tensor, palm_ids: torch.Tensor, gen: torch.Generator, beam: int,
           degrees: tuple[float, ...]) -> tuple[float, Similarity, torch.Tensor]:
    """The start ``(chamfer, similarity, angles)`` improved by turning its palm (see the module text): at each
    step of ``degrees`` the best of the six turned palms (each with one finger search) replaces the start while
    it lowers the chamfer (at most ``_CLIMB_STEPS`` times)."""
    best = start
    for deg in degrees:
        for _ in range(_CLIMB_STEPS):
            centre = _move(hand.verts[palm_ids], best[1]).mean(0)
            tries = [_fit_hand(hand, sim, target, tree, ids, gen, beam, 1, False) for sim in
                     _turned(best[1], centre, deg)]
            better = min(tries, key=lambda s: s[0])
            if better[0] >= best[0] - _CLIMB_GAIN_MM:
                break
            best = better
    return best


def _chamfer(moved: np.ndarray, target: np.ndarray, tree: cKDTree) -> float:
    there, _ = tree.query(moved)
    back, _ = cKDTree(moved).query(target)
    return 0.5 * (float(there.mean()) + float(back.mean()))


def search_hand_start(layer: Any, bones: Any, *, palms: int = 6, beam: int = 6, rounds: int = 3,
                      climb_deg: tuple[float, ...] = (25.0, 12.0), margin: float = 0.25, poor_mm: float = 4.0,
                      seed: int = 0) -> HandStart:
    """Search the palm placement and finger angles of the hand layer ``layer`` on the scanned bone points.

    Args:
        layer: a ``Nimble`` layer (its rest pose and joint limits; mean shape).
        bones: ``(N, 3)`` points on all the hand's bone surfaces, world mm (numpy or torch).
        palms: palm placements tried with one finger search each; the best two get ``rounds - 1`` more.
        beam: partial finger chains kept per level.
        rounds: finger searches of the best palms, each followed by a similarity ICP of the whole posed hand.
        climb_deg: (degrees) the steps of the best start's palm hill climb, coarse to fine; ``()`` skips it.
        margin: (mm) a start with a palm turned more than 30° whose chamfer is within this of the best makes
            the result ``ambiguous``.
        poor_mm: a best start farther than this (two-way mean distance, mm) from the bones is ``ambiguous`` too
            (the points are not a hand's bones, or a part of them).
        seed: of the point subsampling.
    """
    pts = np.asarray(bones.detach().cpu().numpy() if isinstance(bones, torch.Tensor) else bones, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 100:
        raise ShapeError(f"bones must be (N, 3) points with N >= 100, got {pts.shape}.")
    if not np.isfinite(pts).all():
        raise ParameterError("bones hold NaN or inf coordinates; drop them first.")
    if any(not 0.0 < float(d) < 90.0 for d in climb_deg):
        raise ParameterError(f"climb_deg must hold angles in (0, 90) degrees, got {tuple(climb_deg)}; () skips "
                             f"the climb.")
    gen = torch.Generator().manual_seed(seed)
    hand = _RigidHand(layer)
    target = pts[torch.randperm(len(pts), generator=gen)[:_TARGET_POINTS].numpy()]
    tree = cKDTree(target)
    all_ids = hand.sample(list(range(len(hand.names))), 2 * _POINTS_PER_BONE, gen)
    starts = [_fit_hand(hand, palm.transform, target, tree, all_ids, gen, beam, 1, False) for palm in
              _palm_candidates(hand, target, gen, palms)]
    starts.sort(key=lambda s: s[0])
    if climb_deg:
        palm_ids = hand.sample([hand.names.index(n) for n in _PALM], _POINTS_PER_BONE, gen)
        starts[0] = _climb(hand, starts[0], target, tree, all_ids, palm_ids, gen, beam, tuple(climb_deg))
    # the best two palms go on for the remaining rounds, the fingers also moved in neighbouring pairs
    starts = [_fit_hand(hand, sim, target, tree, all_ids, gen, beam, rounds - 1, True) if i < 2 and rounds > 1 else
              (chamfer, sim, angles) for i, (chamfer, sim, angles) in enumerate(starts)]
    starts.sort(key=lambda s: s[0])
    found = [_as_start(hand, *s) for s in starts]
    best, rest = found[0], found[1:]
    turned = [s for s in rest if _turn_deg(s.similarity, best.similarity) > 30.0]
    best.others = rest
    best.runner_up_mm = turned[0].chamfer_mm if turned else math.inf
    best.ambiguous = best.runner_up_mm < best.chamfer_mm + margin or best.chamfer_mm > poor_mm
    return best


def _as_start(hand: _RigidHand, chamfer: float, sim: Similarity, angles: torch.Tensor) -> HandStart:
    rot = hand.limits.rotations(angles[None])[0]
    pose = matrix_to_axis_angle(rot)
    pose[0] = 0.0
    keys = _move(hand.keypoints(angles[None]), sim).numpy()
    return HandStart(sim, pose, dict(zip(hand.keypoint_names, keys)), chamfer, math.inf, False, [])


def estimate_hand_keypoints(layer: Any, bones: Any, **options: Any) -> dict[str, np.ndarray]:
    """The 21 hand keypoints (``layer.keypoint_names`` -> ``(3,)`` world mm) of the start that
    :func:`search_hand_start` finds on the bone points ``bones (N, 3)``; ``options`` go to it."""
    return search_hand_start(layer, bones, **options).keypoints
