"""Tests of anatomy.io.safe_pickle: real official layouts load exactly, crafted pickles never execute."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy.core.errors import ModelFileError, UnsafePickleError
from anatomy.io import load_official_pickle, to_tensor_dict

# ------------------------------------------------------------------------------------------
# synthetic official files
# ------------------------------------------------------------------------------------------


def nimble_like() -> dict:
    """A dict of torch tensors with NIMBLE's keys (small sizes)."""
    g = torch.Generator().manual_seed(0)
    big = torch.randn(6, 8, generator=g)
    return {
        "vert": torch.randn(12, 3, generator=g),
        "face": torch.randint(0, 12, (10, 3), generator=g),
        "bone_v_sep": 4,
        "skin_v_sep": -5,
        "all_sw": torch.softmax(torch.randn(12, 25, generator=g), 1),
        "all_pbs": torch.randn(12, 3, 171, generator=g).half(),
        "jreg_bone": torch.rand(25, 4, generator=g, dtype=torch.float64),
        "shape_basis": big[:, 1:5],  # a non-contiguous view sharing storage with pose_basis
        "pose_basis": big,
        "skin_v_surface_mask": torch.rand(5, generator=g) > 0.5,
        "sparse": torch.eye(4).to_sparse(),
        "tex": {"diffuse": {"mean": torch.rand(3, generator=g), "std": torch.rand(2, generator=g)}},
    }


def sculptor_like() -> dict:
    """A dict of numpy arrays with SCULPTOR's keys (small sizes, mixed dtypes and layouts)."""
    rng = np.random.default_rng(0)
    return {
        "template_skull": rng.normal(size=(6, 3)),
        "template_face": rng.normal(size=(4, 3)).astype(np.float32),
        "skullmesh_face": rng.integers(0, 6, size=(5, 3)).astype(np.int32),
        "facialmesh_face": rng.integers(0, 4, size=(3, 4)),
        "skull_shape": rng.normal(size=(2, 6, 3)),
        "J_reg": np.asfortranarray(rng.random((2, 10))),
        "parents": np.array([-1, 0]),
        "pose_dir": rng.normal(size=(9, 30)).astype(">f8"),  # big-endian
        "lbs_weights": rng.random((10, 2)).astype(np.float16),
        "scale": np.float64(1.25),
        "flag": np.bool_(True),
    }


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        if a.is_sparse:
            assert torch.equal(a.to_dense(), b.to_dense())
        else:
            assert torch.equal(a, b)
    elif isinstance(a, (np.ndarray, np.generic)):
        # numpy itself unpickles non-native byte orders as native: compare values and kind
        assert type(a) is type(b) and a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
        assert np.array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_pickle_of_torch_tensors(protocol):
    data = nimble_like()
    out = load_official_pickle(pickle.dumps(data, protocol=protocol))
    assert_same(data, out)
    # the view keeps its layout relative to the shared storage
    assert out["shape_basis"].stride() == data["shape_basis"].stride()


def test_file_path_input(tmp_path):
    path = tmp_path / "NIMBLE_DICT_9.pkl"
    with open(path, "wb") as f:
        pickle.dump(nimble_like(), f)
    assert_same(nimble_like(), load_official_pickle(path))
    assert_same(nimble_like(), load_official_pickle(str(path)))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save(tmp_path, zip_format):
    data = nimble_like()
    path = tmp_path / "nimble.pkl"
    torch.save(data, path, _use_new_zipfile_serialization=zip_format)
    assert_same(data, load_official_pickle(path))


def test_np_save_dict(tmp_path):
    data = sculptor_like()
    path = tmp_path / "paradict.npy"
    np.save(path, data, allow_pickle=True)
    out = load_official_pickle(path)
    assert_same(data, out)
    reference = np.load(path, allow_pickle=True).item()  # the unrestricted loader, as an oracle
    for k, v in reference.items():
        assert out[k].dtype == v.dtype and np.array_equal(out[k], v), k
    assert out["J_reg"].flags.f_contiguous


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_pickle_of_numpy_arrays(protocol):
    data = sculptor_like()
    blob = pickle.dumps(data, protocol=protocol)
    out = load_official_pickle(blob)
    assert_same(data, out)
    for k, v in pickle.loads(blob).items():  # the unrestricted loader, as an oracle
        assert out[k].dtype == v.dtype and np.array_equal(out[k], v), k


