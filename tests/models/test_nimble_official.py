"""NIMBLE / PIANO layers on small synthetic files with the official key layout.

Every formula is checked against an independent float64 reference written here from
DESIGN §4 (4x4 transforms joint by joint, skinning vertex by vertex): outputs and gradients.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from anatomy.core.errors import DtypeError, ModelFileError, ParameterError, ShapeError, UnsafePickleError
from anatomy.io import load_model, nimble_to_model_data, piano_to_model_data, save_model
from anatomy.models import Nimble, Piano

F64 = torch.float64
NB, NM, NS = 20, 15, 25  # bone, muscle, skin vertices
V = NB + NM + NS
K_SHAPE, K_POSE, K_TEX, RES = 4, 6, 3, 4

# DESIGN §4, written out independently of the package
BONES = ["carpal", "met1", "pro1", "dis1", "met2", "pro2", "int2", "dis2", "met3", "pro3", "int3", "dis3",
         "met4", "pro4", "int4", "dis4", "met5", "pro5", "int5", "dis5"]
JOINTS = ["carpal", "met1", "pro1", "dis1", "dis1_end", "met2", "pro2", "int2", "dis2", "dis2_end",
          "met3", "pro3", "int3", "dis3", "dis3_end", "met4", "pro4", "int4", "dis4", "dis4_end",
          "met5", "pro5", "int5", "dis5", "dis5_end"]
PARENTS = [-1, 0, 1, 2, 3, 0, 5, 6, 7, 8, 0, 10, 11, 12, 13, 0, 15, 16, 17, 18, 0, 20, 21, 22, 23]
KEYPOINTS = [0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24]
MIRROR = torch.tensor([-1.0, 1.0, 1.0], dtype=F64)


def _faces(n: int, num: int, gen: torch.Generator) -> torch.Tensor:
    """Triangles over n vertices using every vertex."""
    rows = [torch.tensor([i, (i + 1) % n, (i + 2) % n]) for i in range(n)]
    rows += [torch.randperm(n, generator=gen)[:3] for _ in range(num - n)]
    return torch.stack(rows).long()


def _simplex(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    w = torch.rand(rows, cols, generator=gen, dtype=F64) + 0.05
    return w / w.sum(1, keepdim=True)


def make_nimble_dict(seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    vert = torch.randn(V, 3, generator=gen, dtype=F64) * 20
    sw = torch.zeros(V, 25, dtype=F64)
    for i in range(NB):  # rigid bone weights, bone i % 20 -> its joint
        sw[i, JOINTS.index(BONES[i % 20])] = 1.0
    sw[NB:] = _simplex(NM + NS, 25, gen)
    bone_f, muscle_f, skin_f = _faces(NB, 24, gen), _faces(NM, 18, gen), _faces(NS, 30, gen)
    muscle_f_global = muscle_f + NB  # stored global on purpose: the converter must make it local
    return {
        "vert": vert.float(),
        "face": torch.cat([bone_f, muscle_f + NB, skin_f + NB + NM]),
        "bone_v_sep": NB,
        "skin_v_sep": -NS,
        "all_sw": sw,  # float64 so that rows sum to 1 exactly enough for a 1e-9 comparison with translation
        "all_pbs": (torch.randn(V, 3, 171, generator=gen, dtype=F64) * 0.5).float(),
        "jreg_bone": _simplex(25, NB, gen).float(),
        "jreg_mano": _simplex(21, 778, gen).float(),
        "shape_basis": torch.randn(K_SHAPE, 3 * V, generator=gen, dtype=F64).float(),
        "shape_pm_std": (torch.rand(K_SHAPE, generator=gen, dtype=F64) + 0.5).float(),
        "shape_pm_mean": torch.randn(K_SHAPE, generator=gen, dtype=F64).float(),
        "pose_basis": (torch.randn(K_POSE, 57, generator=gen, dtype=F64) * 0.3).float(),
        "pose_mean": (torch.randn(57, generator=gen, dtype=F64) * 0.2).float(),
        "pose_pm_std": (torch.rand(K_POSE, generator=gen, dtype=F64) + 0.5).float(),
        "pose_pm_mean": (torch.randn(K_POSE, generator=gen, dtype=F64) * 0.3).float(),
        "bone_f": bone_f,
        "muscle_f": muscle_f_global,
        "skin_f": skin_f,
        "skin_v_surface_mask": torch.rand(NS, generator=gen) > 0.3,
        "skin_v_gd": torch.rand(NS, 4, generator=gen),
    }


def make_tex_dict(seed: int = 1) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {name: {"basis": torch.randn(3 * RES * RES, K_TEX, generator=gen) * 0.3,
                   "mean": torch.rand(3 * RES * RES, generator=gen),
                   "std": torch.rand(K_TEX, generator=gen) + 0.5} for name in ("diffuse", "normal", "spec")}


def make_vreg(seed: int = 2) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    bary = torch.rand(20, 778, 3, generator=gen, dtype=F64) + 0.01
    return {"lmk_faces_idx": torch.randint(0, 30, (20, 778), generator=gen),
            "lmk_bary_coords": (bary / bary.sum(-1, keepdim=True)).float()}


def make_piano_dict(seed: int = 3) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    sw = torch.zeros(NB, 25)
    for i in range(NB):
        sw[i, JOINTS.index(BONES[i % 20])] = 1.0
    return {"shape_mean": torch.randn(NB, 3, generator=gen) * 20, "faces": _faces(NB, 24, gen),
            "shape_basis": torch.randn(5, 3 * NB, generator=gen), "sw": sw,
            "jreg": _simplex(25, NB, gen).float(), "parents": torch.tensor(PARENTS)}


def _dump(obj: Any, path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nimble")
    return {"pm": _dump(make_nimble_dict(), root / "NIMBLE_DICT_9.pkl"),
            "tex": _dump(make_tex_dict(), root / "NIMBLE_TEX_DICT.pkl"),
            "vreg": _dump(make_vreg(), root / "NIMBLE_MANO_VREG.pkl"),
            "piano": _dump(make_piano_dict(), root / "piano.pkl")}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    d = make_nimble_dict()
    return {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in d.items()}


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> Nimble:
    return Nimble.from_official(files["pm"], files["tex"], files["vreg"], num_betas=K_SHAPE, dtype=F64)


@pytest.fixture(scope="module")
def pca_model(files: dict[str, Path]) -> Nimble:
    return Nimble.from_official(files["pm"], pose_mode="pca", num_betas=K_SHAPE, num_pose_pca=K_POSE, dtype=F64)


# ------------------------------------------------------------------------------------------
# reference (float64, straight from DESIGN §4)
# ------------------------------------------------------------------------------------------


def rodrigues(r: torch.Tensor) -> torch.Tensor:
    theta = r.norm()
    if float(theta.detach()) < 1e-12:
        return torch.eye(3, dtype=r.dtype)
    k = r / theta
    kx = torch.zeros(3, 3, dtype=r.dtype)
    kx[0, 1], kx[0, 2], kx[1, 0], kx[1, 2], kx[2, 0], kx[2, 1] = -k[2], k[1], k[2], -k[0], -k[1], k[0]
    return torch.eye(3, dtype=r.dtype) + torch.sin(theta) * kx + (1 - torch.cos(theta)) * (kx @ kx)


def reference(
    vert: torch.Tensor, shape_basis: torch.Tensor, shape_std: torch.Tensor | None, shape_mean: torch.Tensor | None,
    sw: torch.Tensor, jreg_bone: torch.Tensor, pbs: torch.Tensor | None, pose: torch.Tensor, beta: torch.Tensor,
    transl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """pose (B, 20, 3), beta (B, k) -> vertices (B, V, 3), posed joints (B, 25, 3)."""
    k = beta.shape[1]
    out_v, out_j = [], []
    for b in range(pose.shape[0]):
        coef = beta[b] if shape_std is None else beta[b] * shape_std[:k] + shape_mean[:k]  # type: ignore[index]
        v = vert + (shape_basis[:k].t() @ coef).reshape(-1, 3)
        joints = jreg_bone @ v[: jreg_bone.shape[1]]
        bone_rot = [rodrigues(pose[b, i]) for i in range(20)]
        local = [torch.eye(3, dtype=F64)] * 25
        for i, name in enumerate(BONES):
            local[JOINTS.index(name)] = bone_rot[i]
        if pbs is not None:
            feat = torch.cat([(bone_rot[i] - torch.eye(3, dtype=F64)).reshape(9) for i in range(1, 20)])
            v = v + pbs @ feat
        glob: list[torch.Tensor] = []
        for j in range(25):
            m = torch.eye(4, dtype=F64)
            m[:3, :3] = local[j]
            m[:3, 3] = joints[j] - (joints[PARENTS[j]] if PARENTS[j] >= 0 else 0)
            glob.append(m if PARENTS[j] < 0 else glob[PARENTS[j]] @ m)
        rel = []
        for j in range(25):
            unrest = torch.eye(4, dtype=F64)
            unrest[:3, 3] = -joints[j]
            rel.append(glob[j] @ unrest)
        rows = []
        for i in range(v.shape[0]):
            p = torch.cat([v[i], torch.ones(1, dtype=F64)])
            acc = torch.zeros(4, dtype=F64)
            for j in range(25):
                if float(sw[i, j]) != 0.0:
                    acc = acc + sw[i, j] * (rel[j] @ p)
            rows.append(acc[:3])
        verts = torch.stack(rows)
        posed_j = torch.stack([g[:3, 3] for g in glob])
        if transl is not None:
            verts, posed_j = verts + transl[b], posed_j + transl[b]
        out_v.append(verts)
        out_j.append(posed_j)
    return torch.stack(out_v), torch.stack(out_j)


def nimble_reference(raw: dict[str, Any], pose: torch.Tensor, beta: torch.Tensor,
                     transl: torch.Tensor | None = None, pbs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    return reference(raw["vert"], raw["shape_basis"], raw["shape_pm_std"], raw["shape_pm_mean"], raw["all_sw"],
                     raw["jreg_bone"], raw["all_pbs"] if pbs else None, pose, beta, transl)


def pca_to_pose(raw: dict[str, Any], theta: torch.Tensor, n: int = K_POSE) -> torch.Tensor:
    theta = torch.nn.functional.pad(theta, (0, n - theta.shape[1]))
    rows = []
    for b in range(theta.shape[0]):
        full = raw["pose_basis"][:n].t() @ (theta[b] * raw["pose_pm_std"][:n] + raw["pose_pm_mean"][:n]) \
            + raw["pose_mean"]
        rows.append(torch.cat([torch.zeros(1, 3, dtype=F64), full.reshape(19, 3)]))
    return torch.stack(rows)


def _inputs(batch: int = 2, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(batch, 20, 3, generator=gen, dtype=F64) * 0.4
    beta = torch.randn(batch, K_SHAPE, generator=gen, dtype=F64)
    transl = torch.randn(batch, 3, generator=gen, dtype=F64) * 5
    return pose, beta, transl


# ------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------


def test_conversion_layout_faces_and_parts(files: dict[str, Path], raw: dict[str, Any]) -> None:
    data = nimble_to_model_data(files["pm"], num_shape=K_SHAPE)
    assert [(t.name, t.start, t.stop) for t in data.tissues] == [
        ("bones", 0, NB), ("muscles", NB, NB + NM), ("skin", NB + NM, V)]
    torch.testing.assert_close(data.tissue("bones").faces, raw["bone_f"])
    torch.testing.assert_close(data.tissue("muscles").faces, raw["muscle_f"] - NB)  # global -> local
    torch.testing.assert_close(data.tissue("skin").faces, raw["skin_f"])
    assert data.tissue("bones").part_names == BONES
    assert data.tissue("bones").part_ids.tolist() == [i % 20 for i in range(NB)]  # type: ignore[union-attr]
    assert data.joint_names == JOINTS and data.parents == PARENTS
    assert data.pose_feature_joints == [JOINTS.index(b) for b in BONES[1:]]
    assert data.joint_regressor.shape == (25, V) and not data.joint_regressor[:, NB:].any()
    assert data.extras["pose_pca_basis"].shape == (K_POSE, 57)
    assert data.extras["skin_v_surface_mask"].dtype == torch.bool


def test_forward_matches_reference_outputs_and_gradients(model: Nimble, raw: dict[str, Any]) -> None:
    pose, beta, transl = _inputs()
    pose.requires_grad_(True)
    beta.requires_grad_(True)
    out = model(pose, beta, transl=transl)
    ref_v, ref_j = nimble_reference(raw, pose, beta, transl)
    torch.testing.assert_close(out.vertices, ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.keypoints, ref_j[:, KEYPOINTS], atol=1e-9, rtol=1e-9)
    w_v, w_j = torch.randn_like(ref_v), torch.randn_like(ref_j)
    got = torch.autograd.grad((out.vertices * w_v).sum() + (out.keypoints * w_j[:, KEYPOINTS]).sum(), (pose, beta))
    want = torch.autograd.grad((ref_v * w_v).sum() + (ref_j[:, KEYPOINTS] * w_j[:, KEYPOINTS]).sum(), (pose, beta))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-8, rtol=1e-8)
    # rotation matrices are accepted too
    mats = torch.stack([torch.stack([rodrigues(r) for r in p]) for p in pose.detach()])
    torch.testing.assert_close(model(mats, beta, transl=transl).vertices, out.vertices, atol=1e-9, rtol=1e-9)
    # per-tissue and per-bone access
    torch.testing.assert_close(out.skin, ref_v[:, NB + NM:], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.part("bones", "met1"), ref_v[:, [1]], atol=1e-9, rtol=1e-9)


def test_fewer_betas_pad_with_zeros_and_rest_shape(model: Nimble, raw: dict[str, Any]) -> None:
    pose, beta, _ = _inputs(1)
    out = model(pose, beta[:, :2])
    ref_v, _ = nimble_reference(raw, pose, torch.nn.functional.pad(beta[:, :2], (0, K_SHAPE - 2)))
    torch.testing.assert_close(out.vertices, ref_v, atol=1e-9, rtol=1e-9)
    rest = model()  # zero pose, beta = 0: vert + shape_basis^T shape_pm_mean
    mean_shape = raw["vert"] + (raw["shape_basis"].t() @ raw["shape_pm_mean"]).reshape(V, 3)
    torch.testing.assert_close(rest.vertices[0], mean_shape, atol=1e-9, rtol=1e-9)


def test_correctives_act_on_every_tissue(model: Nimble, raw: dict[str, Any]) -> None:
    pose, beta, _ = _inputs(1)
    out = model(pose, beta)
    without, _ = nimble_reference(raw, pose, beta, pbs=False)
    delta = (out.vertices - without).norm(dim=-1)[0]
    for lo, hi in ((0, NB), (NB, NB + NM), (NB + NM, V)):
        assert float(delta[lo:hi].min()) > 1e-3


def test_joints_come_from_bone_vertices_only(files: dict[str, Path], raw: dict[str, Any], tmp_path: Path) -> None:
    d = make_nimble_dict()
    d["vert"][NB:] += 100.0  # move muscles and skin only
    moved = Nimble.from_official(_dump(d, tmp_path / "moved.pkl"), num_betas=K_SHAPE, dtype=F64)
    base = Nimble.from_official(files["pm"], num_betas=K_SHAPE, dtype=F64)
    pose, beta, _ = _inputs(1)
    torch.testing.assert_close(moved(pose, beta).joints, base(pose, beta).joints, atol=1e-9, rtol=0)
    shaped = raw["vert"] + (raw["shape_basis"].t() @ (beta[0] * raw["shape_pm_std"] + raw["shape_pm_mean"])
                            ).reshape(V, 3)
    torch.testing.assert_close(base(None, beta).rest_joints[0], raw["jreg_bone"] @ shaped[:NB], atol=1e-9, rtol=0)


def test_pca_mode_matches_official_formula(pca_model: Nimble, raw: dict[str, Any]) -> None:
    gen = torch.Generator().manual_seed(9)
    theta = torch.randn(2, 4, generator=gen, dtype=F64, requires_grad=True)  # k = 4 < 6: rest padded
    beta = torch.randn(2, K_SHAPE, generator=gen, dtype=F64)
    out = pca_model(theta, beta)
    ref_v, ref_j = nimble_reference(raw, pca_to_pose(raw, theta), beta)
    torch.testing.assert_close(out.vertices, ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)
    w = torch.randn_like(ref_v)
    (g,) = torch.autograd.grad((out.vertices * w).sum(), theta)
    (r,) = torch.autograd.grad((ref_v * w).sum(), theta)
    torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-8)
    zero = pca_model()  # theta = 0 is the mean pose
    torch.testing.assert_close(zero.vertices, nimble_reference(raw, pca_to_pose(raw, theta[:1] * 0), beta[:1] * 0)[0],
                               atol=1e-9, rtol=1e-9)


def test_left_hand_is_the_mirrored_right_hand(files: dict[str, Path]) -> None:
    right = Nimble.from_official(files["pm"], mano_vreg=files["vreg"], num_betas=K_SHAPE, dtype=F64)
    left = Nimble.from_official(files["pm"], mano_vreg=files["vreg"], side="left", num_betas=K_SHAPE, dtype=F64)
    pose, beta, transl = _inputs()
    go = torch.tensor([[0.3, -0.2, 0.5]], dtype=F64)
    out_r = right(pose, beta, global_orient=go, transl=transl)
    aa = torch.tensor([1.0, -1.0, -1.0], dtype=F64)
    out_l = left(pose * aa, beta, global_orient=go * aa, transl=transl * MIRROR)
    torch.testing.assert_close(out_l.vertices, out_r.vertices * MIRROR, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out_l.keypoints, out_r.keypoints * MIRROR, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out_l.faces("skin"), out_r.faces("skin")[:, [0, 2, 1]])
    torch.testing.assert_close(left.mano_vertices(out_l), right.mano_vertices(out_r) * MIRROR, atol=1e-9, rtol=1e-9)
    assert left.side == "left"
    pca_r = Nimble.from_official(files["pm"], pose_mode="pca", num_betas=K_SHAPE, num_pose_pca=K_POSE, dtype=F64)
    pca_l = Nimble.from_official(files["pm"], side="left", pose_mode="pca", num_betas=K_SHAPE,
                                 num_pose_pca=K_POSE, dtype=F64)
    theta = torch.randn(2, K_POSE, dtype=F64)
    torch.testing.assert_close(pca_l(theta, beta).vertices, pca_r(theta, beta).vertices * MIRROR,
                               atol=1e-9, rtol=1e-9)


def test_texture_maps(model: Nimble) -> None:
    tex = make_tex_dict()
    alpha = torch.randn(2, K_TEX, dtype=F64) * 2
    maps = model.texture_maps(alpha)
    for name, entry in tex.items():
        basis, mean, std = (entry[k].double() for k in ("basis", "mean", "std"))
        for b in range(2):
            want = (basis[:, :K_TEX] @ (alpha[b] * std[:K_TEX]) + mean).reshape(RES, RES, 3).clamp(0, 1)
            torch.testing.assert_close(maps[name][b], want, atol=1e-6, rtol=1e-6)
    assert maps["diffuse"].shape == (2, RES, RES, 3)


def test_mano_vertices(model: Nimble, raw: dict[str, Any]) -> None:
    vreg = make_vreg()
    pose, beta, _ = _inputs(1)
    out = model(pose, beta)
    skin = out.skin[0]
    faces = raw["skin_f"]
    want = torch.zeros(778, 3, dtype=F64)
    for n in range(20):
        tri = skin[faces[vreg["lmk_faces_idx"][n]]]  # (778, 3, 3)
        want += (tri * vreg["lmk_bary_coords"][n].double()[..., None]).sum(1)
    torch.testing.assert_close(model.mano_vertices(out)[0], want / 20, atol=1e-6, rtol=1e-6)


def test_piano_matches_reference(files: dict[str, Path]) -> None:
    p = make_piano_dict()
    piano = Piano.from_official(files["piano"], dtype=F64)
    pose, _, transl = _inputs(2)
    beta = torch.randn(2, 5, dtype=F64, requires_grad=True)
    out = piano(pose, beta, transl=transl)
    ref_v, ref_j = reference(p["shape_mean"].double(), p["shape_basis"].double(), None, None, p["sw"].double(),
                             p["jreg"].double(), None, pose, beta, transl)
    torch.testing.assert_close(out.bones, ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)
    w = torch.randn_like(ref_v)
    (g,) = torch.autograd.grad((out.vertices * w).sum(), beta)
    (r,) = torch.autograd.grad((ref_v * w).sum(), beta)
    torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-8)
    assert out.tissue_names == ("bones",)
    assert piano_to_model_data(files["piano"]).pose_basis is None


# ------------------------------------------------------------------------------------------
# bad files and bad inputs
# ------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d = make_nimble_dict()
    d["vert"] = _Evil(str(marker))
    path = _dump(d, tmp_path / "evil.pkl")
    with pytest.raises(UnsafePickleError):
        nimble_to_model_data(path)
    with pytest.raises(UnsafePickleError):
        Nimble.from_official(path)
    assert not marker.exists()


def test_missing_key_and_truncated_file(files: dict[str, Path], tmp_path: Path) -> None:
    d = make_nimble_dict()
    del d["all_pbs"]
    with pytest.raises(ModelFileError, match=r"missing key 'all_pbs'.*NIMBLE_DICT"):
        nimble_to_model_data(_dump(d, tmp_path / "nopbs.pkl"), num_shape=K_SHAPE)
    p = make_piano_dict()
    del p["jreg"]
    with pytest.raises(ModelFileError, match=r"missing key 'jreg'.*PIANO"):
        piano_to_model_data(_dump(p, tmp_path / "nojreg.pkl"))
    blob = files["pm"].read_bytes()
    (tmp_path / "cut.pkl").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelFileError):
        nimble_to_model_data(tmp_path / "cut.pkl")
    d = make_nimble_dict()
    d["all_sw"] = d["all_sw"][:, :20]
    with pytest.raises(ModelFileError, match="all_sw"):
        nimble_to_model_data(d, num_shape=K_SHAPE)
    with pytest.raises(ParameterError, match="shape components"):
        nimble_to_model_data(make_nimble_dict(), num_shape=20)  # the synthetic file has 4


def test_bad_inputs_raise_typed_errors(model: Nimble, pca_model: Nimble) -> None:
    with pytest.raises(ShapeError, match="pose_mode='pca'"):
        model(torch.zeros(1, 30, dtype=F64))
    with pytest.raises(ShapeError, match=r"view\(-1, 20, 3\)"):
        model(torch.zeros(1, 60, dtype=F64))
    with pytest.raises(ShapeError, match="pca mode"):
        pca_model(torch.zeros(1, 20, 3, dtype=F64))
    with pytest.raises(ShapeError, match="k <= 6"):
        pca_model(torch.zeros(1, 7, dtype=F64))
    with pytest.raises(ShapeError):
        model(None, torch.zeros(1, K_SHAPE + 1, dtype=F64))
    bad = torch.zeros(1, 20, 3, dtype=F64)
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ParameterError, match="NaN"):
        model(bad)
    with pytest.raises(DtypeError, match="float64"):
        model(torch.zeros(1, 20, 3))
    with pytest.raises(ParameterError, match="side"):
        Nimble.from_official(make_nimble_dict(), side="middle", num_betas=K_SHAPE)


def test_save_and_load_round_trip(files: dict[str, Path], pca_model: Nimble, tmp_path: Path) -> None:
    data = nimble_to_model_data(files["pm"], num_shape=K_SHAPE)
    save_model(data, tmp_path / "nimble")
    again = Nimble(load_model(tmp_path / "nimble"), pose_mode="pca", num_pose_pca=K_POSE, dtype=F64)
    gen = torch.Generator().manual_seed(4)
    theta = torch.randn(2, K_POSE, generator=gen, dtype=F64)
    beta = torch.randn(2, K_SHAPE, generator=gen, dtype=F64)
    a, b = pca_model(theta, beta), again(theta, beta)
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.keypoints, b.keypoints)


def test_float32_default_and_to_float64(files: dict[str, Path], model: Nimble) -> None:
    single = Nimble.from_official(files["pm"], num_betas=K_SHAPE)
    pose, beta, _ = _inputs(1)
    out32 = single(pose.float(), beta.float())
    assert out32.vertices.dtype == torch.float32 and out32.keypoints.shape == (1, 21, 3)
    torch.testing.assert_close(out32.vertices.double(), model(pose, beta).vertices, atol=1e-3, rtol=1e-4)
    out64 = single.to(F64)(pose, beta)
    torch.testing.assert_close(out64.vertices, model(pose, beta).vertices, atol=1e-5, rtol=1e-6)
