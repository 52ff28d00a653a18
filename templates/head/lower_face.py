"""The face as ONE ray-graph surface: the MRI skin where the image has it, the mandible's
soft-tissue envelope below the image's field of view (which ends ~10 mm under the lower lip).

Every face point is ``o(theta, s) + r(theta, s) d(theta, s)`` on a grid of rays that all start on
the vertical axis x = x_c, y = y_c (the coronal ear-cut plane, so the lateral cut "in front of
the ears" is exactly theta = +-90 deg):

* upper part (s >= 0, cylinder): horizontal rays from (x_c, y_c, z_0 + s), direction
  (sin theta, cos theta, 0) -- forehead, eyes, nose (its underside included) and upper lip;
* lower part (s < 0, fan): rays from C0 = (x_c, y_c, z_0) turned down by alpha = -s / R0 --
  lips, chin, the lower border of the jaw and the submental region; the origin moves back
  along -y as the ray tilts (``fan_back``) so the jaw angle is seen from behind the ramus. z_0
  is set just below the subnasale so the nose is in the cylinder and the chin underside is
  seen from above.

Along each ray, r is the OUTERMOST crossing of

* the MRI skin field (``face.skin_field``, level = the air/tissue valley), sampled trilinearly; and
* the soft-tissue envelope of the mandible: the set where the distance to the mandible's convex
  hull equals a thickness t(theta, s). The hull fills the U of the jaw (a floor under the tongue)
  and bridges the small bony concavities, so the envelope is a smooth submental/jaw-line
  surface. t is interpolated (thin-plate spline in (R0 theta, s), mm) between the tissue depths
  measured on the MRI just above its lower border (so the two surfaces meet) and the De Greef
  2006 means at menton (7.5 mm), pogonion/supramentale (11 mm) and gonion (14 mm) where the MRI
  does not reach them, then clipped to [5, 25] mm.

The two radii are blended with a smoothstep weight of the MRI hit's height above the image's
lower border (0 up to 8 mm above the border, 1 from 18 mm above it; never rising again lower
down a column) and the envelope part is smoothed over the grid (Gaussian, 2 cells). The grid
is a topological disc: the result is one manifold surface with one boundary (forehead cut,
the two ear-cut lines, and the bottom cut 22-28 mm along the skin beyond the lowest mandible
point seen from the fan in each direction, raised where rays find neither MRI skin nor the
envelope).
"""

from __future__ import annotations

import _mesh as M
import numpy as np
import trimesh
from scipy import ndimage
from scipy.interpolate import RBFInterpolator
from scipy.spatial import ConvexHull, cKDTree

R0 = 90.0  # mm per radian of the fan, about the distance from C0 to the chin skin
B_BACK = 25.0  # mm, see fan_back


def fan_back(alpha):
    """How far (mm) the fan's origin has moved back (-y) for a ray turned down by alpha: the
    steeper rays start further back so they see the jaw angle and the submental skin from
    behind the ramus (B_BACK mm at 45 deg, quadratic). Rays stay ordered (a steeper ray starts
    further back and below every shallower one in front of its origin): no fold-over."""
    return B_BACK * (np.asarray(alpha) / (np.pi / 4)) ** 2


