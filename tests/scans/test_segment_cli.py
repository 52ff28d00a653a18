"""`anatomy segment` and the template jaw split, on phantom CT/MRI of the default head (ground truth known)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
pytest.importorskip("nibabel")

from scipy.spatial import cKDTree  # noqa: E402

import anatomy  # noqa: E402
from anatomy.cli import main  # noqa: E402
from anatomy.core.errors import ParameterError, ShapeError  # noqa: E402
from anatomy.core.nearest import point_to_surface_distance  # noqa: E402
from anatomy.io import read_mesh  # noqa: E402
from anatomy.scans import (  # noqa: E402
    Tissue,
    Volume,
    ct_from_labels,
    from_phantom,
    mri_from_labels,
    phantom_labels,
    read_nifti,
    segment_ct,
    segment_scan,
    split_mandible_by_template,
    write_nifti,
)

SPACING = 2.0


@pytest.fixture(scope="module")
def head() -> dict[str, object]:
    """A sampled head with an open jaw, its phantom label map, CT and MRI at 2 mm."""
    model = anatomy.Sculptor()
    kwargs = model.sample(1, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(**kwargs)
    labels, fractions = phantom_labels(out, spacing=SPACING)
    meshes = {n: (out.tissue(n)[0].double().numpy(), out.faces(n).numpy()) for n in out.tissue_names}
    return {"labels": labels, "ct": ct_from_labels(labels, fractions, generator=1, metal=True),
            "mri": mri_from_labels(labels, fractions, generator=2), "meshes": meshes,
            "jaw_angle": float(kwargs["jaw_pose"].norm())}


def _truth_mandible(volume: Volume, mask: np.ndarray, meshes: dict) -> np.ndarray:
    """Bone voxels nearer the true mandible surface than the true skull surface."""
    vox = np.argwhere(mask)
    pts = volume.world(vox.astype(np.float64))
    d_skull, _ = cKDTree(meshes["skull"][0]).query(pts)
    d_jaw, _ = cKDTree(meshes["mandible"][0]).query(pts)
    out = np.zeros_like(mask)
    out[tuple(vox[d_jaw < d_skull].T)] = True
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _mean_distance(points: np.ndarray, mesh: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean distance (mm) from points to a triangle surface."""
    verts, faces = (torch.as_tensor(np.asarray(a)) for a in mesh)
    return float(point_to_surface_distance(torch.as_tensor(points, dtype=torch.float64), verts.double(), faces,
                                           squared=False, exact=True))




def test_template_split_recovers_the_mandible_of_a_ct(head: dict) -> None:
    assert head["jaw_angle"] > 0.02  # the sampled jaw is open a little: the template must follow it
    seg = segment_ct(head["ct"], split_jaw=False)
    bone = seg.mask_volume("bone")
    skull, jaw, facts = split_mandible_by_template(bone)
    mask = seg.mask("bone")
    assert not (skull & jaw).any() and np.array_equal(skull | jaw, mask)
    truth = _truth_mandible(head["ct"], mask, head["meshes"])
    assert _dice(jaw, truth) > 0.95
    assert facts["rms_mm"] < SPACING and 0.9 < facts["scale"] < 1.1


def test_opening_split_is_the_fallback_and_template_is_the_default(head: dict) -> None:
    template = segment_ct(head["ct"], split_jaw=True)
    assert any("template" in n for n in template.notes)
    truth = _truth_mandible(head["ct"], template.mask("bone"), head["meshes"])
    assert _dice(template.mask("mandible"), truth) > 0.95
    opening = segment_ct(head["ct"], split_jaw=True, jaw_method="opening")
    assert any("jaw:" in n for n in opening.notes)
    with pytest.raises(ParameterError, match="jaw split method"):
        segment_ct(head["ct"], split_jaw=True, jaw_method="atlas")


def test_from_phantom_maps_codes_and_splits_the_jaw(head: dict) -> None:
    labels = head["labels"]
    seg = from_phantom(labels, split_jaw=True)
    codes = np.asarray(labels.data)
    assert np.array_equal(seg.mask("body"), codes != 0)
    assert np.array_equal(seg.mask("bone"), np.isin(codes, [3, 4, 5]))  # cortical, cancellous, teeth
    truth = _truth_mandible(labels, seg.mask("bone"), head["meshes"])
    assert _dice(seg.mask("mandible"), truth) > 0.95
    assert set(np.unique(seg.labels.data)) <= {int(t) for t in Tissue}
    with pytest.raises(ParameterError, match="not phantom codes"):
        from_phantom(labels.with_data(np.where(codes == 5, 9, codes).astype(np.uint8)))
    with pytest.raises(ParameterError, match="label_mapping"):
        segment_scan(labels, "ct")