def test_npz(tmp_path):
    data = {k: v for k, v in sculptor_like().items() if isinstance(v, np.ndarray)}
    np.savez(tmp_path / "x.npz", **data)
    assert_same(data, load_official_pickle(tmp_path / "x.npz"))


def test_containers_and_scalars():
    data = {
        "od": collections.OrderedDict(a=1, b=[1.5, "x", None, True]),
        "set": {1, 2},
        "fs": frozenset({3}),
        "t": (1, 2.0, 3 + 4j),
        "b": b"\x00\xff",
        "ba": bytearray(b"xy"),
        "dtype": torch.float16,
    }
    for protocol in (0, 2, 4, 5):
        assert load_official_pickle(pickle.dumps(data, protocol=protocol)) == data


def test_to_tensor_dict():
    data = sculptor_like()
    data["nested"] = {"list": [np.arange(3), "name"], "t": torch.ones(2)}
    out = to_tensor_dict(data)
    for k, v in sculptor_like().items():
        assert isinstance(out[k], torch.Tensor), k
        ref = np.asarray(v)
        assert out[k].shape == ref.shape
        np.testing.assert_array_equal(out[k].numpy(), ref)
        assert out[k].numpy().dtype == ref.dtype.newbyteorder("=")
    assert out["scale"].dim() == 0 and out["scale"].dtype == torch.float64
    assert torch.equal(out["nested"]["list"][0], torch.arange(3))
    assert out["nested"]["list"][1] == "name"
    out["template_face"][0, 0] = 99.0  # writable copy, the input is untouched
    assert data["template_face"][0, 0] != 99.0


# ------------------------------------------------------------------------------------------
# malicious pickles
# ------------------------------------------------------------------------------------------


