"""Jaw pose correctives of the default head, learned from synthetic jaw movements.

Target: for a jaw transform (rotation about the jaw joint), the face is deformed as-rigidly-as-
possible (ARAP, Sorkine & Alexa 2007, "As-rigid-as-possible surface modeling", SGP) with the skin
that belongs to the jaw (jaw weight >= 0.98: lower lip, chin, jaw line) moved rigidly with the
mandible and the skin of the head (weight <= 0.02) kept in place; the band in between (cheeks,
lip corners) finds its own shape, which keeps edge lengths (no LBS shrinking of the cheeks).

Bone under the skin: ARAP knows edge lengths, not the bone under the skin. At a full opening with
yaw it holds the cheek band over the mandibular angle where it was while the angle swings into it
(plain LBS leaves ~10 mm of tissue there, the ARAP target ~1 mm, and a lateral condylar offset then
takes the rest). So each ARAP target is pulled back towards LBS wherever it would bring a bone
point under the face (paired with its skin as ``anatomy.constraints.cover.SheetCover`` pairs them)
closer to the skin than ``COVER_KEEP`` of the tissue LBS leaves there, smoothly over
``COVER_SPREAD_MM`` of skin (:func:`keep_cover`).

Correctives: with LBS, a face vertex lands at ``((1 - w) I + w G)(x + P f)`` with
``f = vec(R_jaw - I)`` (row-major), so the rest-space offset that reaches the target is
``o = ((1 - w) I + w R)^-1 (target - lbs(x))``; ``P (9, V, 3)`` is the ridge least-squares fit of
``o`` over the samples.
"""

from __future__ import annotations

import numpy as np
from model_rig import anatomical_to_head, graph_laplacian, mesh_edges
from scipy.sparse.linalg import splu
from spaces_fields import bump

# the corrective target may not take away more than 1 - COVER_KEEP of the tissue that LBS leaves
# over a bone point (1.0: never closer than LBS); spread of the pull-back over the skin
COVER_KEEP, COVER_SPREAD_MM, COVER_PASSES = 1.0, 10.0, 4


def euler_xyz(a: np.ndarray) -> np.ndarray:
    """Intrinsic XYZ angles -> matrix R = Rx(a0) Ry(a1) Rz(a2)."""
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


class FaceArap:
    """ARAP deformation of the face mesh with two rigidly driven vertex sets (uniform weights)."""

    def __init__(self, verts: np.ndarray, faces: np.ndarray, w_jaw: np.ndarray, lo: float = 0.02, hi: float = 0.98):
        self.p = verts
        self.edges = mesh_edges(faces)
        n = len(verts)
        self.jaw = np.flatnonzero(w_jaw >= hi)
        self.root = np.flatnonzero(w_jaw <= lo)
        self.fixed = np.r_[self.jaw, self.root]
        self.free = np.setdiff1d(np.arange(n), self.fixed)
        lap = graph_laplacian(n, self.edges).tocsr()
        self.l_fc = lap[self.free][:, self.fixed]
        self.solver = splu(lap[self.free][:, self.free].tocsc())
        i, j = self.edges[:, 0], self.edges[:, 1]
        self.e_rest = verts[i] - verts[j]

    def solve(self, fixed_pos: np.ndarray, init: np.ndarray, iters: int = 8) -> np.ndarray:
        x = init.copy()
        x[self.fixed] = fixed_pos
        i, j = self.edges[:, 0], self.edges[:, 1]
        n = len(x)
        for _ in range(iters):
            e_cur = x[i] - x[j]
            outer = self.e_rest[:, :, None] * e_cur[:, None, :]
            s = np.zeros((n, 3, 3))
            np.add.at(s, i, outer)
            np.add.at(s, j, outer)
            u, _, vt = np.linalg.svd(s)
            r = np.einsum("nji,nkj->nik", vt, u)  # R = V U^T
            bad = np.linalg.det(r) < 0
            if bad.any():
                u[bad, :, 2] *= -1
                r[bad] = np.einsum("nji,nkj->nik", vt[bad], u[bad])
            rot_e = 0.5 * np.einsum("eab,eb->ea", r[i] + r[j], self.e_rest)
            b = np.zeros((n, 3))
            np.add.at(b, i, rot_e)
            np.add.at(b, j, -rot_e)
            rhs = b[self.free] - self.l_fc @ x[self.fixed]
            x[self.free] = self.solver.solve(rhs)
        return x


