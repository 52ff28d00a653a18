"""Phantoms: label maps with partial volume from closed surfaces and model outputs, CT and MRI from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anatomy
from anatomy.core.errors import ParameterError, ShapeError
from anatomy.core.signed_distance import winding_number
from anatomy.models.articulated import ArticulatedModel
from anatomy.scans import Volume
from anatomy.scans.phantom_ct import HU, METAL_HU, ct_from_labels
from anatomy.scans.phantom_fill import fill_columns
from anatomy.scans.phantom_labels import PhantomTissue, phantom_labels
from anatomy.scans.phantom_mri import mri_from_labels, t1_intensities


def icosphere(levels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere, outward wound (20 * 4**levels faces)."""
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11],
                  [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(levels):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        base, n = len(v), len(f)
        v = np.concatenate([v, 0.5 * (v[unique[:, 0]] + v[unique[:, 1]])])
        ab, bc, ca = base + inverse[:n], base + inverse[n:2 * n], base + inverse[2 * n:]
        f = np.concatenate([np.stack([f[:, 0], ab, ca], 1), np.stack([f[:, 1], bc, ab], 1),
                            np.stack([f[:, 2], ca, bc], 1), np.stack([ab, bc, ca], 1)])
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def mesh_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Exact volume of a closed triangle mesh (divergence theorem, float64)."""
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def box(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned cube [lo, hi]^3, outward wound."""
    v = np.array([[x, y, z] for x in (lo, hi) for y in (lo, hi) for z in (lo, hi)], dtype=np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    if mesh_volume(v, f) < 0:
        f = f[:, ::-1]
    return v, f


SPHERE = icosphere()


@pytest.fixture(scope="module")
def nested() -> dict[str, object]:
    v, f = SPHERE
    return {"skin": (20.0 * v, f), "bone": (10.0 * v + 0.3, f)}


def volume_errors(source: dict[str, object], spacing: float, supersample: int) -> tuple[float, float]:
    v, f = SPHERE
    _, frac = phantom_labels(source, spacing, supersample=supersample)
    np.testing.assert_allclose(sum(frac.values()), 1.0, atol=1e-6)
    bone = float((frac["cortical"] + frac["cancellous"]).sum(dtype=np.float64)) * spacing ** 3
    skin = float(frac["skin"].sum(dtype=np.float64)) * spacing ** 3
    inner, outer = mesh_volume(10.0 * v, f), mesh_volume(20.0 * v, f)
    return bone / inner - 1.0, skin / (outer - inner) - 1.0


@pytest.mark.parametrize("spacing, tolerance", [(1.0, 2e-3), (0.5, 5e-4)])
def test_nested_sphere_volumes_converge_with_supersampling(nested, spacing, tolerance):
    errors = [volume_errors(nested, spacing, n) for n in (1, 2, 3)]
    bone = [abs(e[0]) for e in errors]
    skin = [abs(e[1]) for e in errors]
    assert bone[1] < tolerance and skin[1] < tolerance  # supersample=2 (default)
    assert bone[2] < bone[0] and skin[2] < skin[0]  # partial volume shrinks the error
    # the sphere meshes are within 0.1 % of the analytic volumes 4/3 pi r^3
    assert abs(mesh_volume(*SPHERE) / (4 / 3 * np.pi) - 1) < 3e-3


@pytest.mark.parametrize("spacing", [1.0, 0.5])
def test_cortical_shell_thickness(spacing):
    v, f = SPHERE
    _, frac = phantom_labels({"skin": (20.0 * v, f), "bone": (10.0 * v, f)}, spacing, cortical_mm=1.5)
    shell = mesh_volume(10.0 * v, f) - mesh_volume(8.5 * v, f)
    assert float(frac["cortical"].sum(dtype=np.float64)) * spacing ** 3 == pytest.approx(shell, rel=0.1)


def test_grid_aligned_box_fills_each_sample_once():
    # faces, edges and vertices exactly on sample points: the top-left rule counts each once
    v, f = box(0.0, 10.0)
    mask = fill_columns(v, f, np.array([-3.0, -3.0, -3.0]), 1.0, (17, 17, 17))
    assert mask.sum() == 1000
    _, frac = phantom_labels({"skin": box(0.0, 10.0), "bone": box(2.0, 8.0)}, 1.0, margin=3.0, supersample=1)
    assert frac["skin"].sum() + frac["cortical"].sum() + frac["cancellous"].sum() == pytest.approx(1000.0)


def test_fill_matches_winding_number_on_the_hand():
    out = anatomy.Nimble()(torch.zeros(1, 20, 3), torch.zeros(1, 11))
    labels, _ = phantom_labels(out, 3.0, supersample=1)
    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, s, 3000) for s in labels.shape], axis=1)
    pts = torch.from_numpy(labels.world(ijk.astype(np.float64)))[None]
    inside = np.zeros(len(ijk), dtype=bool)
    for name in ("bones", "muscles", "skin"):
        wn = winding_number(pts, out.tissue(name)[:1].double(), out.faces(name))[0].numpy()
        inside |= wn > 0.5
    assert np.array_equal(labels.data[tuple(ijk.T)] != PhantomTissue.AIR, inside)