class _Call:
    """Pickles as a call of ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel: Path) -> dict[str, bytes]:
    cmd = f"touch {sentinel}"
    return {
        "os.system": pickle.dumps({"vert": _Call(os.system, cmd)}),
        "os.system protocol 0": pickle.dumps({"vert": _Call(os.system, cmd)}, protocol=0),
        "eval": pickle.dumps(_Call(eval, f"__import__('os').system({cmd!r})")),
        "exec": pickle.dumps(_Call(exec, f"open({str(sentinel)!r}, 'w').close()")),
        "subprocess.Popen": pickle.dumps(_Call(subprocess.Popen, ["touch", str(sentinel)])),
        "getattr": pickle.dumps(_Call(getattr, "x", "upper")),
        "unknown module": b"cevil_module_that_does_not_exist\nrun\n(S'x'\ntR.",
        "posix.system text": f"cposix\nsystem\n(S'{cmd}'\ntR.".encode(),
        "builtins.__import__": b"cbuiltins\n__import__\n(S'os'\ntR.",
        "io.open": pickle.dumps(_Call(open, str(sentinel), "w"), protocol=0),
    }


def test_malicious_pickles_refused_and_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    for name, blob in _payloads(sentinel).items():
        with pytest.raises(UnsafePickleError) as err:
            load_official_pickle(blob)
        msg = str(err.value)
        assert "refused" in msg and "<bytes>" in msg and "nothing was executed" in msg, name
        assert not sentinel.exists(), name
    assert "evil_module_that_does_not_exist" not in sys.modules


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (lambda s: pickle.dumps({"a": _Call(os.system, f"touch {s}")}), "posix.system"),
        (lambda s: pickle.dumps(_Call(eval, "1")), "builtins.eval"),
        (lambda s: pickle.dumps(_Call(subprocess.Popen, ["true"])), "subprocess.Popen"),
        (lambda s: b"cevil_mod\nrun\n(tR.", "evil_mod.run"),
    ],
)
def test_refused_global_is_named(tmp_path, payload, refused):
    path = tmp_path / "NIMBLE_DICT_9.pkl"
    path.write_bytes(payload(tmp_path / "pwned"))
    with pytest.raises(UnsafePickleError) as err:
        load_official_pickle(path)
    expected = refused if refused != "posix.system" else f"{os.system.__module__}.system"
    assert f"'{expected}'" in str(err.value)
    assert str(path) in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_malicious_torch_save_zip(tmp_path):
    sentinel = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"vert": torch.zeros(2), "x": _Call(os.system, f"touch {sentinel}")}, buf)
    with pytest.raises(UnsafePickleError, match="system"):
        load_official_pickle(buf.getvalue())
    assert not sentinel.exists()


def test_malicious_embedded_storage_bytes(tmp_path):
    """torch.storage._load_from_bytes carrying a crafted inner pickle is decoded with weights_only."""
    sentinel = tmp_path / "pwned"
    inner = pickle.dumps(_Call(os.system, f"touch {sentinel}"), protocol=2)
    blob = pickle.dumps({"vert": _Call(torch.storage._load_from_bytes, inner)})
    with pytest.raises(UnsafePickleError, match="system") as err:
        load_official_pickle(blob)
    assert str(err.value).startswith("<bytes> (embedded torch storage)")
    assert not sentinel.exists()


def test_malicious_npy_payload(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "paradict.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {"template_skull": np.zeros(3), "x": _Call(os.system, f"touch {sentinel}")}
    np.save(path, arr, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="system"):
        load_official_pickle(path)
    assert not sentinel.exists()


def test_allowed_globals_with_wrong_arguments():
    """numpy's _reconstruct may only build an ndarray; a tensor needs a real storage."""
    bad_subtype = b"cnumpy.core.multiarray\n_reconstruct\n(ccollections\nOrderedDict\n(I0\ntS'b'\ntR."
    with pytest.raises(UnsafePickleError, match="unexpected way"):
        load_official_pickle(bad_subtype)
    bad_storage = b"ctorch._utils\n_rebuild_tensor_v2\n(S'x'\nI0\n(I1\nt(I1\ntI00\nNtR."
    with pytest.raises(UnsafePickleError, match="unexpected way"):
        load_official_pickle(bad_storage)
    direct_ndarray = b"cnumpy\nndarray\n((I1000000000\nttR."
    with pytest.raises(UnsafePickleError):
        load_official_pickle(direct_ndarray)


# ------------------------------------------------------------------------------------------
# truncated and wrong files
# ------------------------------------------------------------------------------------------


def _truncations(blob: bytes) -> list[bytes]:
    return [blob[:1], blob[: len(blob) // 3], blob[: len(blob) // 2], blob[:-1]]


def test_truncated_files_raise_model_file_error(tmp_path):
    blobs = {"pickle": pickle.dumps(nimble_like())}
    buf = io.BytesIO()
    torch.save(nimble_like(), buf)
    blobs["torch zip"] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, sculptor_like(), allow_pickle=True)
    blobs["npy"] = buf.getvalue()
    for name, blob in blobs.items():
        for cut in _truncations(blob):
            with pytest.raises(ModelFileError) as err:
                load_official_pickle(cut)
            assert type(err.value) is ModelFileError, (name, len(cut), err.value)
            assert "truncated or corrupt" in str(err.value)


def test_empty_missing_and_non_dict(tmp_path):
    with pytest.raises(ModelFileError, match="empty"):
        load_official_pickle(b"")
    with pytest.raises(ModelFileError, match="check the path"):
        load_official_pickle(tmp_path / "missing.pkl")
    with pytest.raises(ModelFileError, match="expected a dict"):
        load_official_pickle(pickle.dumps([torch.zeros(2)]))
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    with pytest.raises(ModelFileError, match="expected a dict"):
        load_official_pickle(buf.getvalue())


def test_package_never_uses_unrestricted_loaders():
    """The repo hook's rule: no unrestricted pickle loading anywhere in the package."""
    root = Path(__file__).resolve().parents[2] / "anatomy"
    forbidden = re.compile(r"pickle\.loads?\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    offenders = [
        f"{p}:{i}" for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert offenders == []
