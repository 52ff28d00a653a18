"""Sculptor.from_official on small synthetic ``paradict.npy`` files with the official key layout.

The reference below is written straight from DESIGN §5 on the raw dict (stack [skull | face],
beta = [trait | shape] used as given, J = J_reg v, pose features R_jaw - I, 4x4 chain with the
jaw offset added to the jaw's relative translation, W A skinning), in float64, independent
of the package's core; outputs and gradients are compared.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from anatomy import Sculptor
from anatomy.core.errors import ModelFileError, ParameterError, ShapeError, UnsafePickleError
from anatomy.io import load_model, save_model, sculptor_to_model_data
from anatomy.io.official_sculptor import quads_to_triangles
from tests.reference import rodrigues

F64 = torch.float64
NC, NJ, NF = 14, 10, 16  # cranium, mandible (official skull = both, interleaved) and face vertices
NS = NC + NJ
V = NS + NF
KT, KS = 10, 50


def _sphere_faces(ids: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Triangles over the given vertex ids, every id used."""
    n = len(ids)
    rows = [[ids[i], ids[(i + 1) % n], ids[(i + 2) % n]] for i in range(n)]
    rows += [list(ids[rng.permutation(n)[:3]]) for _ in range(count - n)]
    return np.asarray(rows, dtype=np.int64)


