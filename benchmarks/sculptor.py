"""The head layer against an official-style SCULPTOR computation, at the released sizes.

Model: a synthetic ``paradict`` with the official key layout and the released counts (skull
27,051 v, face 10,710 v, 10 trait + 50 shape components, 2 joints, 9 pose-corrective features),
random values, loaded with ``Sculptor.from_official`` (mandible kept in the skull, so both sides
produce the official ``[skull | face]`` stack). Reference ("official style", written from the
formulas in DESIGN.md §5): the 60 shape/trait directions contracted with ``einsum``, the joints
regressed every call, the correctives as one matmul, a Python loop over the joints with 4x4
matrices, per-vertex transforms ``W @ A -> (B, V, 4, 4)`` applied to homogeneous points.
Prints times (reference / layer = speed-up) and the max abs difference; also the embedded
default head's own forward times. Run: ``python benchmarks/sculptor.py [--batches 1 64]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fwd_bwd, time_call  # noqa: E402

from anatomy import Sculptor  # noqa: E402
from anatomy.core.rotations import axis_angle_to_matrix  # noqa: E402

SKULL_V, FACE_V, FACE_QUADS, SKULL_FACES = 27051, 10710, 10606, 54110


def synthetic_paradict(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    num_v = SKULL_V + FACE_V
    jaw = np.arange(SKULL_V) >= SKULL_V // 2  # second half of the skull = mandible
    weights = np.zeros((num_v, 2))
    weights[:SKULL_V, 0], weights[:SKULL_V, 1] = ~jaw, jaw
    lower = rng.random(FACE_V)
    weights[SKULL_V:, 0], weights[SKULL_V:, 1] = lower, 1 - lower
    jreg = np.zeros((2, num_v))
    jreg[0, : SKULL_V // 2] = 2.0 / SKULL_V
    jreg[1, SKULL_V - 100: SKULL_V] = 0.01
    half = SKULL_V // 2
    skull_faces = np.concatenate([rng.integers(0, half, (SKULL_FACES // 2, 3)),
                                  rng.integers(half, SKULL_V, (SKULL_FACES // 2, 3))])

    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.normal(size=shape) * scale).astype(np.float32)

    return {
        "template_skull": normal(SKULL_V, 3, scale=50), "template_face": normal(FACE_V, 3, scale=50),
        "skullmesh_face": skull_faces, "facialmesh_face": rng.integers(0, FACE_V, (FACE_QUADS, 4)),
        "skull_shape": normal(50, SKULL_V, 3), "face_shape": normal(50, FACE_V, 3),
        "skull_div": normal(10, SKULL_V, 3), "face_div": normal(10, FACE_V, 3),
        "J_reg": jreg, "parents": np.array([-1, 0]), "pose_dir": normal(9, 3 * num_v), "lbs_weights": weights,
    }


def official_style(pd: dict[str, np.ndarray]):  # noqa: ANN201
    def t(key: str) -> torch.Tensor:
        return torch.as_tensor(np.asarray(pd[key]), dtype=torch.float32)

    template = torch.cat([t("template_skull"), t("template_face")])
    trait = torch.cat([t("skull_div"), t("face_div")], 1)
    shape = torch.cat([t("skull_shape"), t("face_shape")], 1)
    dirs = torch.cat([trait, shape]).permute(1, 2, 0).contiguous()  # (V, 3, 60)
    jreg, pose_dir, weights = t("J_reg"), t("pose_dir"), t("lbs_weights")
    num_v = template.shape[0]

    def run(beta: torch.Tensor, pose: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        batch = beta.shape[0]
        v = template + torch.einsum("bl,vcl->bvc", beta, dirs)
        joints = torch.einsum("jv,bvc->bjc", jreg, v)
        rot = axis_angle_to_matrix(pose.view(batch, 2, 3))
        feats = (rot[:, 1:] - torch.eye(3)).reshape(batch, -1)
        v_posed = v + (feats @ pose_dir).view(batch, -1, 3)
        rel = torch.stack([joints[:, 0], joints[:, 1] - joints[:, 0] + offset], 1)
        chain: list[torch.Tensor] = []
        for j, parent in enumerate((-1, 0)):
            local = torch.cat([F.pad(rot[:, j], (0, 0, 0, 1)), F.pad(rel[:, j, :, None], (0, 0, 0, 1), value=1.0)], -1)
            chain.append(local if parent < 0 else chain[parent] @ local)
        world = torch.stack(chain, 1)  # (B, 2, 4, 4)
        moved = world @ F.pad(joints[..., None], (0, 0, 0, 1))
        relative = world - F.pad(moved, (3, 0))
        per_vertex = (weights @ relative.view(batch, 2, 16)).view(batch, -1, 4, 4)
        homo = torch.cat([v_posed, torch.ones(batch, num_v, 1)], -1)
        return (per_vertex @ homo[..., None])[:, :, :3, 0]

    return run


def compare(layer: Sculptor, reference, batch: int) -> str:  # noqa: ANN001
    g = torch.Generator().manual_seed(batch)
    beta = torch.randn(batch, 60, generator=g)
    pose = torch.randn(batch, 6, generator=g) * 0.2
    offset = torch.randn(batch, 3, generator=g)

    def ours(b: torch.Tensor, p: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return layer(**layer.official_inputs(b, p, o)).vertices

    with torch.no_grad():
        diff = float((layer.to_official_order(ours(beta, pose, offset)) - reference(beta, pose, offset)).abs().max())
        t_ref = time_call(lambda: reference(beta, pose, offset), repeats=3)
        t_ours = time_call(lambda: ours(beta, pose, offset), repeats=3)
    grads = [x.clone().requires_grad_() for x in (beta, pose, offset)]
    b_ref = time_call(fwd_bwd(lambda: reference(*grads), *grads), repeats=3)
    b_ours = time_call(fwd_bwd(lambda: ours(*grads), *grads), repeats=3)
    return (f"B={batch:5d}  fwd {t_ref * 1e3:8.1f} / {t_ours * 1e3:8.1f} ms = {t_ref / t_ours:4.2f}x   "
            f"fwd+bwd {b_ref * 1e3:8.1f} / {b_ours * 1e3:8.1f} ms = {b_ref / b_ours:4.2f}x   max|diff| {diff:.1e} mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    pd = synthetic_paradict()
    layer = Sculptor.from_official(pd, split_mandible=False)
    reference = official_style(pd)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; official SCULPTOR size "
          f"({SKULL_V + FACE_V:,} v); official-style / layer = speed-up")
    for batch in args.batches:
        print(compare(layer, reference, batch), flush=True)
    head = Sculptor()
    for batch in args.batches:
        shapes = torch.randn(batch, 10)
        t_head = time_call(lambda s=shapes: head(shape=s), repeats=3)
        print(f"default head ({head.num_vertices:,} v) B={batch:5d}  forward {t_head * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