class BoneCover:
    """Skull + mandible points under the face, paired at rest with the skin over them."""

    def __init__(self, geo) -> None:
        import torch

        from anatomy.constraints.cover import SheetCover

        self.skull, self.mandible = geo.verts["skull"], geo.verts["mandible"]
        fv = geo.verts["face"]
        self.cover = SheetCover(torch.from_numpy(np.concatenate([self.skull, self.mandible])), torch.from_numpy(fv),
                                torch.from_numpy(geo.faces["face"]))
        corners, bary = self.cover.corners.numpy(), self.cover.bary.double().numpy()
        self.skin = (fv[corners] * bary[..., None]).sum(1)  # rest skin points of the pairs
        self.dist = np.linalg.norm(fv[:, None] - self.skin[None], axis=2)  # (Vf, N)

    def heights(self, rotation: np.ndarray, jaw: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(N,) heights (> 0: through the skin) with the mandible rotated about ``jaw``."""
        import torch

        bones = np.concatenate([self.skull, (self.mandible - jaw) @ rotation.T + jaw])
        return self.cover.heights(torch.from_numpy(bones)[None], torch.from_numpy(face)[None])[0].numpy()


def keep_cover(bc: BoneCover, rotation: np.ndarray, jaw: np.ndarray, lbs: np.ndarray,
               target: np.ndarray) -> tuple[np.ndarray, int]:
    """``target`` pulled back towards ``lbs`` where it leaves less than ``COVER_KEEP`` of the LBS
    cover over a bone point (never less than LBS itself), and how many pairs needed it."""
    h_lbs = bc.heights(rotation, jaw, lbs)
    floor = np.where(h_lbs < 0.0, COVER_KEEP * h_lbs, h_lbs)
    touched = 0
    for _ in range(COVER_PASSES):
        h = bc.heights(rotation, jaw, target)
        over = np.flatnonzero(h > floor + 1e-3)
        if not len(over):
            break
        touched = max(touched, len(over))
        beta = np.clip((floor[over] - h_lbs[over]) / np.maximum(h[over] - h_lbs[over], 1e-9), 0.0, 1.0)
        scale = 1.0 - ((1.0 - beta)[None] * bump(bc.dist[:, over], COVER_SPREAD_MM)).max(1)
        target = lbs + scale[:, None] * (target - lbs)
    return target, touched


def sample_jaw_rotations(limits: dict[str, np.ndarray], num_open: int, num_random: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Head-frame intrinsic-XYZ jaw angles: a sweep of pure openings 0..max plus random rotations
    within the (anatomical) limits."""
    lo, hi = limits["jaw_rotation_lower"], limits["jaw_rotation_upper"]
    sweep = np.zeros((num_open, 3))
    sweep[:, 0] = np.linspace(0.0, hi[0], num_open + 1)[1:]
    rand = lo + rng.random((num_random, 3)) * (hi - lo)
    return np.array([anatomical_to_head(a) for a in np.r_[sweep, rand]])


def fit_correctives(geo, w_face: np.ndarray, jaw: np.ndarray, limits: dict[str, np.ndarray],
                    seed: int = 0, max_norm: float = 150.0) -> tuple[np.ndarray, dict]:
    """(9, V_face, 3) corrective basis for the face (skull and mandible rows are zero) + a report."""
    fv = geo.verts["face"]
    arap = FaceArap(fv, geo.faces["face"], w_face)
    bc = BoneCover(geo)
    pulled: list[int] = []
    rng = np.random.default_rng(seed)
    train = sample_jaw_rotations(limits, 10, 20, rng)
    test = sample_jaw_rotations(limits, 3, 8, rng)[3:]
    test = np.r_[test, [anatomical_to_head(np.array([0.5 * limits["jaw_rotation_upper"][0], 0.0, 0.0]))]]

    def one(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r = euler_xyz(angles)
        rigid = (fv - jaw) @ r.T + jaw
        lbs = (1.0 - w_face)[:, None] * fv + w_face[:, None] * rigid
        fixed = np.r_[rigid[arap.jaw], fv[arap.root]]
        target, touched = keep_cover(bc, r, jaw, lbs, arap.solve(fixed, lbs))
        pulled.append(touched)
        a = np.eye(3)[None] + w_face[:, None, None] * (r - np.eye(3))[None]
        off = np.linalg.solve(a, (target - lbs)[:, :, None])[:, :, 0]
        return r, lbs, target, off

    def data(angles: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        return [one(a) for a in angles]

    tr, te = data(train), data(test)
    F = np.array([(r - np.eye(3)).ravel() for r, _, _, _ in tr])
    offs = np.array([off.ravel() for _, _, _, off in tr])

    def fit(lam: float) -> np.ndarray:
        return np.linalg.solve(F.T @ F + lam * np.trace(F.T @ F) * np.eye(9), F.T @ offs)  # (9, 3V_face)

    def errors(samples, pb: np.ndarray) -> dict:
        out: dict[str, list[float]] = {"lbs_mean": [], "lbs_max": [], "corrected_mean": [], "corrected_max": []}
        for r, lbs, target, _ in samples:
            f = (r - np.eye(3)).ravel()
            a = np.eye(3)[None] + w_face[:, None, None] * (r - np.eye(3))[None]
            corr = lbs + np.einsum("nab,nb->na", a, (f @ pb).reshape(-1, 3))
            e0 = np.linalg.norm(lbs - target, axis=1)[arap.free]
            e1 = np.linalg.norm(corr - target, axis=1)[arap.free]
            out["lbs_mean"].append(e0.mean())
            out["lbs_max"].append(e0.max())
            out["corrected_mean"].append(e1.mean())
            out["corrected_max"].append(e1.max())
        return {k: round(float(np.mean(v)) if "mean" in k else float(np.max(v)), 4) for k, v in out.items()}

    # ridge strength: the features of near-planar jaw motion are nearly collinear, so a weak ridge
    # gives a huge, ill-conditioned basis. Take the best held-out fit among the strengths whose
    # basis stays under ``max_norm`` mm (per-vertex Frobenius norm over the 9 rows; keeps float16
    # storage within ~0.05 mm at full opening).
    lams = [float(x) for x in np.logspace(-7, -1, 13)]
    norms = [float(np.sqrt((fit(la).reshape(9, -1, 3) ** 2).sum(axis=(0, 2))).max()) for la in lams]
    scores = [errors(te, fit(la))["corrected_mean"] for la in lams]
    ok = [i for i, nrm in enumerate(norms) if nrm <= max_norm] or [len(lams) - 1]
    lam = lams[min(ok, key=lambda i: scores[i])]
    pb = fit(lam)
    rep: dict = {"method": "ridge least squares of ARAP targets (uniform weights, 8 iterations) over jaw rotations",
           "train_samples": len(train), "test_samples": len(test),
           "fixed_to_jaw_vertices": int(len(arap.jaw)), "fixed_to_head_vertices": int(len(arap.root)),
           "free_vertices": int(len(arap.free)), "errors_over": "the free (unconstrained) band",
           "cover_keep": COVER_KEEP, "max_pairs_pulled_back": int(max(pulled)),
           "ridge_lambda_relative": lam,
           "ridge_scan": {f"{la:.1e}": {"test_mean_mm": sc, "basis_norm_mm": round(nrm, 2)}
                          for la, sc, nrm in zip(lams, scores, norms, strict=True)},
           "train_error_mm": errors(tr, pb), "test_error_mm": errors(te, pb)}
    return pb.reshape(9, -1, 3), rep


__all__ = ["BoneCover", "FaceArap", "euler_xyz", "keep_cover", "fit_correctives", "sample_jaw_rotations"]