def test_hand_phantom_has_bone_inside_skin():
    out = anatomy.Nimble()(torch.zeros(1, 20, 3), torch.zeros(1, 11))
    labels, frac = phantom_labels(out, 2.0)
    assert labels.modality == "labels" and labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.affine[:3, :3], 2.0 * np.eye(3))
    present = set(np.unique(labels.data).tolist())
    assert present == set(PhantomTissue) - {PhantomTissue.TEETH}
    bone = np.argwhere(np.isin(labels.data, [PhantomTissue.CORTICAL, PhantomTissue.CANCELLOUS]))
    pts = torch.from_numpy(labels.world(bone.astype(np.float64)))[None]
    wn = winding_number(pts, out.skin[:1].double(), out.faces("skin"))[0].numpy()
    assert (wn > 0.5).mean() > 0.99
    np.testing.assert_allclose(sum(frac.values()), 1.0, atol=1e-6)


def test_toy_model_smoke():
    model = ArticulatedModel(anatomy.make_toy_model_data())
    labels, _ = phantom_labels(model(torch.zeros(1, 4, 3)), 2.0)
    assert {PhantomTissue.SKIN, PhantomTissue.CORTICAL} <= set(np.unique(labels.data).tolist())


@pytest.fixture(scope="module")
def head_phantom():
    out = anatomy.Sculptor()()
    labels, frac = phantom_labels(out, 2.0)
    return out, labels, frac


def test_head_phantom_labels_and_teeth(head_phantom):
    out, labels, _ = head_phantom
    assert set(np.unique(labels.data).tolist()) == set(PhantomTissue)
    teeth = labels.world(np.argwhere(labels.data == PhantomTissue.TEETH).astype(np.float64))
    top = max(out.landmark(n)[0, 2].item() for n in ("prosthion", "supra_M2_R", "supra_M2_L"))
    bottom = min(out.landmark(n)[0, 2].item() for n in ("infradentale", "sub_M2_R", "sub_M2_L"))
    assert teeth[:, 2].max() <= top + 2.0 and teeth[:, 2].min() >= bottom - 2.0  # between the alveolar planes
    assert teeth[:, 1].min() > out.landmark("sub_M2_R")[0, 1].item() - 12.0
    assert len(labels.meta["filling_sites"]) == 4


def test_open_jaw_keeps_the_lower_teeth():
    out = anatomy.Sculptor()(jaw_pose=torch.tensor([[-0.5, 0.0, 0.0]]))  # about 29 degrees open
    labels, _ = phantom_labels(out, 2.0)
    teeth = labels.world(np.argwhere(labels.data == PhantomTissue.TEETH).astype(np.float64))
    incisors = out.landmark("infradentale")[0].numpy()
    assert (np.linalg.norm(teeth - incisors, axis=1) < 12.0).sum() > 10