def rays(theta: np.ndarray, s: np.ndarray, axis: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions of the rays (theta, s) (arrays of the same shape)."""
    x_c, y_c, z_0 = axis
    alpha = np.clip(-s, 0, None) / R0
    o = np.stack([np.full(theta.shape, x_c), y_c - fan_back(alpha),
                  z_0 + np.clip(s, 0, None)], -1)
    ca = np.cos(alpha)
    d = np.stack([np.sin(theta) * ca, np.cos(theta) * ca, -np.sin(alpha)], -1)
    return o, d


def field_radius(field, aff, level, o, d, r_max=170.0, step=0.25, chunk=4000):
    """Outermost crossing of ``field`` = level along each ray (NaN if none)."""
    inv = np.linalg.inv(aff)
    rs = np.arange(2.0, r_max, step)
    out = np.full(len(o), np.nan)
    for a in range(0, len(o), chunk):
        oo, dd = o[a:a + chunk], d[a:a + chunk]
        p = oo[:, None, :] + rs[None, :, None] * dd[:, None, :]
        ijk = p @ inv[:3, :3].T + inv[:3, 3]
        val = ndimage.map_coordinates(field, ijk.reshape(-1, 3).T, order=1, cval=0.0)
        val = val.reshape(len(oo), len(rs))
        inside = val > level
        has = inside.any(1)
        k = len(rs) - 1 - np.argmax(inside[:, ::-1], axis=1)
        k = np.minimum(k, len(rs) - 2)
        v0 = val[np.arange(len(oo)), k]
        v1 = val[np.arange(len(oo)), k + 1]
        frac = np.clip((v0 - level) / np.maximum(v0 - v1, 1e-9), 0, 1)
        out[a:a + chunk] = np.where(has, rs[k] + frac * step, np.nan)
    return out


class HullDistance:
    """Unsigned distance to the convex hull surface of a point set (dense surface samples +
    k-d tree) and the hull's half-spaces for exact ray entry/exit."""

    def __init__(self, pts: np.ndarray):
        h = ConvexHull(pts)
        m = trimesh.Trimesh(pts[h.vertices], np.searchsorted(h.vertices, h.simplices),
                            process=True)
        trimesh.repair.fix_normals(m)
        self.mesh = m
        samp = M.SurfaceSampler(np.asarray(m.vertices), np.asarray(m.faces), spacing=0.6)
        self.tree = cKDTree(samp.points)
        self.eq = h.equations  # n.x + b <= 0 inside

    def __call__(self, p):
        return self.tree.query(p)[0]

    def exit(self, o, d, chunk=5000):
        """Distance along each ray to where it leaves the hull (NaN if it misses it)."""
        out = np.full(len(o), np.nan)
        n, b = self.eq[:, :3], self.eq[:, 3]
        for a in range(0, len(o), chunk):
            nd = d[a:a + chunk] @ n.T
            num = -(o[a:a + chunk] @ n.T + b)
            with np.errstate(divide="ignore", invalid="ignore"):
                tt = num / nd
            t_out = np.where(nd > 1e-12, tt, np.inf).min(1)
            t_in = np.where(nd < -1e-12, tt, -np.inf).max(1)
            # a ray parallel to a plane and outside it misses
            par_out = ((np.abs(nd) <= 1e-12) & (num < 0)).any(1)
            hit = (t_in <= t_out) & (t_out > 0) & ~par_out
            out[a:a + chunk] = np.where(hit, t_out, np.nan)
        return out


def _march(hd, o, d, t, r0, rs, chunk=4000):
    """Outermost r = r0 + rs[k] with dist(o + r d, hull) <= t (then a 0.03 mm bisection over the
    step after it); NaN where no sample is within t."""
    out = np.full(len(o), np.nan)
    step = rs[1] - rs[0]
    for a in range(0, len(o), chunk):
        oo, dd, tt = o[a:a + chunk], d[a:a + chunk], t[a:a + chunk]
        r = r0[a:a + chunk, None] + rs[None, :]
        p = oo[:, None, :] + r[..., None] * dd[:, None, :]
        ok = hd(p.reshape(-1, 3)).reshape(len(oo), len(rs)) <= tt[:, None]
        has = ok.any(1)
        k = len(rs) - 1 - np.argmax(ok[:, ::-1], axis=1)
        lo = r[np.arange(len(oo)), k]
        hi = lo + step
        for _ in range(6):
            mid = 0.5 * (lo + hi)
            inside = hd(oo + mid[:, None] * dd) <= tt
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        out[a:a + chunk] = np.where(has, 0.5 * (lo + hi), np.nan)
    return out


def envelope_radius(hd: HullDistance, o, d, t):
    """Outermost r with dist(o + r d, hull) <= t. Rays through the hull: a 1 mm march over
    [exit - 5, exit + 45] mm (exit = where the ray leaves the hull); rays that miss it (they
    pass under the jaw's lower border or behind the ramus): a 1.5 mm march over [10, 170] mm.
    NaN where the ray never comes within t of the hull."""
    r_exit = hd.exit(o, d)
    out = np.full(len(o), np.nan)
    hit = np.isfinite(r_exit)
    out[hit] = _march(hd, o[hit], d[hit], t[hit], r_exit[hit] - 5.0, np.arange(0.0, 50.0, 1.0))
    miss = ~hit
    out[miss] = _march(hd, o[miss], d[miss], t[miss], np.full(miss.sum(), 10.0),
                       np.arange(0.0, 160.0, 1.5))
    return out


def _direction_params(p: np.ndarray, axis: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(theta, s) of the fan ray through the points p (points below z_0); the origin depends on
    the ray's tilt, so alpha is found by a few fixed-point steps."""
    x_c, y_c, z_0 = axis
    al = np.zeros(len(p))
    for _ in range(20):
        q = p - np.stack([np.full(len(p), x_c), y_c - fan_back(al), np.full(len(p), z_0)], 1)
        al = np.arctan2(-q[:, 2], np.hypot(q[:, 0], q[:, 1]))
    th = np.arctan2(q[:, 0], q[:, 1])
    return th, -al * R0


def neck_points(P: dict, back_mm: float = 20.0) -> np.ndarray:
    """A MODELLING ASSUMPTION: each gonion moved back_mm posteriorly (-y), added to the
    mandible's hull. The hull then continues behind the jaw angle (parotid region / neck) so
    the envelope wraps the angle laterally instead of ending in a corner there, and the skin
    below and behind the gonion is part of the face."""
    return np.array([P[f"gonion_{t}"] - np.array([0.0, back_mm, 0.0]) for t in ("R", "L")])


def jaw_anchors(mandible_v: np.ndarray, P: dict, table: dict) -> dict:
    """Thickness anchors for the envelope: the table's mandibular points (menton, pogonion,
    supramentale, gonions) and, as MODELLING ASSUMPTIONS of this build (no table value), the
    lower border at 1/4, 1/2, 3/4 of the way menton -> gonion (thickness interpolated linearly
    between the two table values; the lowest mandible vertex within 6 mm, in x-y, of that
    point) and three midline submental points 10, 20, 30 mm behind menton at its height
    (thickness = the menton value)."""
    out = {k: (P[k], table[k][1]) for k in
           ("menton", "pogonion", "supramentale", "gonion_R", "gonion_L")}
    me, t_me = P["menton"], table["menton"][1]
    for tag in ("R", "L"):
        go, t_go = P[f"gonion_{tag}"], table[f"gonion_{tag}"][1]
        for f in (0.25, 0.5, 0.75):
            q = me + f * (go - me)
            near = np.linalg.norm(mandible_v[:, :2] - q[:2], axis=1) < 6.0
            if near.any():
                v = mandible_v[near][np.argmin(mandible_v[near, 2])]
                out[f"lower_border_{tag}_{int(f * 100)}"] = (v, t_me + f * (t_go - t_me))
    for dy in (10.0, 20.0, 30.0):
        out[f"submental_{int(dy)}"] = (me - np.array([0.0, dy, 0.0]), t_me)
    return out


def build(field, aff, level, mandible_v, axis, z_top, z_valid, anchors: dict, hull_extra=None,
          n_theta=361, row_step=0.6, margin_mm=28.0, blend_mm=10.0):
    """Dense face surface (trimesh) and a report. ``anchors``: name -> (bony point, thickness mm)
    for the envelope where the MRI does not reach. ``hull_extra``: points added to the mandible
    for its hull (``neck_points``). ``z_valid``: world z above which the MRI skin
    is real (``face.crop_face``: 4 mm above the image's lower border); the blend starts 4 mm
    higher still (the smoothed field fades out near the border)."""
    x_c, y_c, z_0 = axis
    theta = np.linspace(-np.pi / 2, np.pi / 2, n_theta)
    # bottom cut: per theta, the lowest mandible point seen from C0 plus margin_mm along the skin
    th_v, s_v = _direction_params(mandible_v, axis)
    bins = np.linspace(-np.pi / 2, np.pi / 2, 61)
    idx = np.digitize(th_v, bins) - 1
    cen, low = [], []
    for b in range(len(bins) - 1):
        sel = idx == b
        if sel.sum() >= 3:
            cen.append(0.5 * (bins[b] + bins[b + 1]))
            low.append(s_v[sel].min())
    s_low = np.interp(theta, cen, low)
    rho = np.interp(theta, th_v[np.argsort(th_v)],
                    np.linalg.norm(mandible_v - np.array(axis), axis=1)[np.argsort(th_v)])
    # margin along the skin: margin_mm under the chin, tapering to 22 mm at |theta| >= 60 deg
    # (behind the jaw angle there is only neck)
    marg = 22.0 + (margin_mm - 22.0) * np.clip(1 - np.abs(theta) / np.radians(60), 0, 1)
    s_bot = s_low - marg * R0 / np.maximum(rho + 10.0, 40.0)
    s_bot = ndimage.gaussian_filter1d(s_bot, 6, mode="nearest")
    s_bot = np.maximum(s_bot, -0.47 * np.pi * R0)
    s_top = z_top - z_0
    n_rows = int(np.ceil((s_top - s_bot.min()) / row_step)) + 1
    u = np.linspace(0, 1, n_rows)
    TH = np.broadcast_to(theta[None, :], (n_rows, n_theta))
    S = s_bot[None, :] + u[:, None] * (s_top - s_bot[None, :])
    o, d = rays(TH.ravel(), S.ravel(), axis)
    r_mri = field_radius(field, aff, level, o, d)
    z_hit = o[:, 2] + r_mri * d[:, 2]
    z_ok = z_valid + 4.0
    w = np.clip((np.nan_to_num(z_hit, nan=-1e9) - z_ok) / blend_mm, 0, 1)
    w = w * w * (3 - 2 * w)
    # down each column (rows run upward) the weight may only fall: near the border the MRI skin
    # retreats and would otherwise dent the blend
    W0 = w.reshape(-1, n_theta)[::-1]
    w = np.minimum.accumulate(W0, axis=0)[::-1].ravel()
    need = w < 1
    hd = HullDistance(mandible_v if hull_extra is None else np.vstack([mandible_v, hull_extra]))
    # thickness data: MRI tissue depth over the hull in the band just above the border ...
    band = (w >= 1) & (z_hit < z_ok + blend_mm + 15) & (S.ravel() < 0)
    pb = o[band] + r_mri[band, None] * d[band]
    tb = hd(pb)
    keep = (tb > 0) & (tb < 40)
    pts = np.stack([TH.ravel()[band][keep] * R0, S.ravel()[band][keep]], 1)[::3]
    val = tb[keep][::3]
    # ... and the table values at the bony anchors the MRI does not cover
    used = {}
    for name, (p, t) in anchors.items():
        th_a, s_a = _direction_params(p[None], axis)
        oa, da = rays(th_a, s_a, axis)
        ra = field_radius(field, aff, level, oa, da)
        za = oa[0, 2] + ra[0] * da[0, 2] if np.isfinite(ra[0]) else -1e9
        if za > z_ok:
            continue  # the MRI covers it; the warp matches the table there
        # the anchor's value is put where its ray leaves the hull
        pts = np.vstack([pts, [[th_a[0] * R0, s_a[0]]]])
        val = np.r_[val, t]
        used[name] = t
    tps = RBFInterpolator(pts, val, kernel="thin_plate_spline", smoothing=1.0)
    t_all = np.clip(tps(np.stack([TH.ravel() * R0, S.ravel()], 1)), 5.0, 25.0)
    r_env = np.full(len(o), np.nan)
    r_env[need] = envelope_radius(hd, o[need], d[need], t_all[need])
    # fill rays that miss the envelope (far lateral, below the ear) along theta, per row
    R_env = r_env.reshape(n_rows, n_theta)
    R_mri = r_mri.reshape(n_rows, n_theta)
    W = w.reshape(n_rows, n_theta)
    # rays with neither MRI skin nor envelope (behind the ramus, below the image) are cut off:
    # per column the face starts at the lowest row from which every row up is valid
    valid = (W > 0) | np.isfinite(R_env)
    k_min = n_rows - np.argmin(valid[::-1], axis=0)
    k_min = np.where(valid.all(0), 0, np.minimum(k_min + 1, n_rows - 2))
    for i in range(n_rows):
        row = R_env[i]
        ok = np.isfinite(row)
        if ok.any() and not ok.all():
            R_env[i, ~ok] = np.interp(theta[~ok], theta[ok], row[ok])
        elif not ok.any():
            R_env[i] = np.nan_to_num(R_mri[i], nan=np.nanmean(R_mri))
    R_env = np.where(np.isfinite(R_env), R_env, np.nan_to_num(R_mri))
    R_env = ndimage.gaussian_filter(R_env, 2.0, mode="nearest")
    R = W * np.nan_to_num(R_mri) + (1 - W) * R_env
    # a light smoothing of the blend band only
    Rs = ndimage.gaussian_filter(R, 1.5, mode="nearest")
    band_w = 4 * W * (1 - W)
    R = band_w * Rs + (1 - band_w) * R
    # raise the bottom cut where rays were invalid (only up, smoothly) and resample each column
    s_cut = S[k_min, np.arange(n_theta)]
    s_cut = ndimage.gaussian_filter1d(ndimage.maximum_filter1d(s_cut, 9), 4, mode="nearest")
    s_cut = np.maximum(s_cut, s_bot)
    S2 = s_cut[None, :] + u[:, None] * (s_top - s_cut[None, :])
    R = np.stack([np.interp(S2[:, j], S[:, j], R[:, j]) for j in range(n_theta)], 1)
    o, d = rays(TH.ravel(), S2.ravel(), axis)
    P = (o + R.ravel()[:, None] * d).reshape(n_rows, n_theta, 3)
    ii, jj = np.meshgrid(np.arange(n_rows - 1), np.arange(n_theta - 1), indexing="ij")
    a = (ii * n_theta + jj).ravel()
    b, c, e = a + 1, a + n_theta, a + n_theta + 1
    # rows go up, columns go right (+x): (a, b, e) / (a, e, c) face outward (anterior)
    f = np.concatenate([np.stack([a, b, e], 1), np.stack([a, e, c], 1)])
    m = trimesh.Trimesh(P.reshape(-1, 3), f, process=False)
    c_head = np.array([x_c, y_c, z_0])
    if np.mean(np.einsum("nd,nd->n", m.face_normals, m.triangles_center - c_head)) < 0:
        m.invert()
    m = M.basic_clean(m, keep_largest=True)
    rep = {"axis_mm": [round(float(x), 2) for x in axis], "grid": [int(n_rows), int(n_theta)],
           "envelope_rays": int(need.sum()), "mri_rays": int((w >= 1).sum()),
           "thickness_anchors_mm": used, "thickness_data_points": int(len(val))}
    # per grid point: the MRI weight of the FINAL grid (resampled columns), for region labels
    W2 = np.stack([np.interp(S2[:, j], S[:, j], W[:, j]) for j in range(n_theta)], 1)
    return m, rep, {"theta": TH, "s": S2, "w": W2, "points": P.reshape(-1, 3),
                    "r_mri": R_mri, "r_env": R_env, "r": R, "t": t_all.reshape(n_rows, n_theta)}
