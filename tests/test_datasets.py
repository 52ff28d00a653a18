"""Phantom datasets (LUCY-like head CTs, MRI-Hand-like hand MRIs) and the `anatomy phantom` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import anatomy
from anatomy.cli import main
from anatomy.core.errors import ParameterError
from anatomy.io import read_mesh
from anatomy.scans import PhantomTissue, read_nifti
from anatomy.scans.datasets_hand import default_soft_tissue, make_hand_dataset
from anatomy.scans.datasets_head import make_head_dataset

pytest.importorskip("nibabel")

BONE = [PhantomTissue.CORTICAL, PhantomTissue.CANCELLOUS, PhantomTissue.TEETH]


@pytest.fixture(scope="module")
def head_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lucy") / "data"
    make_head_dataset(out, 1, spacing=(2.5, 2.5, 3.0), seed=3, metal_fraction=1.0)
    return out


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hand") / "data"
    make_hand_dataset(out, 1, poses=2, spacing=2.0, seed=3, soft_tissue="skinning")
    return out


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


@pytest.mark.parametrize("which", ["head", "hand"])
def test_manifest_lists_every_file_and_the_volumes_read_back(which, head_set, hand_set):
    root = head_set if which == "head" else hand_set
    doc = manifest(root)
    samples = doc["samples"]
    assert doc["num_samples"] == len(samples) == 2
    assert [s["session"] for s in samples] == (["pre", "post"] if which == "head" else ["pose00", "pose01"])
    listed = {f for s in samples for f in s["files"].values()}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"}
    assert doc["label_codes"] == {t.name: int(t) for t in PhantomTissue}
    image = "ct" if which == "head" else "mri"
    for s in samples:
        labels = read_nifti(root / s["files"]["labels"])
        scan = read_nifti(root / s["files"][image])
        assert labels.modality == "labels" and labels.data.dtype == np.uint8
        assert list(labels.shape) == s["shape"] == list(scan.shape)
        np.testing.assert_array_equal(labels.affine, s["affine"])
        np.testing.assert_array_equal(scan.affine, s["affine"])
        assert labels.spacing == pytest.approx(doc["spacing_mm"], abs=1e-12)
        assert set(np.unique(labels.data).tolist()) >= {PhantomTissue.AIR, PhantomTissue.SKIN, PhantomTissue.CORTICAL}
        air = ndimage.binary_erosion(labels.data == PhantomTissue.AIR, iterations=2)
        if which == "head":
            assert scan.data.dtype == np.int16 and scan.data.max() == 3071  # metal_fraction=1: fillings
            assert abs(float(scan.data[air].mean()) + 1000.0) < 2.0
        else:
            assert scan.data.dtype == np.uint16
            floor = 0.02 * np.sqrt(np.pi / 2) * doc["modality_facts"]["mri_scale"]  # Rician mean of air
            assert float(scan.data[air].mean()) == pytest.approx(floor, rel=0.05)


def boundary_distance(labels, inside: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Distance (mm) from each vertex to the nearest voxel centre on the boundary of ``inside`` (6-neighbours)."""
    edge = inside & ~ndimage.binary_erosion(inside, border_value=0)
    outer = ~inside & ndimage.binary_dilation(inside)
    surface = edge | outer  # both sides of the interface: the interface lies between them
    dist = ndimage.distance_transform_edt(~surface, sampling=labels.spacing)
    ijk = np.rint(labels.voxel(vertices)).astype(int)
    assert np.all(ijk >= 0) and np.all(ijk < np.array(labels.shape))
    return dist[tuple(ijk.T)]


def test_head_meshes_lie_on_the_label_boundary(head_set):
    for s in manifest(head_set)["samples"]:
        labels = read_nifti(head_set / s["files"]["labels"])
        codes = np.asarray(labels.data)
        face = read_mesh(head_set / s["files"]["face"]).vertices
        skull = np.concatenate([read_mesh(head_set / s["files"][n]).vertices for n in ("skull", "mandible")])
        voxel = float(np.mean(labels.spacing))
        assert boundary_distance(labels, codes != PhantomTissue.AIR, face).mean() < 0.5 * voxel
        assert boundary_distance(labels, np.isin(codes, BONE), skull).mean() < 0.5 * voxel


def test_hand_meshes_lie_on_the_label_boundary(hand_set):
    for s in manifest(hand_set)["samples"]:
        labels = read_nifti(hand_set / s["files"]["labels"])
        codes = np.asarray(labels.data)
        skin_mesh = read_mesh(hand_set / s["files"]["skin"])
        skin = skin_mesh.vertices[np.unique(skin_mesh.faces)]  # the surface (the tet mesh's inner nodes are kept)
        bones = read_mesh(hand_set / s["files"]["bones"]).vertices
        assert boundary_distance(labels, codes != PhantomTissue.AIR, skin).mean() < 0.5 * labels.spacing[0]
        assert boundary_distance(labels, np.isin(codes, BONE), bones).mean() < 0.5 * labels.spacing[0]