def test_ct_values_and_noise_in_flat_regions():
    codes = np.repeat(np.arange(6, dtype=np.uint8), 12)[:, None, None] * np.ones((1, 16, 16), dtype=np.uint8)
    labels = Volume(codes, np.diag([1.0, 1.0, 1.0, 1.0]), "labels")
    ct = ct_from_labels(labels, psf_mm=0.8, noise_hu=10.0, generator=1)
    assert ct.modality == "ct" and ct.data.dtype == np.float32
    clean = ct_from_labels(labels, psf_mm=0.8, noise_hu=0.0)
    for t in PhantomTissue:
        core = np.s_[12 * t + 4:12 * t + 8, 4:12, 4:12]  # 4 voxels from other tissues: blur below 1e-6
        n = ct.data[core].size
        assert abs(ct.data[core].mean() - HU[t]) < 4 * 10.0 / np.sqrt(n)
        np.testing.assert_allclose(clean.data[core], HU[t], atol=1e-2)
    residual = (ct.data - clean.data).astype(np.float64)
    assert residual.std() == pytest.approx(10.0, rel=0.02)


def test_ct_mixes_partial_volume_fractions():
    labels = Volume(np.zeros((3, 3, 3), np.uint8), np.eye(4), "labels")
    half = np.full((3, 3, 3), 0.5, np.float32)
    ct = ct_from_labels(labels, {"muscle": half, "skin": half}, psf_mm=0.0, noise_hu=0.0)
    np.testing.assert_allclose(ct.data, 0.5 * (HU[PhantomTissue.MUSCLE] + HU[PhantomTissue.SKIN]))


def test_ct_metal_fillings_and_streaks(head_phantom):
    _, labels, frac = head_phantom
    plain = ct_from_labels(labels, frac, psf_mm=0.0, noise_hu=0.0)
    metal = ct_from_labels(labels, frac, psf_mm=0.0, noise_hu=0.0, metal=True)
    assert metal.data.max() == pytest.approx(METAL_HU)
    changed = metal.data != plain.data
    assert changed.sum() > 50 * (metal.data == METAL_HU).sum()  # streaks reach well beyond the fillings
    no_teeth = Volume(np.ones((4, 4, 4), np.uint8), np.eye(4), "labels")
    with pytest.raises(ParameterError, match="TEETH"):
        ct_from_labels(no_teeth, metal=True)


def test_mri_contrast_bias_and_rician_noise():
    codes = np.repeat(np.arange(6, dtype=np.uint8), 10)[:, None, None] * np.ones((1, 40, 40), dtype=np.uint8)
    labels = Volume(codes, np.eye(4), "labels")
    clean = mri_from_labels(labels, bias=0.0, noise=0.0)
    level = t1_intensities()
    assert level[PhantomTissue.SKIN] == 1.0 > level[PhantomTissue.CANCELLOUS] > level[PhantomTissue.MUSCLE] > 0.0
    assert level[PhantomTissue.CORTICAL] == level[PhantomTissue.TEETH] == level[PhantomTissue.AIR] == 0.0
    np.testing.assert_allclose(clean.data[15], level[PhantomTissue.SKIN], rtol=1e-6)
    biased = mri_from_labels(labels, bias=0.2, noise=0.0, generator=3)
    ratio = np.log(biased.data[10:20] / clean.data[10:20])
    assert np.abs(ratio).max() <= 0.2 + 1e-5
    assert np.abs(np.diff(ratio, axis=1)).max() < 0.05  # smooth
    sigma = 0.05
    noisy = mri_from_labels(labels, bias=0.0, noise=sigma, generator=4)
    assert noisy.modality == "mri" and noisy.data.min() >= 0.0
    air = noisy.data[:10].astype(np.float64)
    se = sigma * np.sqrt((4 - np.pi) / 2) / np.sqrt(air.size)
    assert abs(air.mean() - sigma * np.sqrt(np.pi / 2)) < 4 * se
    fat = noisy.data[12:18].astype(np.float64)  # high SNR: Rician ~ Gaussian around the signal
    assert fat.std() == pytest.approx(sigma, rel=0.05)


