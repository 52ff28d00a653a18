"""The hand layer against the computation done the way the official NIMBLE layer does it.

Model: the embedded default hand (25,047 vertices, 25 joints, 11 shape components) with
NIMBLE-size pose correctives added (171 features, random, 0.1 mm scale) so that both sides
compute every NIMBLE term. Reference ("official style": the computation pattern of the
published NIMBLE layer, written here from its description, without the collision fix-up):
de-normalised beta against the flattened ``(K, 3V)`` basis with the template repeated per
sample, joints regressed from the bone vertices every call, ``R - I`` pose features against
``all_pbs (V, 3, 171)``, a Python loop over the 25 joints with 4x4 matrices (identity
rotations repeated for the fingertip joints), a second loop filling the ``(B, 4, 4, J)``
relative transforms, and skinning with the ``(V, J)`` weights repeated per sample into
per-vertex transforms ``(B, 4, 4, V)``.
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
    shape = data.spaces["shape"].float()  # (K, V, 3), for normalised beta
    dense = {
        "template": data.template.float(),
        "shape_basis": shape.reshape(shape.shape[0], -1),  # (K, 3V) vertex-major like the official file
        "shape_std": torch.ones(shape.shape[0]),
        "shape_mean": torch.zeros(shape.shape[0]),
        "pbs": pose_basis.permute(1, 2, 0).contiguous(),  # (V, 3, 171) like all_pbs
        "jreg_bone": data.joint_regressor.to_dense().float()[:, : bones.stop],
        "sw": data.skinning_weights.to_dense().float(),
    }
    return layer, dense


def _homogeneous(rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype).expand(rot.shape[0], 1, 4)
    return torch.cat([torch.cat([rot, t], 2), bottom], 1)


def official_style(pose: torch.Tensor, beta: torch.Tensor, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """The NIMBLE layer's published computation pattern (see the module docstring)."""
    batch = pose.shape[0]
    num_v, num_j = m["template"].shape[0], m["sw"].shape[1]
    # shape: de-normalise beta, one matmul against the flattened basis, template repeated per sample
    real = beta * m["shape_std"] + m["shape_mean"]
    v_shaped = (m["shape_basis"].t() @ real.t()).view(num_v, 3, batch).permute(2, 0, 1) \
        + m["template"].unsqueeze(0).repeat(batch, 1, 1)
    joints = torch.matmul(m["jreg_bone"], v_shaped[:, : m["jreg_bone"].shape[1]])  # (B, J, 3)
    # pose: all bone rotations, R - I of bones 1..19 as the corrective features
    bone_r = axis_angle_to_matrix(pose)  # (B, 20, 3, 3)
    eye = torch.eye(3)
    pose_map = (bone_r[:, 1:] - eye).reshape(batch, -1)  # (B, 171)
    v_posed = v_shaped + torch.matmul(m["pbs"], pose_map.t()).permute(2, 0, 1)
    # kinematic chain: a Python loop over the joints with 4x4 matrices
    joint_to_bone = {j: b for b, j in enumerate(BONE_TO_JOINT)}
    chain = [_homogeneous(bone_r[:, 0], joints[:, 0, :, None])]
    for j in range(1, num_j):
        rot = bone_r[:, joint_to_bone[j]] if j in joint_to_bone else eye.repeat(batch, 1, 1)
        parent = NIMBLE_PARENTS[j]
        chain.append(torch.matmul(chain[parent], _homogeneous(rot, (joints[:, j] - joints[:, parent])[:, :, None])))
    rel = torch.zeros(batch, 4, 4, num_j)
    for j in range(num_j):
        homo_j = torch.cat([joints[:, j], torch.zeros(batch, 1)], 1)[:, :, None]
        moved = torch.bmm(chain[j], homo_j)  # (B, 4, 1)
        rel[:, :, :, j] = chain[j] - torch.cat([torch.zeros(batch, 4, 3), moved], 2)
    # skinning: weights repeated per sample, per-vertex 4x4 transforms (B, 4, 4, V)
    weights = m["sw"].unsqueeze(0).repeat(batch, 1, 1)  # (B, V, J)
    per_vertex = torch.einsum("bijk,bkt->bijt", rel, weights.permute(0, 2, 1))
    homo = torch.cat([v_posed.transpose(2, 1), torch.ones(batch, 1, num_v)], 1)  # (B, 4, V)
    out = (per_vertex * homo.unsqueeze(1)).sum(2).transpose(2, 1)
    return out[:, :, :3]


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