def test_parameters_reproduce_the_meshes_and_landmarks(head_set, hand_set):
    head = anatomy.Sculptor(dtype=torch.float64)
    for s in manifest(head_set)["samples"]:
        params = {k: torch.tensor(v, dtype=torch.float64) for k, v in s["params"].items()}
        with torch.no_grad():
            out = head(**params)
        for name in ("skull", "mandible", "face"):
            ply = read_mesh(head_set / s["files"][name])
            np.testing.assert_allclose(ply.vertices, out.tissue(name)[0].numpy(), rtol=0, atol=1e-9)
            np.testing.assert_array_equal(ply.faces, out.faces(name).numpy())
        marks = json.loads((head_set / s["files"]["landmarks"]).read_text())["landmarks"]
        np.testing.assert_allclose(marks["pogonion"], out.landmark("pogonion")[0].numpy(), atol=1e-9)
    hand = anatomy.Nimble()
    for s in manifest(hand_set)["samples"]:
        params = {k: torch.tensor(v, dtype=torch.float32) for k, v in s["params"].items()}
        with torch.no_grad():
            out = hand(params["pose"], params["shape"])
        np.testing.assert_allclose(read_mesh(hand_set / s["files"]["bones"]).vertices, out.bones[0].double().numpy(),
                                   rtol=0, atol=1e-5)
        joints = json.loads((hand_set / s["files"]["joints"]).read_text())
        np.testing.assert_allclose(joints["joints"]["dis2_end"], out.joints[0, 9].double().numpy(), atol=1e-5)
        assert len(joints["keypoints"]) == 21
    first = manifest(hand_set)["samples"][0]
    assert np.abs(np.asarray(first["params"]["pose"])).max() == 0.0  # pose 0 is the flat rest pose


def test_post_surgery_landmarks_moved_by_the_plan(head_set):
    pre, post = manifest(head_set)["samples"]
    plan = pre["surgery_mm"]
    assert plan == post["surgery_mm"] and plan
    assert ("mandibular_advancement" in plan) != ("mandibular_setback" in plan)  # exactly one mandibular movement
    before = json.loads((head_set / pre["files"]["landmarks"]).read_text())["landmarks"]
    after = json.loads((head_set / post["files"]["landmarks"]).read_text())["landmarks"]

    def moved(name: str) -> np.ndarray:
        return np.asarray(after[name]) - np.asarray(before[name])

    mandible = plan.get("mandibular_advancement", 0.0) - plan.get("mandibular_setback", 0.0)
    # the default head's trait components move their bony landmark along +y (forward) / +z (up)
    np.testing.assert_allclose(moved("infradentale"), [0.0, mandible, 0.0], atol=1e-6)
    np.testing.assert_allclose(moved("pogonion"), [0.0, mandible + plan.get("genioplasty_advancement", 0.0), 0.0],
                               atol=1e-6)
    np.testing.assert_allclose(moved("prosthion"), [0.0, plan.get("maxillary_advancement", 0.0),
                                                    plan.get("maxillary_impaction", 0.0)], atol=1e-6)
    np.testing.assert_allclose(moved("gonion_R"), 0.0, atol=1e-6)
    # the pre-operative traits are the opposite of the plan (+-0.25): post-operative near the mean
    assert np.abs(np.asarray(post["params"]["trait"])).max() <= 0.25 + 1e-12