def _simplex(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.random((rows, cols)) + 0.05
    return w / w.sum(1, keepdims=True)


def make_paradict(seed: int = 0, *, jreg_skull_only: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    jaw = np.zeros(NS, dtype=bool)
    jaw[rng.permutation(NS)[:NJ]] = True  # mandible vertices scattered through the official skull
    skull_ids, mand_ids = np.nonzero(~jaw)[0], np.nonzero(jaw)[0]
    skull_f = np.concatenate([_sphere_faces(skull_ids, 20, rng), _sphere_faces(mand_ids, 14, rng)])
    quads = np.asarray([[i, (i + 1) % NF, (i + 5) % NF, (i + 4) % NF] for i in range(NF)], dtype=np.int32)
    weights = np.zeros((V, 2))
    weights[:NS, 0] = ~jaw
    weights[:NS, 1] = jaw
    weights[NS:] = _simplex(NF, 2, rng)
    j_cols = NS if jreg_skull_only else V
    jreg = np.zeros((2, j_cols))
    jreg[0, skull_ids] = 1.0 / len(skull_ids)
    jreg[1, mand_ids[:2]] = 0.5  # "condyles"
    if not jreg_skull_only:
        jreg[:, NS:] = 0.02  # a regressor over the whole stack, as the official J_reg (2, V) allows
        jreg /= jreg.sum(1, keepdims=True)
    return {
        "template_skull": rng.normal(size=(NS, 3)) * 40,
        "template_face": (rng.normal(size=(NF, 3)) * 50).astype(np.float32),
        "skullmesh_face": skull_f,
        "facialmesh_face": quads,
        "skull_shape": rng.normal(size=(KS, NS, 3)) * 0.5,
        "face_shape": rng.normal(size=(KS, NF, 3)) * 0.5,
        "skull_div": rng.normal(size=(KT, NS, 3)),
        "face_div": rng.normal(size=(KT, NF, 3)),
        "J_reg": jreg,
        "parents": np.array([-1, 0]),
        "pose_dir": rng.normal(size=(9, 3 * V)) * 2.0,
        "lbs_weights": weights,
    }


def _save_npy(d: dict[str, Any], path: Path) -> Path:
    np.save(path, d, allow_pickle=True)  # the official file is np.save of the dict
    return path


@pytest.fixture(scope="module")
def paradict() -> dict[str, Any]:
    return make_paradict()


@pytest.fixture(scope="module")
def npy(tmp_path_factory: pytest.TempPathFactory, paradict: dict[str, Any]) -> Path:
    return _save_npy(paradict, tmp_path_factory.mktemp("sculptor") / "paradict.npy")


@pytest.fixture(scope="module")
def model(npy: Path) -> Sculptor:
    return Sculptor.from_official(npy, dtype=F64)


def official_reference(d: dict[str, Any], beta: torch.Tensor, pose: torch.Tensor,
                       jaw_offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """beta (B, 60) = [trait | shape], pose (B, 6) = [root | jaw] axis-angle, jaw_offset (B, 3)
    -> vertices (B, V, 3) in the official order and posed joints (B, 2, 3)."""
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in d.items() if k not in ("parents",)}
    template = torch.cat([t["template_skull"], t["template_face"]])
    dirs = torch.cat([torch.cat([t["skull_div"], t["face_div"]], 1), torch.cat([t["skull_shape"], t["face_shape"]], 1)])
    nv = template.shape[0]
    jreg = t["J_reg"] if t["J_reg"].shape[1] == nv else torch.cat([t["J_reg"], torch.zeros(2, nv - NS, dtype=F64)], 1)
    verts, joints_out = [], []
    for b in range(beta.shape[0]):
        shaped = template + torch.einsum("k,kvd->vd", beta[b], dirs[: beta.shape[1]])
        joints = jreg @ shaped
        rots = [rodrigues(pose[b, :3]), rodrigues(pose[b, 3:])]
        feat = (rots[1] - torch.eye(3, dtype=F64)).reshape(9)
        corrected = shaped + (feat @ t["pose_dir"]).reshape(nv, 3)
        local = []
        for j in range(2):
            m = torch.eye(4, dtype=F64)
            m[:3, :3] = rots[j]
            m[:3, 3] = joints[j] if j == 0 else joints[1] - joints[0] + jaw_offset[b]
            local.append(m)
        chain = [local[0], local[0] @ local[1]]
        rel = []
        for j in range(2):
            a = chain[j].clone()
            a[:3, 3] = a[:3, 3] - chain[j][:3, :3] @ joints[j]
            rel.append(a)
        blend = torch.einsum("vj,jab->vab", t["lbs_weights"], torch.stack(rel))
        homo = torch.cat([corrected, torch.ones(nv, 1, dtype=F64)], 1)
        verts.append(torch.einsum("vab,vb->va", blend, homo)[:, :3])
        joints_out.append(torch.stack([c[:3, 3] for c in chain]))
    return torch.stack(verts), torch.stack(joints_out)


def _inputs(batch: int = 2, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, KT + KS, generator=g, dtype=F64), torch.randn(batch, 6, generator=g, dtype=F64) * 0.3,
            torch.randn(batch, 3, generator=g, dtype=F64) * 2)


# ------------------------------------------------------------------------------------------
# conversion and formulas
# ------------------------------------------------------------------------------------------


def test_conversion_layout(paradict: dict[str, Any]) -> None:
    data = sculptor_to_model_data(paradict)
    jaw = paradict["lbs_weights"][:NS, 1] > 0.5
    assert [(t.name, t.start, t.stop) for t in data.tissues] == [
        ("skull", 0, NC), ("mandible", NC, NS), ("face", NS, V)]
    order = data.extras["official_vertex_index"]
    assert order[:NC].tolist() == np.nonzero(~jaw)[0].tolist() and order[NC:NS].tolist() == np.nonzero(jaw)[0].tolist()
    torch.testing.assert_close(data.template, torch.cat([torch.as_tensor(paradict["template_skull"]),
                                                         torch.as_tensor(paradict["template_face"]).double()])[order])
    # faces: the same triangles as the official ones, re-indexed
    official = {tuple(sorted(order[list(f)].tolist())) for f in
                [data.tissue("skull").faces, data.tissue("mandible").faces + NC]
                for f in f.tolist()}
    assert official == {tuple(sorted(f)) for f in paradict["skullmesh_face"].tolist()}
    q = paradict["facialmesh_face"]
    want = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], 1).reshape(-1, 3)
    assert data.tissue("face").faces.tolist() == want.tolist()
    assert data.extras["face_quads"].tolist() == q.tolist()
    assert list(data.spaces) == ["shape", "trait"] and data.spaces["shape"].shape[0] == KS
    assert data.joint_names == ["root", "jaw"] and data.pose_feature_joints == [1]
    assert data.meta["coefficients_normalised"] is False and data.meta["mandible_split"] is True
    assert quads_to_triangles(torch.tensor([[0, 1, 2]])).tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("split", [True, False])
