"""anatomy.scans.segment on synthetic CT/MRI volumes built here (a bone ball in a soft-tissue body in air)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from scipy import ndimage  # noqa: E402

from anatomy.core.errors import ParameterError  # noqa: E402
from anatomy.scans import Volume  # noqa: E402
from anatomy.scans.segment import (  # noqa: E402
    Tissue,
    from_labels,
    segment_ct,
    segment_mri,
    split_mandible,
)


def _grid(shape: tuple[int, int, int], h: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.array(shape) - 1) / 2.0
    g = (np.indices(shape).astype(np.float64) - c[:, None, None, None]) * h
    aff = np.diag([h, h, h, 1.0])
    aff[:3, 3] = -c * h
    return g, aff


def synthetic_ct(
    shape: tuple[int, int, int] = (80, 80, 70),
    h: float = 1.0,
    noise: float = 20.0,
    seed: int = 0,
    extras: bool = False,
    fat: bool = False,
) -> tuple[Volume, dict[str, np.ndarray]]:
    """Air -1000 HU, an ellipsoid body 40 HU, a bone ball 1000 HU, a table slab (200 HU) behind the body
    with a 3 mm air gap; ``extras``: a jaw ball apart (anterior, inferior) and a spine column (posterior,
    inferior), both bone; ``fat``: a fat layer (-100 HU) under a 3 mm skin. Gaussian noise of ``noise`` HU."""
    rng = np.random.default_rng(seed)
    g, aff = _grid(shape, h)
    x, y, z = g
    truth = {
        "body": (x / 30) ** 2 + (y / 30) ** 2 + (z / 28) ** 2 <= 1,
        "bone": x**2 + y**2 + (z - 4) ** 2 <= 13**2,
        "table": (np.abs(x) < 35) & (y > -39) & (y < -33) & (np.abs(z) < 30),
    }
    if extras:
        truth["jaw"] = x**2 + (y - 14) ** 2 + (z + 15) ** 2 <= 6**2
        truth["spine"] = (x**2 + (y + 8) ** 2 <= 4**2) & (z < -14) & (z > -26)
    data = np.full(shape, -1000.0)
    data[truth["body"]] = 40.0
    if fat:
        shell = (x / 27) ** 2 + (y / 27) ** 2 + (z / 25) ** 2
        data[(shell <= 1) & ((x / 22) ** 2 + (y / 22) ** 2 + (z / 20) ** 2 > 1)] = -100.0
    data[truth["table"]] = 200.0
    for name in ("bone", "jaw", "spine"):
        if name in truth:
            data[truth[name]] = 1000.0
    data += rng.normal(0.0, noise, shape)
    return Volume(data.astype(np.float32), aff, "ct"), truth


def _off_by_more_than_one_voxel(found: np.ndarray, truth: np.ndarray) -> int:
    """Voxels where ``found`` and ``truth`` disagree farther than one voxel from truth's boundary."""
    edge = truth ^ ndimage.binary_erosion(truth)
    near = ndimage.binary_dilation(edge, iterations=1)
    return int(((found ^ truth) & ~near).sum())


