"""Shape space of the default head: a joint skull + mandible + face PCA of synthetic heads.

Each synthetic head is the template plus a sum of smooth displacement fields ("factors"), each
scaled by a normal draw whose SD comes from published craniometric / cephalometric statistics or
from De Greef et al. (2006) soft-tissue-thickness SDs. The face follows the bone plus the thickness
change along the skin normal: a cranial field (smooth in space: size, vault, zygomatic breadth,
facial height) is evaluated at the skin points; a mandibular field is CARRIED to the skin from the
mandible points nearest to it (``spaces_fields.smooth_carry``), since evaluating a local mandibular
field (gonial swing, symphysis height, bigonial breadth) 15-30 mm out at the skin moves the
submental skin up to ~10 mm relative to the bone over it; the two are blended by the face's jaw
weight. Then :func:`fit_under_cover` shrinks the skin's motion RELATIVE to its bone where the
shape distribution (all factors, with their correlations) would bring a bone point under the face
closer than ``COVER_MARGIN_MM`` to its skin at ``COVER_SD`` SDs, in the cover left over by the trait
space at its worst corner (a surgical change of the same head). The samples are reduced by PCA
and the leading components normalised so that a coefficient of 1 is one SD. No scan data is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from spaces_fields import bump, shepard, small_rotation_x, smooth_carry, smoothstep, unit

# --- craniometric SDs (mm or deg), approximate sex-pooled values --------------------------------
# Howells WW (1973) "Cranial variation in man", Papers Peabody Mus 67 (worldwide series; within-
# population SDs): GOL ~6.5, XCB ~5.5, BBH ~5.5, ZYB ~5.5, NPH ~4.5 mm. Martin R & Saller K (1957)
# "Lehrbuch der Anthropologie": bigonial breadth SD ~5.5 mm. Gonial angle 120-125 deg, SD ~6 deg
# (Jensen E, Palling M 1954, Am J Orthod 40:120). SNA/SNB 82/80 deg, SD ~3.5 deg (Riolo ML et al.
# 1974, "An atlas of craniofacial growth", Univ. Michigan), i.e. ~5 mm of sagittal position of the
# jaws at ~80 mm from sella; ANB SD ~2 deg (~2.5 mm at pogonion). Symphysis height (infradentale-
# menton) ~32 mm, SD ~3 mm (Martin & Saller 1957). Overall size: CV of cranial length ~3.5 %.
SD_SIZE_FRACTION = 0.035
SD_GOL, SD_XCB, SD_BBH, SD_ZYB, SD_NPH = 6.5, 5.5, 5.5, 5.5, 4.5
SD_GOGO, SD_GONIAL_DEG, SD_JAWS_SAGITTAL, SD_ANB_MM, SD_SYMPHYSIS = 5.5, 6.0, 5.0, 2.5, 3.0
# Nasal tip protrusion (subnasale-pronasale) ~20 mm, SD ~2 mm (Farkas LG 1994, "Anthropometry of
# the head and face", 2nd ed., Raven Press).
SD_NOSE = 2.0
# Soft-tissue thickness SDs (mm) per measuring point, approximate sex-pooled SDs after De Greef S
# et al. (2006) Forensic Sci Int 159S:S126 (ultrasound, 967 adults): thin over the forehead and
# orbits (1-1.5), ~2 over lips and chin, 3-5 over the cheeks / masseter. Transcribed for this
# build (re-check against the printed table).
DE_GREEF_SD = {
    "supraglabella": 1.0, "glabella": 1.1, "nasion": 1.3, "rhinion": 0.8, "subspinale": 2.0,
    "prosthion": 2.2, "infradentale": 2.0, "supramentale": 1.9, "pogonion": 2.3, "menton": 2.2,
    "frontal_eminence_R": 1.0, "frontal_eminence_L": 1.0, "supraorbital_R": 1.2, "supraorbital_L": 1.2,
    "orbitale_R": 1.6, "orbitale_L": 1.6, "lateral_orbit_R": 1.8, "lateral_orbit_L": 1.8,
    "zygion_R": 2.4, "zygion_L": 2.4, "supra_M2_R": 4.5, "supra_M2_L": 4.5, "sub_M2_R": 4.8,
    "sub_M2_L": 4.8, "gonion_R": 4.0, "gonion_L": 4.0,
}
# Thickness at different sites is strongly but not fully correlated (body-mass driven); we split
# each regional SD into a shared part (r = 0.7) and an independent regional part.
THICKNESS_SHARED_R = 0.7
THICKNESS_MAX_CV = 0.2
THICKNESS_REGIONS = {
    "forehead_orbits": ["supraglabella", "glabella", "nasion", "frontal_eminence_R", "frontal_eminence_L",
                        "supraorbital_R", "supraorbital_L", "lateral_orbit_R", "lateral_orbit_L"],
    "midface_cheeks": ["orbitale_R", "orbitale_L", "zygion_R", "zygion_L", "supra_M2_R", "supra_M2_L", "rhinion"],
    "lips": ["subspinale", "prosthion", "infradentale"],
    "chin_jaw": ["supramentale", "pogonion", "menton", "sub_M2_R", "sub_M2_L", "gonion_R", "gonion_L"],
}
# Every bony size factor shares a general size factor (r = 0.5 with each dimension).
SIZE_R = 0.5
NUM_SAMPLES = 4000
# Cover: every bone point under the face keeps COVER_MARGIN_MM of tissue over it up to COVER_SD
# standard deviations of the shape distribution (see fit_under_cover).
COVER_SD, COVER_MARGIN_MM = 4.0, 1.0
FOLLOW_BONE = True
COVER_CARRY_SIGMA, COVER_SPREAD_MM, COVER_ITERATIONS = 3.0, 10.0, 8


@dataclass
class Factor:
    name: str
    description: str
    field: np.ndarray  # (V, 3) displacement for one SD
    shared_with_size: bool = False
    thickness: bool = False
    soft: bool = False  # a soft-tissue-only field (nose, thickness): the skin moves on its own


def _stack_points(geo) -> tuple[np.ndarray, dict[str, slice]]:
    sl, pts, start = {}, [], 0
    for t in ("skull", "mandible", "face"):
        n = len(geo.verts[t])
        sl[t] = slice(start, start + n)
        pts.append(geo.verts[t])
        start += n
    return np.concatenate(pts), sl


def _blend(geo, sl, skull_f, mand_f, w_face) -> np.ndarray:
    """Assemble a (V, 3) field from a cranial field and a mandibular field (callables on points);
    the face takes (1 - w) cranial + w mandibular."""
    out = np.zeros((geo.num_vertices, 3))
    out[sl["skull"]] = skull_f(geo.verts["skull"])
    out[sl["mandible"]] = mand_f(geo.verts["mandible"])
    fv = geo.verts["face"]
    mand = smooth_carry(fv, geo.verts["mandible"], out[sl["mandible"]], COVER_CARRY_SIGMA) if FOLLOW_BONE \
        else mand_f(fv)
    out[sl["face"]] = (1.0 - w_face)[:, None] * skull_f(fv) + w_face[:, None] * mand
    return out


def seal_lips(geo, face_field: np.ndarray, w_face: np.ndarray, falloff: float = 6.0) -> np.ndarray:
    """Make the two lip sheets move together along the mouth slit (a shape change keeps the lips
    closed): each boundary pair gets its mean displacement, and the correction fades out over
    ``falloff`` mm on its own sheet (upper: w < 0.5, lower: w >= 0.5)."""
    fv = face_field.copy()
    pts = geo.verts["face"]
    up, lo = geo.lip_upper, geo.lip_lower
    j = np.argmin(np.linalg.norm(pts[lo][:, None] - pts[up][None], axis=2), axis=1)
    mean = 0.5 * (face_field[lo] + face_field[up[j]])
    for ids, sheet in ((lo, w_face >= 0.5), (up[j], w_face < 0.5)):
        corr = mean - face_field[ids]
        anchors = pts[ids]
        d = np.linalg.norm(pts[:, None] - anchors[None], axis=2)
        k = np.exp(-0.5 * (d / 2.0) ** 2) + 1e-300
        interp = (k @ corr) / k.sum(1, keepdims=True)
        fade = np.exp(-0.5 * (d.min(1) / falloff) ** 2) * sheet
        fv += fade[:, None] * interp
        fv[ids] = mean
    return fv


def shape_factors(geo, w_face: np.ndarray, face_normals: np.ndarray, jaw: np.ndarray) -> list[Factor]:
    P = geo.point
    allp, sl = _stack_points(geo)
    zero = lambda p: np.zeros_like(p)  # noqa: E731
    facs: list[Factor] = []

    def add(name, desc, skull_f, mand_f, shared=False):
        facs.append(Factor(name, desc, _blend(geo, sl, skull_f, mand_f, w_face), shared))

    # overall size: isotropic about the origin (mid-porion)
    facs.append(Factor("size", "isotropic scale of the whole head", SD_SIZE_FRACTION * allp))
    brain = lambda p: smoothstep(p[:, 2], -10.0, 20.0)  # noqa: E731  braincase above the FH
    gol = np.linalg.norm(P("glabella") - P("opisthocranion"))
    xcb = np.linalg.norm(P("euryon_R") - P("euryon_L"))
    bbh = P("vertex")[2] - jaw[2]
    zyb = np.linalg.norm(P("zygion_R") - P("zygion_L"))
    add("cranial_length", "braincase longer (GOL)",
        lambda p: (SD_GOL / gol) * brain(p)[:, None] * p * [0, 1, 0], zero, True)
    add("cranial_breadth", "braincase broader (XCB)",
        lambda p: (SD_XCB / xcb) * brain(p)[:, None] * p * [1, 0, 0], zero, True)
    add("cranial_height", "vault higher (basion-bregma height)",
        lambda p: (SD_BBH / bbh) * smoothstep(p[:, 2], -5.0, 15.0)[:, None] * p * [0, 0, 1], zero, True)
    zz = P("zygion_R")[2]
    add("bizygomatic_breadth", "midface broader (ZYB)",
        lambda p: (SD_ZYB / zyb) * (np.exp(-((p[:, 2] - zz) / 22.0) ** 2)
                                     * smoothstep(p[:, 1], -10.0, 10.0))[:, None] * p * [1, 0, 0], zero, True)
    # facial height: the lower face (maxillary alveolus + mandible) rotates down about the TMJ axis so
    # that prosthion drops by SD_NPH; the midface stretches between nasion and the occlusal level
    n_z, pr = P("nasion")[2], P("prosthion")
    reach = np.linalg.norm((pr - jaw)[1:])
    ang = float(-SD_NPH / reach)
    lower = lambda p: smoothstep(p[:, 2], n_z, pr[2])  # noqa: E731
    add("facial_height", "longer face: midface taller, lower face rotated down about the TMJ (NPH)",
        lambda p: lower(p)[:, None] * small_rotation_x(p, jaw, ang),
        lambda p: small_rotation_x(p, jaw, ang), True)
    # sagittal position of both jaws (SNA/SNB together): maxilla below the nose forward, mandible
    # stretched forward from the condyles so the incisors keep their relation
    ans, inc_y = P("anterior_nasal_spine"), P("infradentale")[1]
    front = lambda p: smoothstep(p[:, 1], 20.0, 50.0)  # noqa: E731
    add("jaw_prognathism", "both jaws further forward (SNA/SNB)",
        lambda p: SD_JAWS_SAGITTAL * (smoothstep(p[:, 2], n_z, ans[2]) * front(p))[:, None] * [0, 1, 0],
        lambda p: SD_JAWS_SAGITTAL / (inc_y - jaw[1]) * (p - jaw) * [0, 1, 0], True)
    pog = P("pogonion")
    add("mandible_sagittal", "mandible longer relative to the maxilla (ANB / Wits)", zero,
        lambda p: SD_ANB_MM / (pog[1] - jaw[1]) * (p - jaw) * [0, 1, 0], True)
    gogo = np.linalg.norm(P("gonion_R") - P("gonion_L"))
    go = 0.5 * (P("gonion_R") + P("gonion_L"))
    add("bigonial_breadth", "mandible broader at the angles (go-go)", zero,
        lambda p: (SD_GOGO / gogo) * smoothstep(p[:, 2], jaw[2], go[2])[:, None] * (p - [jaw[0], 0, 0]) * [1, 0, 0],
        True)
    # gonial angle: the ramus swings about the condyles (angle region back/forth), body fixed
    rad = np.deg2rad(SD_GONIAL_DEG)
    add("gonial_angle", "gonial angle more obtuse (ramus swung forward about the condyles)", zero,
        lambda p: (smoothstep(p[:, 2], jaw[2], go[2]) * smoothstep(p[:, 1], go[1] + 30.0, go[1] + 5.0))[:, None]
        * small_rotation_x(p, jaw, rad), False)
    idz, mez = P("infradentale")[2], P("menton")[2]
    add("symphysis_height", "chin taller (infradentale-menton)", zero,
        lambda p: -(SD_SYMPHYSIS / (idz - mez)) * (np.clip(idz - p[:, 2], 0.0, None)
                                                    * smoothstep(p[:, 1], go[1] + 20.0, go[1] + 40.0))[:, None]
        * [0, 0, 1], True)
    # soft tissue only: nasal tip protrusion
    out = np.zeros((geo.num_vertices, 3))
    if geo.has("pronasale"):
        prn = P("pronasale")
        fv = geo.verts["face"]
        out[sl["face"], 1] = SD_NOSE * np.exp(-(np.linalg.norm(fv - prn, axis=1) / 12.0) ** 2)
    facs.append(Factor("nose_projection", "nasal tip more prominent", out, soft=True))
    # soft-tissue thickness: regional SDs interpolated over the skin, along the skin normal, capped
    # at THICKNESS_MAX_CV of the local thickness (distance to the nearest bone) so that even a 3 SD
    # thinning leaves tissue over the bone (De Greef 2006 SD/mean ratios are ~0.15-0.3)
    fv = geo.verts["face"]
    local = cKDTree(np.concatenate([geo.verts["skull"], geo.verts["mandible"]])).query(fv)[0]
    for region, names in THICKNESS_REGIONS.items():
        names = [n for n in names if geo.has(n)]
        anchors = np.array([P(n) for n in names])
        sds = np.array([DE_GREEF_SD[n] for n in names])
        near = np.exp(-0.5 * (np.min(np.linalg.norm(fv[:, None] - anchors[None], axis=2), axis=1) / 18.0) ** 2)
        t = np.minimum(near * shepard(fv, anchors, sds[:, None], 15.0)[:, 0], THICKNESS_MAX_CV * local)
        f = np.zeros((geo.num_vertices, 3))
        f[sl["face"]] = t[:, None] * face_normals
        facs.append(Factor(f"thickness_{region}", f"soft tissue thicker: {region}", f, thickness=True,
                           soft=True))
    for fac in facs:
        fac.field[sl["face"]] = seal_lips(geo, fac.field[sl["face"]], w_face)
    return facs


@dataclass
class CoverPairs:
    """Bone points under the face, each paired once at rest with the skin point over it (the
    pairing of ``anatomy.constraints.cover.SheetCover``, so the build caps what the package measures)."""

    bone: np.ndarray  # (N,) stack indices of the bone points
    corners: np.ndarray  # (N, 3) face-local vertex ids of the skin triangle over each
    bary: np.ndarray  # (N, 3) barycentric weights of the skin point
    normal: np.ndarray  # (N, 3) rest skin-patch normal (outwards)
    cover: np.ndarray  # (N,) rest tissue depth over the point along that normal, mm (> 0)
    skin: np.ndarray  # (N, 3) rest skin points


def cover_pairs(geo) -> CoverPairs:
    import torch

    from anatomy.constraints.cover import SheetCover

    bones = torch.from_numpy(np.concatenate([geo.verts["skull"], geo.verts["mandible"]]))
    sheet = torch.from_numpy(geo.verts["face"])
    cov = SheetCover(bones, sheet, torch.from_numpy(geo.faces["face"]))
    pts = bones[None].clone().requires_grad_(True)
    cov.heights(pts, sheet[None]).sum().backward()  # height is linear in its point: the gradient is n
    assert pts.grad is not None
    ids = cov.ids.numpy()
    corners, bary = cov.corners.numpy(), cov.bary.double().numpy()
    return CoverPairs(ids, corners, bary, pts.grad[0].numpy()[ids], -cov.rest_height.double().numpy(),
                      (geo.verts["face"][corners] * bary[..., None]).sum(1))


def carried_by_bone(geo, field: np.ndarray, w_face: np.ndarray) -> np.ndarray:
    """``(Vf, 3, k)``: the displacement each skin vertex gets from the bone under it (``field``
    ``(V, 3, k)``): the nearest skull points' mean displacement blended with the nearest mandible
    points' by the face's jaw weight, as the face is skinned."""
    _, sl = _stack_points(geo)
    fv, k = geo.verts["face"], field.shape[2]
    out = []
    for t in ("skull", "mandible"):
        d = field[sl[t]].reshape(len(geo.verts[t]), -1)
        out.append(smooth_carry(fv, geo.verts[t], d, COVER_CARRY_SIGMA).reshape(len(fv), 3, k))
    return (1.0 - w_face)[:, None, None] * out[0] + w_face[:, None, None] * out[1]


def pair_height_sd(pairs: CoverPairs, fields: np.ndarray, cov: np.ndarray, face_start: int) -> np.ndarray:
    """``(N,)`` SD (mm) of each pair's height change, rest-linear, for latent factors with
    covariance ``cov`` and one-SD ``fields (V, 3, k)``."""
    skin = (fields[face_start + pairs.corners] * pairs.bary[..., None, None]).sum(1)  # (N, 3, k)
    dh = np.einsum("nck,nc->nk", fields[pairs.bone] - skin, pairs.normal)
    return np.sqrt(np.maximum(np.einsum("nk,kl,nl->n", dh, cov, dh), 0.0))


def fit_under_cover(facs: list[Factor], geo, w_face: np.ndarray, others: np.ndarray | None = None) -> dict:
    """Keep every bone point under its skin over the shape distribution (in place).

    The skin's displacement in a factor is split into what the bone under it carries
    (:func:`carried_by_bone`) and the rest, the change of the tissue over it (thickness fields,
    and bony fields evaluated at the skin that move it relative to its bone: the gonial-angle
    swing, the symphysis). For each bone point under the face (paired with its skin as
    ``anatomy.constraints.cover.SheetCover`` pairs them), the SD of its height change over the
    correlated factors (all of them at once, so overlapping thickness regions and the shared
    body/size factors count) must stay within ``(cover - COVER_MARGIN_MM) / COVER_SD``; where it
    does not, the skin's relative displacement is shrunk by the needed factor, spread smoothly over
    ``COVER_SPREAD_MM`` of skin, and the lips are re-sealed; repeated until every pair fits (where
    ``others`` leave no room, the skin there keeps only what its bone carries). The bone, and the
    skin far from thin cover, keep their published SDs.

    ``others`` ``(m, V, 3)``: unit fields of a space sampled with coefficients in [-1, 1] on the
    same head (the trait space); the cover they can take at their worst corner, ``sum_k |dh_k|``
    per pair, is kept free of shape."""
    pairs = cover_pairs(geo)
    _, sl = _stack_points(geo)
    cov = factor_covariance(facs)
    fields = np.stack([f.field for f in facs], axis=-1)  # (V, 3, k)
    carried = carried_by_bone(geo, fields, w_face)
    fv = geo.verts["face"]
    room = pairs.cover - COVER_MARGIN_MM
    if others is not None:
        o = np.moveaxis(others, 0, -1)  # (V, 3, m)
        skin = (o[sl["face"].start + pairs.corners] * pairs.bary[..., None, None]).sum(1)
        room = room - np.abs(np.einsum("nck,nc->nk", o[pairs.bone] - skin, pairs.normal)).sum(1)
    allowed = np.maximum(room, 0.0) / COVER_SD
    sd0 = pair_height_sd(pairs, fields, cov, sl["face"].start)
    alpha = np.ones(len(fv))
    for _ in range(COVER_ITERATIONS):
        sd = pair_height_sd(pairs, fields, cov, sl["face"].start)
        need = 1.0 - np.clip(allowed / np.maximum(sd, 1e-12), 0.0, 1.0)  # shrink wanted per pair
        bad = np.flatnonzero(need > 1e-3)
        if not len(bad):
            break
        d = np.linalg.norm(fv[:, None] - pairs.skin[bad][None], axis=2)
        step = 1.0 - (need[bad][None] * bump(d, COVER_SPREAD_MM)).max(1)
        alpha *= step
        face = fields[sl["face"]]
        face = carried + step[:, None, None] * (face - carried)
        for j in range(face.shape[2]):
            face[:, :, j] = seal_lips(geo, face[:, :, j], w_face)
        fields[sl["face"]] = face
    sd = pair_height_sd(pairs, fields, cov, sl["face"].start)
    for j, f in enumerate(facs):
        f.field = fields[:, :, j].copy()
    worst = int(np.argmax(COVER_SD * sd - room))
    return {"pairs": int(len(pairs.bone)), "sd_multiple": COVER_SD, "margin_mm": COVER_MARGIN_MM,
            "room_after_trait": others is not None,
            "pairs_over_before": int((COVER_SD * sd0 > room + 1e-6).sum()),
            "pairs_over_after": int((COVER_SD * sd > room + 0.01).sum()),
            "pairs_without_room": int((room <= 0.0).sum()),
            "worst_after": {"bone": int(pairs.bone[worst]), "cover_mm": round(float(pairs.cover[worst]), 2),
                            "room_mm": round(float(room[worst]), 2), "sd_mm": round(float(sd[worst]), 3)},
            "skin_vertices_shrunk": int((alpha < 0.99).sum()), "min_relative_scale": round(float(alpha.min()), 3)}


def factor_covariance(facs: list[Factor]) -> np.ndarray:
    """Latent covariance: bony factors share a size factor (r = SIZE_R), thickness factors a body
    factor (r = THICKNESS_SHARED_R); unit variances."""
    k = len(facs)
    load = np.zeros((k, 2))
    for i, f in enumerate(facs):
        if f.name == "size":
            load[i, 0] = 1.0
        elif f.shared_with_size:
            load[i, 0] = SIZE_R
        elif f.thickness:
            load[i, 1] = THICKNESS_SHARED_R
    c = load @ load.T
    np.fill_diagonal(c, 1.0)
    return c


def build_shape_space(facs: list[Factor], num_components: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Sample NUM_SAMPLES heads, PCA, return the (K, V, 3) normalised basis (one SD per unit)."""
    rng = np.random.default_rng(seed)
    cov = factor_covariance(facs)
    z = rng.multivariate_normal(np.zeros(len(facs)), cov, size=NUM_SAMPLES)
    F = np.stack([f.field.ravel() for f in facs])  # (k, 3V)
    q, r = np.linalg.qr(F.T)  # F^T = q r, samples D = z F = (z r^T) q^T
    zc = z - z.mean(0)
    _, s, wt = np.linalg.svd(zc @ r.T, full_matrices=False)
    dirs = (q @ wt.T).T  # (k, 3V), orthonormal
    sd = s / np.sqrt(NUM_SAMPLES - 1)
    var = sd**2
    basis = (sd[:num_components, None] * dirs[:num_components])
    for i in range(num_components):  # sign: positive projection on the size field
        if basis[i] @ F[0] < 0:
            basis[i] = -basis[i]
    cosine = (basis @ F.T) / (np.linalg.norm(basis, axis=1, keepdims=True) * np.linalg.norm(F, axis=1))
    info = {
        "samples": NUM_SAMPLES, "seed": seed,
        "factors": [{"name": f.name, "description": f.description,
                     "rms_mm": round(float(np.sqrt((f.field**2).sum(1).mean())), 3)} for f in facs],
        "explained_variance": [round(float(x), 4) for x in np.cumsum(var)[:num_components] / var.sum()],
        "component_rms_mm": [round(float(np.sqrt((b.reshape(-1, 3) ** 2).sum(1).mean())), 3) for b in basis],
        "main_factor": [facs[int(np.argmax(np.abs(row)))].name for row in cosine],
    }
    return basis.reshape(num_components, -1, 3), info


__all__ = ["Factor", "CoverPairs", "shape_factors", "fit_under_cover", "cover_pairs", "build_shape_space",
           "factor_covariance", "unit"]
