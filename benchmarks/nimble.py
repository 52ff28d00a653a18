"""The hand layer against the computation done the way the official NIMBLE layer does it.

Model: the embedded default hand (25,047 vertices, 25 joints, 11 shape components) with
NIMBLE-size pose correctives added (171 features, random, 0.1 mm scale) so that both sides
compute every NIMBLE term. Reference ("official style", written from the formulas in
DESIGN.md §4, not from NIMBLE's code): separate shape and pose contractions, joints
regressed from the bone vertices every call, a Python loop over the 25 joints with 4x4
matrices, and dense per-vertex transforms ``(B, 4, 4, V)`` for skinning.
Prints times (reference / layer = speed-up), max abs difference, and peak memory of one
forward+backward in a child process. Run: ``python benchmarks/nimble.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fixed_mmap_env, fwd_bwd, peak_memory_mib, time_call  # noqa: E402

from anatomy.core.rotations import axis_angle_to_matrix  # noqa: E402
from anatomy.io import load_model  # noqa: E402
from anatomy.io.official_nimble import BONE_TO_JOINT, NIMBLE_PARENTS  # noqa: E402
from anatomy.models import Nimble  # noqa: E402
from anatomy.models.nimble import default_hand_path  # noqa: E402


def build() -> tuple[Nimble, dict[str, torch.Tensor]]:
    data = load_model(default_hand_path())
    g = torch.Generator().manual_seed(0)
    num_v = data.num_vertices
    pose_basis = torch.randn(171, num_v, 3, generator=g) * 0.1
    data = replace(data, pose_basis=pose_basis, pose_feature_joints=list(BONE_TO_JOINT[1:]))
    layer = Nimble(data)
    bones = data.tissue("bones")
    dense = {
        "template": data.template.float(),
        "shape": data.spaces["shape"].float(),  # (K, V, 3)
        "pbs": pose_basis.permute(1, 2, 0).contiguous(),  # (V, 3, 171) like all_pbs
        "jreg_bone": data.joint_regressor.to_dense().float()[:, : bones.stop],
        "sw": data.skinning_weights.to_dense().float(),
    }
    return layer, dense


def official_style(pose: torch.Tensor, beta: torch.Tensor, m: dict[str, torch.Tensor]) -> torch.Tensor:
    batch = pose.shape[0]
    v_shaped = m["template"] + torch.einsum("bk,kvc->bvc", beta, m["shape"])
    n_bone = m["jreg_bone"].shape[1]
    joints = torch.einsum("jv,bvc->bjc", m["jreg_bone"], v_shaped[:, :n_bone])
    bone_r = axis_angle_to_matrix(pose)  # (B, 20, 3, 3)
    eye = torch.eye(3)
    feats = (bone_r[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + torch.einsum("vcp,bp->bvc", m["pbs"], feats)
    joint_r = [eye.expand(batch, 3, 3)] * len(NIMBLE_PARENTS)
    for b, j in enumerate(BONE_TO_JOINT):
        joint_r[j] = bone_r[:, b]
    world: list[torch.Tensor] = []
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, 1, 4)
    for j, p in enumerate(NIMBLE_PARENTS):
        t = joints[:, j] - (joints[:, p] if p >= 0 else 0.0)
        local = torch.cat([torch.cat([joint_r[j], t[:, :, None]], 2), bottom], 1)
        world.append(local if p < 0 else world[p] @ local)
    rel = []
    for j in range(len(NIMBLE_PARENTS)):
        g = world[j]
        t = g[:, :3, 3] - (g[:, :3, :3] @ joints[:, j, :, None])[..., 0]
        rel.append(torch.cat([torch.cat([g[:, :3, :3], t[:, :, None]], 2), bottom], 1))
    transforms = torch.stack(rel, 1)  # (B, J, 4, 4)
    per_vertex = torch.einsum("bjmn,vj->bmnv", transforms, m["sw"])  # (B, 4, 4, V)
    homo = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], 2).permute(0, 2, 1)  # (B, 4, V)
    out = (per_vertex * homo[:, None]).sum(2)  # (B, 4, V)
    return out[:, :3].permute(0, 2, 1)


def setup(batch: int) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor],
                               Callable[[Callable[[], torch.Tensor]], Callable[[], None]]]:
    layer, dense = build()
    g = torch.Generator().manual_seed(1)
    pose = (torch.randn(batch, 20, 3, generator=g) * 0.3).requires_grad_()
    beta = torch.randn(batch, 11, generator=g).requires_grad_()

    def ref() -> torch.Tensor:
        return official_style(pose, beta, dense)

    def ours() -> torch.Tensor:
        return layer(pose, beta).vertices

    def fb(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return fwd_bwd(f, pose, beta)

    return ref, ours, fb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 64 only")
    parser.add_argument("--memory-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [1, 64] if args.quick else [1, 64, 1024]
    if args.memory_json:
        peaks = {}
        for b in batches:
            ref, ours, fb = setup(b)
            fb(ours)()
            peaks[b] = [peak_memory_mib(fb(ref)), peak_memory_mib(fb(ours))]
        print(json.dumps(peaks))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"official-style / layer = speed-up")
    for b in batches:
        ref, ours, fb = setup(b)
        reps = 1 if b >= 1024 else 3
        with torch.no_grad():
            diff = float((ref() - ours()).abs().max())
            tr, to = time_call(ref, repeats=reps, min_time=0.05), time_call(ours, repeats=reps, min_time=0.05)
        tbr, tbo = time_call(fb(ref), repeats=reps, min_time=0.05), time_call(fb(ours), repeats=reps, min_time=0.05)
        print(f"B={b:5d}  fwd {tr * 1e3:9.1f} / {to * 1e3:8.1f} ms = {tr / to:5.2f}x   "
              f"fwd+bwd {tbr * 1e3:9.1f} / {tbo * 1e3:8.1f} ms = {tbr / tbo:5.2f}x   max|diff| {diff:.1e} mm",
              flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-json"] + (["--quick"] if args.quick else [])
    done = subprocess.run(cmd, env=fixed_mmap_env(), capture_output=True, text=True, check=True)
    for b, (mr, mo) in json.loads(done.stdout.strip().splitlines()[-1]).items():
        print(f"B={int(b):5d}  peak fwd+bwd {mr:8.1f} / {mo:8.1f} MiB")


if __name__ == "__main__":
    main()