def test_seeded_reproducibility(nested):
    labels, frac = phantom_labels(nested, 2.0)
    a = ct_from_labels(labels, frac, generator=7)
    b = ct_from_labels(labels, frac, generator=np.random.default_rng(7))
    c = ct_from_labels(labels, frac, generator=8)
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)
    m1 = mri_from_labels(labels, frac, generator=5)
    m2 = mri_from_labels(labels, frac, generator=5)
    assert np.array_equal(m1.data, m2.data)
    again, frac2 = phantom_labels(nested, 2.0)
    assert np.array_equal(labels.data, again.data)


def test_bad_input(nested):
    for spacing in (0.0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="spacing"):
            phantom_labels(nested, spacing)
    with pytest.raises(ParameterError, match="GiB"):
        phantom_labels(nested, 0.01)
    with pytest.raises(ParameterError, match="supersample"):
        phantom_labels(nested, 1.0, supersample=0)
    with pytest.raises(ParameterError, match="roles"):
        phantom_labels({"skin": nested["skin"], "brain": nested["bone"]})
    with pytest.raises(ShapeError):
        phantom_labels({"skin": (np.zeros((4, 2)), np.zeros((1, 3), int))})
    out = anatomy.Nimble()(torch.zeros(2, 20, 3))
    with pytest.raises(ParameterError, match="index="):
        phantom_labels(out, 4.0)
    with pytest.raises(ParameterError, match="out of range"):
        phantom_labels(out, 4.0, index=2)
    labels, frac = phantom_labels(out, 4.0, index=1)
    with pytest.raises(ParameterError, match="generator"):
        ct_from_labels(labels, generator="seed")
    with pytest.raises(ParameterError):
        ct_from_labels(labels, noise_hu=-1.0)
    with pytest.raises(ParameterError):
        mri_from_labels(labels, bias=-0.1)
    with pytest.raises(ShapeError):
        ct_from_labels(labels, {"skin": np.zeros((2, 2, 2))})
    with pytest.raises(ParameterError, match="Volume"):
        ct_from_labels(frac)


ANISO = (0.48, 0.6, 1.0)  # mm per voxel axis x, y, z (a clinical head CT is 0.48 x 0.48 x 1)


def test_anisotropic_spacing_volumes_and_affine(nested):
    v, f = SPHERE
    labels, frac = phantom_labels(nested, ANISO, margin=4.0)
    lo = np.minimum((20.0 * v).min(0), (10.0 * v + 0.3).min(0)) - 4.0
    expected = np.diag([*ANISO, 1.0])
    expected[:3, 3] = lo
    np.testing.assert_allclose(labels.affine, expected, rtol=0, atol=1e-12)
    assert labels.spacing == pytest.approx(ANISO) and labels.meta["spacing_mm"] == pytest.approx(list(ANISO))
    voxel = float(np.prod(ANISO))
    bone = float((frac["cortical"] + frac["cancellous"]).sum(dtype=np.float64)) * voxel
    skin = float(frac["skin"].sum(dtype=np.float64)) * voxel
    inner, outer = mesh_volume(10.0 * v, f), mesh_volume(20.0 * v, f)
    assert bone == pytest.approx(inner, rel=1e-3) and skin == pytest.approx(outer - inner, rel=1e-3)
    # the grid covers the surfaces: the far corner voxel lies beyond the largest vertex + margin - one voxel
    far = labels.world(np.array(labels.shape, dtype=np.float64) - 1.0)
    assert np.all(far >= (20.0 * v).max(0) + 4.0 - np.array(ANISO))