def test_same_seed_same_data_other_seed_different(tmp_path: Path, hand_set):
    def labels_of(root: Path) -> list[np.ndarray]:
        return [np.asarray(read_nifti(root / s["files"]["labels"]).data) for s in manifest(root)["samples"]]

    again = tmp_path / "again"
    other = tmp_path / "other"
    make_hand_dataset(again, 1, poses=2, spacing=2.0, seed=3, soft_tissue="skinning")
    make_hand_dataset(other, 1, poses=2, spacing=2.0, seed=4, soft_tissue="skinning")
    for name in ("sub-000/ses-pose01/mri.nii.gz", "sub-000/ses-pose01/skin.ply", "sub-000/ses-pose01/params.json"):
        assert (again / name).read_bytes() == (hand_set / name).read_bytes()
        assert (other / name).read_bytes() != (hand_set / name).read_bytes()
    for a, b in zip(labels_of(again), labels_of(hand_set), strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(labels_of(other)[1].shape, labels_of(hand_set)[1].shape) or not np.array_equal(
        labels_of(other)[1], labels_of(hand_set)[1])
    # a subject's data does not depend on how many subjects are made
    two = tmp_path / "two"
    make_hand_dataset(two, 2, poses=1, spacing=4.0, seed=5, soft_tissue="skinning")
    one = tmp_path / "one"
    make_hand_dataset(one, 1, poses=1, spacing=4.0, seed=5, soft_tissue="skinning")
    name = "sub-000/ses-pose00/labels.nii.gz"
    assert (one / name).read_bytes() == (two / name).read_bytes()


@pytest.mark.skipif(default_soft_tissue() != "elastic", reason="anatomy.scans.phantom_soft is not installed")
def test_elastic_soft_tissue_moves_muscles_not_bones(tmp_path: Path):
    out = tmp_path / "elastic"
    skinned = tmp_path / "skinned"
    make_hand_dataset(out, 1, poses=2, spacing=3.0, seed=3, shape_sd=0.0)  # the default: elastic
    make_hand_dataset(skinned, 1, poses=2, spacing=3.0, seed=3, shape_sd=0.0, soft_tissue="skinning")
    assert manifest(out)["soft_tissue"] == "elastic"
    for name in ("bones", "muscles"):
        elastic = read_mesh(out / f"sub-000/ses-pose01/{name}.ply").vertices
        lbs = read_mesh(skinned / f"sub-000/ses-pose01/{name}.ply").vertices
        moved = np.linalg.norm(elastic - lbs, axis=1).max()
        assert moved == 0.0 if name == "bones" else moved > 0.01
    rest = read_mesh(out / "sub-000/ses-pose00/muscles.ply").vertices  # the rest pose is the solve's fixed point
    np.testing.assert_allclose(rest, read_mesh(skinned / "sub-000/ses-pose00/muscles.ply").vertices, atol=1e-3)


def test_head_same_seed_same_labels(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        make_head_dataset(root, 1, spacing=5.0, seed=1)
    for name in ("sub-000/ses-post/labels.nii.gz", "sub-000/ses-post/ct.nii.gz", "sub-000/ses-pre/face.ply"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_bad_library_input_writes_nothing(tmp_path: Path):
    out = tmp_path / "out"
    for kwargs in ({"subjects": 0}, {"subjects": 1.5}, {"subjects": 1, "poses": 0}, {"subjects": 1, "spacing": -1.0},
                   {"subjects": 1, "spacing": (1.0, 1.0)}, {"subjects": 1, "soft_tissue": "rigid"},
                   {"subjects": 1, "max_bytes": 1 << 20}, {"subjects": 1, "seed": -1}, {"subjects": 1, "noise": -0.1},
                   {"subjects": 1, "shape_sd": float("nan")}, {"subjects": 1, "supersample": 0}):
        with pytest.raises(ParameterError):
            make_hand_dataset(out, **kwargs)
        assert not out.exists()
    with pytest.raises(ParameterError, match="plan"):
        make_head_dataset(out, 1, plan=[(("le_fort_3",), 1.0, 1.0, 2.0)])
    with pytest.raises(ParameterError, match="plan"):
        make_head_dataset(out, 1, plan=[(("mandibular_advancement",), 1.0, 1.0, 20.0)])
    for bad in ({"metal_fraction": 2.0}, {"psf_mm": -1.0}, {"noise_hu": float("inf")}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            make_head_dataset(out, 1, **bad)
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ParameterError, match="not empty"):
        make_head_dataset(out, 1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_phantom_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "cli"
    argv = ["phantom", "hand", "--subjects", "1", "--poses", "1", "--spacing", "4", "--soft-tissue", "skinning",
            "--shape-sd", "0.5", "--out", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sub-000 pose00:") and lines[1].startswith("wrote 1 samples")
    doc = manifest(out)
    assert doc["spacing_mm"] == [4.0, 4.0, 4.0] and doc["soft_tissue"] == "skinning" and doc["shape_sd"] == 0.5
    head = tmp_path / "head"
    assert main(["phantom", "head", "--subjects", "1", "--spacing", "4", "5", "6", "--seed", "2", "--out",
                 str(head)]) == 0
    assert manifest(head)["spacing_mm"] == [4.0, 5.0, 6.0] and manifest(head)["seed"] == 2


def test_cli_phantom_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    full = tmp_path / "full"
    full.mkdir()
    (full / "data.nii.gz").write_bytes(b"keep")
    new = tmp_path / "new"
    cases = [
        ["phantom", "hand", "--subjects", "1", "--out", str(full)],
        ["phantom", "hand", "--subjects", "0", "--out", str(new)],
        ["phantom", "hand", "--subjects", "1", "--poses", "0", "--out", str(new)],
        ["phantom", "hand", "--subjects", "1", "--spacing", "1", "2", "--out", str(new)],
        ["phantom", "hand", "--subjects", "1", "--spacing", "-1", "--out", str(new)],
        ["phantom", "head", "--subjects", "1", "--poses", "3", "--out", str(new)],
        ["phantom", "head", "--subjects", "1", "--soft-tissue", "skinning", "--out", str(new)],
        ["phantom", "head", "--subjects", "1", "--shape-sd", "0", "--out", str(new)],
        ["phantom", "hand", "--subjects", "1", "--shape-sd", "-1", "--out", str(new)],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("anatomy phantom: error:") and "\n" not in err, err
    assert not new.exists()
    assert [p.name for p in full.iterdir()] == ["data.nii.gz"] and (full / "data.nii.gz").read_bytes() == b"keep"
    for argv in (["phantom", "leg", "--subjects", "1", "--out", str(new)],
                 ["phantom", "hand", "--subjects", "1", "--soft-tissue", "rigid", "--out", str(new)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