def _window_8bit(vol: Volume, low: float, high: float) -> Volume:
    return vol.with_data(np.clip((np.asarray(vol.data) - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8))


def test_ct_hu_bone_and_skin_within_one_voxel_table_excluded() -> None:
    vol, truth = synthetic_ct()
    seg = segment_ct(vol)
    assert seg.labels.modality == "labels" and seg.labels.data.dtype == np.uint8
    np.testing.assert_array_equal(seg.labels.affine, vol.affine)
    assert _off_by_more_than_one_voxel(seg.mask("skin"), truth["body"]) == 0
    assert _off_by_more_than_one_voxel(seg.mask("bone"), truth["bone"]) == 0
    assert not (seg.mask("skin") & truth["table"]).any()
    # the histogram thresholds sit between the classes (air -1000, soft 40, bone 1000)
    assert -1000 < seg.thresholds["skin"] < 40 < seg.thresholds["bone"] < 1000
    assert set(np.unique(seg.labels.data)) == {Tissue.AIR, Tissue.SKIN, Tissue.BONE}
    # voxel volumes in mm^3 (1 mm voxels: the voxel counts)
    assert seg.volumes_mm3["bone"] == pytest.approx(float(seg.mask("bone").sum()))
    assert seg.volumes_mm3["body"] == pytest.approx(float(seg.mask("body").sum()))
    assert seg.volumes_mm3["bone"] == pytest.approx(4 / 3 * np.pi * 13**3, rel=0.03)


@pytest.mark.parametrize("window", [(-100.0, 900.0), (0.0, 1000.0)])
def test_ct_windowed_8bit_gives_the_same_segmentation(window: tuple[float, float]) -> None:
    vol, truth = synthetic_ct()
    hu = segment_ct(vol)
    seg = segment_ct(_window_8bit(vol, *window))  # air and fat 0, bone saturated at 255
    assert seg.thresholds["windowed_floor"] == 0.0
    assert _off_by_more_than_one_voxel(seg.mask("skin"), truth["body"]) == 0
    assert _off_by_more_than_one_voxel(seg.mask("bone"), truth["bone"]) == 0
    assert not (seg.mask("skin") & truth["table"]).any()
    differ = seg.labels.data != hu.labels.data
    # the same labels but for noise at the skin: soft tissue (10 +- 5 in the [0, 1000] window) touches 0
    assert differ.sum() <= 0.002 * differ.size
    assert _off_by_more_than_one_voxel(hu.mask("skin"), seg.mask("skin")) == 0
    np.testing.assert_array_equal(seg.mask("bone"), hu.mask("bone"))


def test_ct_8bit_skin_is_a_thin_shell_around_fat_at_zero() -> None:
    vol, truth = synthetic_ct(fat=True, noise=10.0)
    hu = segment_ct(vol)
    seg = segment_ct(_window_8bit(vol, -100.0, 900.0))  # the fat layer reads 0, like air
    assert (np.asarray(_window_8bit(vol, -100.0, 900.0).data)[truth["body"]] == 0).mean() > 0.15
    for s in (hu, seg):
        assert _off_by_more_than_one_voxel(s.mask("skin"), truth["body"]) == 0
        assert _off_by_more_than_one_voxel(s.mask("bone"), truth["bone"]) == 0


def test_ct_keeps_a_separate_anterior_jaw_and_drops_the_spine() -> None:
    vol, truth = synthetic_ct(extras=True)
    seg = segment_ct(vol)
    assert _off_by_more_than_one_voxel(seg.mask("skull"), truth["bone"]) == 0
    assert _off_by_more_than_one_voxel(seg.mask("mandible"), truth["jaw"]) == 0
    assert not (seg.mask("bone") & truth["spine"]).any()
    assert (seg.labels.data[truth["spine"]] == Tissue.SKIN).all()  # the spine's voxels stay inside the body
    assert any("dropped" in n for n in seg.notes)


def _bridged_blobs(h: float = 1.0) -> tuple[Volume, np.ndarray, np.ndarray]:
    """A big upper ball (skull) and a lower ball (jaw) joined by a 2-voxel-wide bridge."""
    g, aff = _grid((50, 50, 70), h)
    x, y, z = g
    upper = x**2 + y**2 + (z - 12) ** 2 <= 14**2
    lower = x**2 + (y - 4) ** 2 + (z + 18) ** 2 <= 10**2
    bridge = (np.abs(x) <= 1) & (np.abs(y - 2) <= 1) & (z > -10) & (z < 0)
    return Volume(upper | lower | bridge, aff, "labels"), upper, lower


def test_split_mandible_separates_bridged_blobs() -> None:
    vol, upper, lower = _bridged_blobs()
    assert ndimage.label(vol.data, structure=np.ones((3, 3, 3)))[1] == 1
    skull, jaw, radius = split_mandible(vol)
    assert radius in (1.0, 2.0)  # a 3-voxel-wide bridge cannot survive a 2-voxel opening
    assert not (skull & jaw).any()
    np.testing.assert_array_equal(skull | jaw, np.asarray(vol.data))
    assert (jaw[lower]).all() and (skull[upper]).all()
    # the bridge is shared between the two: nothing of it further than its middle goes to the wrong side
    assert jaw.sum() - lower.sum() < 40 and skull.sum() - upper.sum() < 40


def test_split_mandible_mirrored_affine_still_picks_the_inferior_piece() -> None:
    vol, upper, lower = _bridged_blobs()
    flip = np.diag([1.0, 1.0, -1.0, 1.0]) @ vol.affine  # voxel z now points inferior
    skull, jaw, _ = split_mandible(Volume(vol.data, flip, "labels"))
    assert jaw[upper].all() and skull[lower].all()


def test_split_mandible_no_split_returns_the_mask() -> None:
    g, aff = _grid((30, 30, 30), 1.0)
    ball = (g**2).sum(axis=0) <= 10**2
    skull, jaw, radius = split_mandible(Volume(ball, aff), max_radius_mm=3.0)
    assert np.isnan(radius) and not jaw.any()
    np.testing.assert_array_equal(skull, ball)


def test_segment_ct_split_jaw_on_joined_jaw() -> None:
    vol, upper, lower = _bridged_blobs()
    g, _ = _grid(vol.shape, 1.0)
    body = ((g / np.array([22.0, 22.0, 33.0])[:, None, None, None]) ** 2).sum(axis=0) <= 1
    data = np.where(body, 40.0, -1000.0)
    data[np.asarray(vol.data)] = 1000.0
    data += np.random.default_rng(2).normal(0.0, 20.0, data.shape)
    seg = segment_ct(Volume(data, vol.affine, "ct"), split_jaw=True, jaw_method="opening")
    assert _off_by_more_than_one_voxel(seg.mask("mandible"), lower) < 40
    assert seg.mask("skull")[upper].all()
    assert any("split" in n for n in seg.notes)


def test_ct_without_bone_names_the_thresholds() -> None:
    g, aff = _grid((40, 40, 40), 1.0)
    data = np.where((g**2).sum(axis=0) <= 15**2, 40.0, -1000.0)
    with pytest.raises(ParameterError, match=r"no bone found.*bone threshold"):
        segment_ct(Volume(data, aff, "ct"), skin_threshold=-500.0, bone_threshold=300.0)
    with pytest.raises(ParameterError, match="must lie above the skin threshold"):
        segment_ct(Volume(data, aff, "ct"), skin_threshold=100.0, bone_threshold=0.0)
    with pytest.raises(ParameterError, match="nearly constant"):
        segment_ct(Volume(np.zeros((10, 10, 10)), aff, "ct"))
    with pytest.raises(ParameterError, match="histogram_thresholds"):
        segment_ct(Volume(data, aff, "ct"))  # two noise-free levels: the lower one reads as padding
    with pytest.raises(ParameterError, match="label map"):
        segment_ct(Volume(np.zeros((10, 10, 10), dtype=np.uint8), aff, "labels"))


def test_ct_padding_outside_the_field_of_view_is_ignored() -> None:
    vol, truth = synthetic_ct()
    data = np.array(vol.data)
    g, _ = _grid(vol.shape, 1.0)
    data[g[0] ** 2 + g[1] ** 2 > 39.5**2] = -3024.0  # a round field of view, padded
    seg = segment_ct(vol.with_data(data))
    assert seg.thresholds["range_padding"] == -3024.0
    assert _off_by_more_than_one_voxel(seg.mask("bone"), truth["bone"]) == 0
    assert _off_by_more_than_one_voxel(seg.mask("skin"), truth["body"]) == 0


def test_slice_wise_fill_closes_an_airway_open_at_both_ends() -> None:
    g, aff = _grid((50, 50, 50), 1.0)
    x, y, z = g
    body = (x**2 + y**2 <= 18**2) & (np.abs(z) < 20)
    airway = x**2 + y**2 <= 4**2  # a tube through the whole body along z (superior)
    data = np.where(body & ~airway, 40.0, -1000.0)
    data[(x - 10) ** 2 + y**2 + z**2 <= 7**2] = 1000.0
    data += np.random.default_rng(3).normal(0.0, 20.0, data.shape)
    seg = segment_ct(Volume(data, aff, "ct"))
    assert seg.mask("body")[body].all()


def test_mri_skin_by_otsu() -> None:
    rng = np.random.default_rng(1)
    g, aff = _grid((60, 60, 60), 1.0)
    body = ((g / np.array([24.0, 22.0, 26.0])[:, None, None, None]) ** 2).sum(axis=0) <= 1
    dark = (g**2).sum(axis=0) <= 8**2  # a dark structure inside (bone / CSF on T1): filled
    data = np.where(body & ~dark, 600.0, 5.0) + rng.normal(0.0, 30.0, body.shape)
    seg = segment_mri(Volume(np.abs(data), aff, "mri"))
    assert _off_by_more_than_one_voxel(seg.mask("skin"), body) == 0
    assert set(np.unique(seg.labels.data)) == {Tissue.AIR, Tissue.SKIN}
    assert 5 < seg.thresholds["skin"] < 600


def test_from_labels_maps_codes() -> None:
    g, aff = _grid((20, 20, 20), 0.5)
    lab = np.zeros((20, 20, 20), dtype=np.int16)
    lab[2:18, 2:18, 2:18] = 5  # soft tissue of some other scheme
    lab[6:14, 6:14, 8:14] = 2
    lab[6:14, 6:14, 4:7] = 9
    seg = from_labels(Volume(lab, aff, "labels"), {2: "bone", 9: Tissue.MANDIBLE})
    assert (seg.labels.data[lab == 5] == Tissue.SKIN).all()
    assert (seg.labels.data[lab == 2] == Tissue.BONE).all()
    assert (seg.labels.data[lab == 9] == Tissue.MANDIBLE).all()
    assert seg.volumes_mm3["mandible"] == pytest.approx((lab == 9).sum() * 0.125)
    assert seg.volumes_mm3["body"] == pytest.approx((lab != 0).sum() * 0.125)
    with pytest.raises(ParameterError, match="unknown tissue"):
        from_labels(Volume(lab, aff, "labels"), {2: "cartilage"})
    with pytest.raises(ParameterError, match="integer label map"):
        from_labels(Volume(lab.astype(np.float32), aff), {})
    with pytest.raises(ParameterError, match="unknown tissue"):
        seg.mask("brain")


def test_ct_keeps_a_thin_flap_beyond_the_opened_body() -> None:
    """An ear-like plate (2 mm thick, 15 mm out) vanishes in the opening that finds the body, and lies
    outside the opened body's box; the segmentation, which runs inside the body's box, keeps it."""
    vol, truth = synthetic_ct(shape=(110, 80, 70))
    g, _ = _grid(vol.shape, 1.0)
    x, y, z = g
    flap = (x > 25) & (x < 45) & (np.abs(y) < 1.0) & (np.abs(z) < 8)
    data = np.asarray(vol.data).copy()
    data[flap & ~truth["body"]] = 40.0
    seg = segment_ct(Volume(data, vol.affine, "ct"))
    outside = flap & ~truth["body"] & (x < 44)  # the last voxel touches the box edge only through noise
    assert seg.mask("body")[outside].mean() > 0.95
    assert not seg.mask("body")[truth["table"]].any()
    assert seg.labels.shape == vol.shape
    np.testing.assert_array_equal(seg.labels.affine, vol.affine)