def test_anisotropic_grid_aligned_box_is_exact():
    # samples at -2 + (0.5 i, 1 j, 2 k): faces on sample planes, each sample counted once
    spacing = (0.5, 1.0, 2.0)
    _, frac = phantom_labels({"skin": box(0.0, 10.0), "bone": box(2.0, 8.0)}, spacing, margin=2.0, supersample=1)
    inside = frac["skin"] + frac["cortical"] + frac["cancellous"]
    assert float(inside.sum(dtype=np.float64)) * np.prod(spacing) == pytest.approx(1000.0)
    bone = float((frac["cortical"] + frac["cancellous"]).sum(dtype=np.float64)) * np.prod(spacing)
    assert bone == pytest.approx(216.0)


def test_anisotropic_cortical_shell_thickness():
    v, f = SPHERE
    _, frac = phantom_labels({"skin": (20.0 * v, f), "bone": (10.0 * v, f)}, (0.48, 0.48, 1.0), cortical_mm=1.5)
    shell = mesh_volume(10.0 * v, f) - mesh_volume(8.5 * v, f)
    assert float(frac["cortical"].sum(dtype=np.float64)) * 0.48 * 0.48 == pytest.approx(shell, rel=0.1)


@pytest.mark.parametrize("make", ["ct", "mri"])
def test_scanner_blur_uses_the_spacing_of_each_axis(make):
    # one bright voxel: the blurred image's second moment along each axis is the PSF variance in mm^2
    codes = np.zeros((41, 41, 21), np.uint8)
    codes[20, 20, 10] = PhantomTissue.CORTICAL if make == "ct" else PhantomTissue.SKIN
    spacing = (0.5, 0.5, 1.0)
    labels = Volume(codes, np.diag([*spacing, 1.0]), "labels")
    psf = 2.5
    if make == "ct":
        image = ct_from_labels(labels, psf_mm=psf, noise_hu=0.0).data.astype(np.float64) + 1000.0
    else:
        image = mri_from_labels(labels, psf_mm=psf, bias=0.0, noise=0.0).data.astype(np.float64)
    sigma = psf / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    assert image.sum() > 0
    for axis, s in enumerate(spacing):
        profile = image.sum(axis=tuple(a for a in range(3) if a != axis))
        mm = (np.arange(len(profile)) - codes.shape[axis] // 2) * s
        variance = float((profile * mm ** 2).sum() / profile.sum())
        assert variance == pytest.approx(sigma ** 2, rel=0.03)


def test_bad_anisotropic_spacing(nested):
    for spacing in ((1.0, 2.0), (1.0, 1.0, 0.0), (1.0, float("inf"), 1.0), "fine", [[1.0, 1.0, 1.0]]):
        with pytest.raises(ParameterError, match="spacing"):
            phantom_labels(nested, spacing)


def _report() -> None:  # pragma: no cover - figures for the README: python tests/scans/test_phantom.py
    import time

    v, f = SPHERE
    source = {"skin": (20.0 * v, f), "bone": (10.0 * v + 0.3, f)}
    print("nested spheres r = 10 / 20 mm: relative volume error of bone, skin shell")
    for spacing in (1.0, 0.5):
        for n in (1, 2, 3):
            bone, skin = volume_errors(source, spacing, n)
            print(f"  {spacing} mm, supersample {n}: bone {100 * bone:+.3f} %, skin {100 * skin:+.3f} %")
    hand = anatomy.Nimble()(torch.zeros(1, 20, 3), torch.zeros(1, 11))
    head = anatomy.Sculptor()()
    for name, out, spacing in (("hand", hand, 1.0), ("hand", hand, 0.5), ("head", head, 2.0), ("head", head, 1.0)):
        t0 = time.perf_counter()
        labels, frac = phantom_labels(out, spacing)
        t1 = time.perf_counter()
        ct_from_labels(labels, frac, metal=name == "head", generator=0)
        t2 = time.perf_counter()
        mri_from_labels(labels, frac, generator=0)
        t3 = time.perf_counter()
        print(f"{name} {spacing} mm {labels.shape}: labels {t1 - t0:.1f} s, CT {t2 - t1:.1f} s, MRI {t3 - t2:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    _report()