def test_template_split_refuses_bad_input() -> None:
    empty = Volume(np.zeros((8, 8, 8), dtype=bool), np.eye(4), "labels")
    with pytest.raises(ShapeError, match="voxels"):
        split_mandible_by_template(empty)
    with pytest.raises(ParameterError, match="trim"):
        split_mandible_by_template(empty, trim=0.1)
    with pytest.raises(ParameterError, match="Volume"):
        split_mandible_by_template(np.zeros((8, 8, 8)))  # type: ignore[arg-type]


def _check_outputs(folder: Path, meshes: dict, names: tuple[str, ...], offset: np.ndarray | None = None) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["surfaces"]) == set(names)
    for name in names:
        mesh = read_mesh(folder / f"{name}.ply")
        assert summary["surfaces"][name]["vertices"] == len(mesh.vertices)
        verts = mesh.vertices if offset is None else mesh.vertices + offset
        found = (verts, mesh.faces)
        # within a voxel: true -> extracted surface, and for the solid mandible also extracted -> true (the
        # skull's surface also holds the inner table of the 7 mm vault around the cranial cavity, which the
        # solid default skull mesh lacks; the skin holds the cap that closes the face sheet)
        if name == "skull":
            assert _mean_distance(meshes["skull"][0], found) < SPACING
        elif name == "mandible":
            assert _mean_distance(meshes["mandible"][0], found) < SPACING
            assert _mean_distance(verts, meshes["mandible"]) < SPACING
        else:
            assert _mean_distance(meshes["face"][0], found) < SPACING
    assert set(summary["files"]) == {p.name for p in folder.iterdir()}
    return summary


def test_segment_command_on_a_phantom_ct(head: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    scan = write_nifti(head["ct"], tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--modality", "ct", "--out", str(out), "--vertices", "4000"]) == 0
    summary = _check_outputs(out, head["meshes"], ("skin", "skull", "mandible"))
    labels = read_nifti(out / "labels.nii.gz")
    np.testing.assert_allclose(labels.affine, head["ct"].affine, atol=1e-6)
    assert labels.shape == head["ct"].shape
    assert summary["surfaces"]["mandible"]["vertices"] <= 4400
    assert summary["volumes_mm3"]["mandible"] == pytest.approx(
        float((labels.data == Tissue.MANDIBLE).sum()) * SPACING**3)
    assert summary["spacing_mm"] == [SPACING] * 3 and summary["seconds"]["total"] > 0
    assert (out / "segmentation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert scan.exists()  # the input is untouched
    # a non-empty --out is refused and nothing in it changes
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["segment", str(scan), "--modality", "ct", "--out", str(out)]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_segment_command_on_a_label_map_and_an_mri(head: dict, tmp_path: Path) -> None:
    labels = write_nifti(head["labels"], tmp_path / "labels_in.nii.gz")
    out = tmp_path / "from_labels"
    assert main(["segment", str(labels), "--modality", "ct", "--labels", "phantom", "--out", str(out),
                 "--vertices", "4000", "--no-picture"]) == 0
    _check_outputs(out, head["meshes"], ("skin", "skull", "mandible"))
    mri = write_nifti(head["mri"], tmp_path / "mri.nii.gz")
    out = tmp_path / "mri"
    assert main(["segment", str(mri), "--modality", "mri", "--out", str(out), "--vertices", "4000",
                 "--no-picture"]) == 0
    _check_outputs(out, head["meshes"], ("skin",))


def test_segment_command_on_a_windowed_png_stack(head: dict, tmp_path: Path) -> None:
    from PIL import Image

    ct = head["ct"]
    # an 8-bit export with a wide window: air at 0, fat just above, cortical bone and teeth saturated at 255
    window = np.clip((np.asarray(ct.data) + 200.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
    stack = tmp_path / "stack"
    stack.mkdir()
    for k in range(window.shape[2]):
        Image.fromarray(np.ascontiguousarray(window[:, :, k].T)).save(stack / f"slice_{k}.png")
    out = tmp_path / "out"
    assert main(["segment", str(stack), "--modality", "ct", "--spacing", "2", "2", "2", "--out", str(out),
                 "--vertices", "4000", "--no-picture"]) == 0
    # the stack's affine starts at the origin: move the surfaces back into the phantom's frame
    _check_outputs(out, head["meshes"], ("skin", "skull", "mandible"), offset=ct.affine[:3, 3])


@pytest.mark.parametrize("extra", [["--labels", "1=skin", "2=brain"], ["--labels", "x=skin"], ["--vertices", "2"]])
def test_segment_command_bad_arguments_exit_2(head: dict, tmp_path: Path, extra: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    scan = write_nifti(head["labels"], tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--modality", "ct", "--out", str(out), *extra]) == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


def test_segment_command_missing_scan_exit_2(tmp_path: Path) -> None:
    assert main(["segment", str(tmp_path / "none.nii.gz"), "--modality", "ct", "--out", str(tmp_path / "o")]) == 2
