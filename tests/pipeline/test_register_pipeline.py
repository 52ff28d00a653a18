"""anatomy.pipeline: one scan registered into a result folder, many scans resumable, crashes retried."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from anatomy.cli import main
from anatomy.core.errors import ModelFileError, ParameterError
from anatomy.io import read_mesh
from anatomy.learning import read_registrations
from anatomy.pipeline import register_scan
from anatomy.pipeline.runner import ScanJob, find_scans, run_registrations

pytest.importorskip("skimage")
pytest.importorskip("nibabel")

FAST = {"free_form": False, "picture": False, "vertices": 8000, "fit": {"outer": 3, "inner": 20, "max_points": 2000}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from anatomy.scans import make_head_dataset

    root = tmp_path_factory.mktemp("heads")
    make_head_dataset(root, 1, spacing=(2.0, 2.0, 2.0), seed=5)
    return root


def _error(folder: Path, truth: Path, tissue: str) -> float:
    a = np.asarray(read_mesh(folder / f"{tissue}.ply")[0], dtype=np.float64)
    b = np.asarray(read_mesh(truth / f"{tissue}.ply")[0], dtype=np.float64)
    return float(np.linalg.norm(a - b, axis=1).mean())


def test_register_scan_writes_a_complete_folder(dataset, tmp_path):
    scan = dataset / "sub-000" / "ses-pre" / "ct.nii.gz"
    out = tmp_path / "reg"
    report = register_scan("head", scan, out, **{**FAST, "picture": True})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["face.ply", "mandible.ply", "overlay.png", "params.json", "report.json", "residuals.npz",
                     "skull.ply"]
    assert not list(tmp_path.glob("*.partial*"))
    truth = dataset / "sub-000" / "ses-pre"
    # the 2 mm phantom's surfaces are themselves about 1 mm off; the template follows them
    for tissue in ("skull", "mandible", "face"):
        assert _error(out, truth, tissue) < 2.0, tissue
    with np.load(out / "residuals.npz") as res:
        assert res["skull"].shape == (read_mesh(truth / "skull.ply")[0].shape[0],)
        assert float(res["skull"].mean()) == pytest.approx(report["tissues"]["skull"]["registered"]["mean_mm"],
                                                            rel=1e-5)
    saved = json.loads((out / "report.json").read_text())
    assert saved["tissues"]["face"]["registered"]["p95_mm"] < 4.0
    assert "model_refit" in saved["seconds"]  # the head is fitted again to its judged bone targets
    params = json.loads((out / "params.json").read_text())["params"]
    assert set(params) >= {"shape", "trait", "jaw_pose", "global_orient", "transl", "scale"}
    with pytest.raises(ParameterError, match="never overwritten"):
        register_scan("head", scan, out, **FAST)


def test_runner_resumes_and_learning_reads_the_results(dataset, tmp_path):
    jobs = find_scans(dataset)
    assert [j.name for j in jobs] == ["sub-000/ses-pre", "sub-000/ses-post"]
    assert all(j.labels is None for j in jobs)  # CT: segmented from the scan
    out = tmp_path / "regs"
    stale = out / "sub-000" / "ses-post.partial-1-deadbeef"
    stale.mkdir(parents=True)
    (stale / "skull.ply").write_text("half written")
    seen = []
    results = run_registrations("head", jobs, out, workers=0, progress=lambda r, i, n: seen.append((r.status, i, n)),
                                **FAST)
    assert [r.status for r in results] == ["done", "done"]
    assert seen == [("done", 1, 2), ("done", 2, 2)]
    assert not stale.exists()
    again = run_registrations("head", jobs, out, workers=0, **FAST)
    assert [r.status for r in again] == ["skipped", "skipped"]
    import anatomy

    head = anatomy.Sculptor()()
    regs = read_registrations(out, [(t, head.tissue(t).shape[1]) for t in ("skull", "mandible", "face")])
    assert sorted((r.subject, r.session) for r in regs) == [("sub-000", "post"), ("sub-000", "pre")]
    assert "shape" in regs[0].info["params"]


def test_local_worker_crash_is_retried(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("ANATOMY_TEST_CRASH_ONCE", str(tmp_path / "crashed"))
    job = ScanJob("one", str(dataset / "sub-000" / "ses-pre" / "ct.nii.gz"))
    results = run_registrations("head", [job], tmp_path / "out", workers=1, retries=1, **FAST)
    assert results[0].status == "done" and results[0].attempts == 2
    assert (tmp_path / "crashed" / "one").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one"]


def test_dask_cluster_retries_a_killed_worker(dataset, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv("ANATOMY_TEST_CRASH_ONCE", str(tmp_path / "crashed"))
    job = ScanJob("one", str(dataset / "sub-000" / "ses-pre" / "ct.nii.gz"))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        results = run_registrations("head", [job], tmp_path / "out", scheduler=cluster.scheduler_address, retries=1,
                                    **FAST)
    assert results[0].status == "done", results[0].error
    assert (tmp_path / "crashed" / "one").exists()  # the first attempt did die
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one"]


def test_cli_register_and_bad_input(dataset, tmp_path, capsys):
    scan = dataset / "sub-000" / "ses-pre" / "ct.nii.gz"
    out = tmp_path / "cli"
    code = main(["register", "--model", "head", "--scans", str(scan), "--out", str(out), "--workers", "0",
                 "--no-free-form", "--no-picture", "--vertices", "8000"])
    assert code == 0
    table = capsys.readouterr().out
    assert "ct" in table and "done" in table and "skull" in table
    summary = json.loads((out / "register_summary.json").read_text())
    assert summary["results"][0]["status"] == "done"
    assert main(["register", "--scans", str(scan), "--out", str(out), "--workers", "0"]) == 0  # skipped
    assert "skipped" in capsys.readouterr().out
    assert main(["register", "--scans", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ModelFileError, match="does not exist"):
        find_scans(tmp_path / "nothing")
    with pytest.raises(ParameterError, match="share one result folder"):
        run_registrations("head", [ScanJob("a", str(scan)), ScanJob("a", str(scan))], tmp_path / "y")
    with pytest.raises(ParameterError, match="workers"):
        run_registrations("head", [], tmp_path / "z", workers=-1)
    assert os.environ.get("ANATOMY_TEST_CRASH_ONCE") is None


def test_hand_mri_registered_from_its_label_map_and_keypoints(tmp_path):
    from anatomy.scans import make_hand_dataset

    root = tmp_path / "hands"
    make_hand_dataset(root, 1, poses=2, spacing=1.5, seed=3, soft_tissue="skinning")
    jobs = find_scans(root)
    assert [j.name for j in jobs] == ["sub-000/ses-pose00", "sub-000/ses-pose01"]
    assert all(j.labels is not None and len(j.landmarks or {}) == 21 for j in jobs)  # MRI: the label map is used
    job = jobs[1]
    out = tmp_path / "reg"
    report = register_scan("hand", job.scan, out, labels=job.labels, landmarks=job.landmarks, **FAST)
    assert set(report["tissues"]) == {"bones", "muscles", "skin"}
    truth = Path(job.scan).parent
    assert _error(out, truth, "bones") < 1.5
    assert _error(out, truth, "skin") < 2.5
    with np.load(out / "residuals.npz") as res:
        skin = res["skin"]
        assert np.isnan(skin).any() and np.isfinite(skin).any()  # inner nodes of the skin volume: no residual
    assert find_scans(root, labels="never")[0].labels is None
    with pytest.raises(ParameterError, match="labels must be"):
        find_scans(root, labels="sometimes")


def test_a_failed_write_leaves_no_partial_folder(dataset, tmp_path, monkeypatch):
    import sys

    module = sys.modules["anatomy.pipeline.register_scan"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "_npz", broken)
    with pytest.raises(OSError, match="disk full"):
        register_scan("head", dataset / "sub-000" / "ses-pre" / "ct.nii.gz", tmp_path / "r", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_bone_envelopes_fill_the_cavities_of_each_bone():
    # a hollow skull shell with a cavity, a mandible ring below it, soft tissue around both
    from anatomy.pipeline.targets import bone_envelopes
    from anatomy.scans import Segmentation, Tissue, Volume

    x, y, z = np.mgrid[:40, :40, :40]  # array axis 2 is superior (identity affine: RAS)
    r = np.sqrt((x - 20.0) ** 2 + (y - 20.0) ** 2 + (z - 26.0) ** 2)
    labels = np.where(r < 14, int(Tissue.SKIN), int(Tissue.AIR)).astype(np.uint8)
    labels[(r >= 10) & (r < 12)] = int(Tissue.BONE)  # shell: the cavity r < 10 is soft tissue
    ring = np.sqrt((x - 20.0) ** 2 + (y - 20.0) ** 2)
    labels[(z >= 6) & (z < 9) & (ring >= 5) & (ring < 7)] = int(Tissue.MANDIBLE)  # open in 3D, closed in slices
    seg = Segmentation(Volume(labels, np.eye(4), "labels"))
    out = bone_envelopes(seg).labels.data
    assert np.all(out[r < 12] == int(Tissue.BONE))  # the cavity is bone now
    assert np.all(out[(z >= 6) & (z < 9) & (ring < 7)] == int(Tissue.MANDIBLE))
    away = (r >= 14) & ~((z >= 6) & (z < 9) & (ring < 7))
    assert np.array_equal(out[away], labels[away]) and np.array_equal(labels, seg.labels.data)  # input kept
    assert (out == int(Tissue.BONE)).sum() > (labels == int(Tissue.BONE)).sum()