def test_forward_matches_official_formula(npy: Path, paradict: dict[str, Any], split: bool) -> None:
    head = Sculptor.from_official(npy, split_mandible=split, dtype=F64)
    beta, pose, off = (x.requires_grad_(True) for x in _inputs())
    out = head(**head.official_inputs(beta, pose, off[..., None]))  # the official (B, 3, 1) offset layout
    ref_v, ref_j = official_reference(paradict, beta, pose, off)
    got_v = head.to_official_order(out.vertices)
    torch.testing.assert_close(got_v, ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)
    w_v, w_j = torch.randn_like(ref_v), torch.randn_like(ref_j)
    got = torch.autograd.grad((got_v * w_v).sum() + (out.joints * w_j).sum(), (beta, pose, off))
    want = torch.autograd.grad((ref_v * w_v).sum() + (ref_j * w_j).sum(), (beta, pose, off))
    for name, g, r in zip(("beta", "pose", "jaw_offset"), got, want):
        torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-8, msg=f"gradient of {name}")
    jaw = torch.as_tensor(paradict["lbs_weights"][:NS, 1] > 0.5)
    mandible = ref_v[:, :NS][:, jaw]
    if split:
        torch.testing.assert_close(out.mandible, mandible, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.skull, ref_v[:, :NS][:, ~jaw], atol=1e-9, rtol=1e-9)
    else:
        assert out.tissue_names == ("skull", "face")
        torch.testing.assert_close(out.part("skull", "mandible"), mandible, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.mandible, mandible, atol=1e-9, rtol=1e-9)  # the same name either way
    torch.testing.assert_close(out.face, ref_v[:, NS:], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.vertices[:, head.mandible_vertex_ids], mandible, atol=1e-9, rtol=1e-9)


def test_regressor_on_the_skull_only_is_padded(tmp_path: Path) -> None:
    d = make_paradict(1, jreg_skull_only=True)
    head = Sculptor.from_official(d, dtype=F64)
    beta, pose, off = _inputs(1)
    out = head(**head.official_inputs(beta, pose, off))
    ref_v, ref_j = official_reference(d, beta, pose, off)
    torch.testing.assert_close(head.to_official_order(out.vertices), ref_v, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-9, rtol=1e-9)


def test_gradcheck_through_official_parameters(model: Sculptor) -> None:
    beta, pose, off = _inputs(1, seed=8)
    w = torch.randn(V, 3, dtype=F64)

    def f(shape: torch.Tensor, trait: torch.Tensor, jaw: torch.Tensor, jaw_offset: torch.Tensor) -> torch.Tensor:
        return (model(shape, trait, jaw_pose=jaw, jaw_offset=jaw_offset).vertices[0] * w).sum(-1)

    args = (beta[:, KT:KT + 6], beta[:, :KT], pose[:, 3:], off)
    assert torch.autograd.gradcheck(f, tuple(a.clone().requires_grad_(True) for a in args), eps=1e-6, atol=1e-5)


def test_fewer_coefficients_broadcasting_and_num_betas(npy: Path, model: Sculptor,
                                                        paradict: dict[str, Any]) -> None:
    beta, pose, off = _inputs(3)
    short = beta[:, :KT + 5]
    out = model(**model.official_inputs(short, pose[:1], off))  # pose of batch 1 broadcasts
    ref_v, _ = official_reference(paradict, torch.nn.functional.pad(short, (0, KS - 5)), pose[:1].expand(3, -1), off)
    torch.testing.assert_close(model.to_official_order(out.vertices), ref_v, atol=1e-9, rtol=1e-9)
    five = Sculptor.from_official(npy, num_betas=5, dtype=F64)
    assert five.space_sizes == {"shape": 5, "trait": KT}
    torch.testing.assert_close(five(**five.official_inputs(short, pose, off)).vertices,
                               model(**model.official_inputs(short, pose, off)).vertices, atol=1e-10, rtol=0)
    with pytest.raises(ShapeError, match=r"n <= 15 \(trait then shape\)"):
        five(**five.official_inputs(beta[:, :KT + 6]))
    with pytest.raises(ParameterError, match="no expression space"):
        model(expression=torch.zeros(1, 3, dtype=F64))
    with pytest.raises(ParameterError, match="no jaw rotation limits"):
        model.jaw_limits()


def test_length_scale_and_float32(npy: Path, model: Sculptor) -> None:
    beta, pose, off = _inputs(2)
    metres = Sculptor.from_official(npy, length_scale=1000.0, dtype=F64)
    a = model(**model.official_inputs(beta, pose))
    b = metres(**metres.official_inputs(beta, pose))
    torch.testing.assert_close(b.vertices, a.vertices * 1000.0, atol=1e-6, rtol=1e-9)
    single = Sculptor.from_official(npy)
    out = single(**single.official_inputs(beta.float(), pose.float(), off.float()))
    assert out.vertices.dtype == torch.float32
    torch.testing.assert_close(out.vertices.double(), model(**model.official_inputs(beta, pose, off)).vertices,
                               atol=1e-2, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# files: round trip, bad and crafted files
# ------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(npy: Path, model: Sculptor, tmp_path: Path) -> None:
    save_model(sculptor_to_model_data(npy), tmp_path / "sculptor")
    again = Sculptor(load_model(tmp_path / "sculptor"), dtype=F64)
    beta, pose, off = _inputs(2)
    a = model(**model.official_inputs(beta, pose, off))
    b = again(**again.official_inputs(beta, pose, off))
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.joints, b.joints)
    assert torch.equal(again.to_official_order(b.vertices), model.to_official_order(a.vertices))
    assert torch.equal(again.layout[2].faces, model.layout[2].faces)


def test_loaded_object_array_and_bytes(npy: Path, model: Sculptor) -> None:
    from_bytes = Sculptor.from_official(npy.read_bytes(), dtype=F64)
    obj = np.load(npy, allow_pickle=True)  # a 0-d object array (the user forgot .item())
    from_obj = Sculptor.from_official(obj, dtype=F64)
    beta, pose, _ = _inputs(1)
    ref = model(**model.official_inputs(beta, pose)).vertices
    for other in (from_bytes, from_obj):
        assert torch.equal(other(**other.official_inputs(beta, pose)).vertices, ref)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_file_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d: dict[str, Any] = make_paradict()
    d["pose_dir"] = _Evil(str(marker))
    _save_npy(d, tmp_path / "evil.npy")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(d, f)
    for path in (tmp_path / "evil.npy", tmp_path / "evil.pkl"):
        with pytest.raises(UnsafePickleError):
            sculptor_to_model_data(path)
        with pytest.raises(UnsafePickleError):
            Sculptor.from_official(path)
    assert not marker.exists()


def test_bad_files_raise_model_file_errors(npy: Path, tmp_path: Path) -> None:
    d = make_paradict()
    del d["pose_dir"]
    with pytest.raises(ModelFileError, match=r"missing key\(s\) \['pose_dir'\].*'lbs_weights'"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["skull_shape"] = d["skull_shape"][:, :-1]
    with pytest.raises(ModelFileError, match="skull_shape"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["face_div"] = d["face_div"][:4]
    with pytest.raises(ModelFileError, match="same number of components"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["pose_dir"] = d["pose_dir"][:, :-3]
    with pytest.raises(ModelFileError, match="pose_dir"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["parents"] = np.array([-1, -1])
    with pytest.raises(ModelFileError, match="parents"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["lbs_weights"] = d["lbs_weights"] * 2
    with pytest.raises(ModelFileError, match="lbs_weights"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["facialmesh_face"] = d["facialmesh_face"][:, :2]
    with pytest.raises(ModelFileError, match="facialmesh_face"):
        sculptor_to_model_data(d)
    d = make_paradict()
    d["template_face"] = d["template_face"].copy()
    d["template_face"][0, 0] = np.nan
    with pytest.raises(ModelFileError, match="NaN"):
        sculptor_to_model_data(d)
    blob = npy.read_bytes()
    (tmp_path / "cut.npy").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelFileError):
        sculptor_to_model_data(tmp_path / "cut.npy")
    with pytest.raises(ModelFileError, match="readable"):
        sculptor_to_model_data(tmp_path / "missing.npy")
    with pytest.raises(ModelFileError, match="paradict"):
        sculptor_to_model_data(42)
    with pytest.raises(ParameterError, match="jaw_threshold"):
        sculptor_to_model_data(npy, jaw_threshold=1.5)


def test_mandible_split_skipped_when_a_triangle_straddles() -> None:
    d = make_paradict()
    jaw = d["lbs_weights"][:NS, 1] > 0.5
    a, b = int(np.nonzero(~jaw)[0][0]), int(np.nonzero(jaw)[0][0])
    d["skullmesh_face"] = np.concatenate([d["skullmesh_face"], [[a, b, int(np.nonzero(jaw)[0][1])]]])
    data = sculptor_to_model_data(d)
    assert [t.name for t in data.tissues] == ["skull", "face"]
    assert data.tissue("skull").part_names == ["cranium_maxilla", "mandible"]
    assert "official_vertex_index" not in data.extras and "1 skull triangles" in data.meta["mandible_split_skipped"]
