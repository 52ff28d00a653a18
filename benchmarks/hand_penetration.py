"""Penetration and joint-limit figures of the default hand over sampled poses.

For ``--poses`` poses from ``Nimble.sample_pose`` (every angle uniform inside its limits,
independently per joint) with random shapes ``beta ~ N(0, 1)``, prints per tissue pair the
largest depth (mm), the share of tested vertices deeper than 0 and 0.5 mm, and the share of
poses with any vertex deeper than 0.5 mm:

* as sampled (plain LBS);
* after ``push_skin_out`` (the skin fix-up);
* bone-bone after ``separate_bones`` (gradient steps on the differentiable penalty; on the
  first ``--separate`` poses, it is the slow part), split
  into articulating neighbours (a bone and its parent bone, i.e. the two sides of a joint)
  and all other pairs (e.g. neighbouring fingers crossing).

Then joint-limit violations of random pose-PCA poses (``N(0, 1)`` coefficients) before and
after ``JointLimits.clamp``, and timings (same run): the penalty's forward+backward against
the layer's forward+backward at batch 64, and the skin fix-up against a per-sample loop done
the way NIMBLE's collision handling does it (trimesh ``contains`` + ray casting along the skin
normals, written from its description; needs ``trimesh`` and ``rtree``).

Run: ``python benchmarks/hand_penetration.py [--poses 1000] [--separate 200] [--chunk 50]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import time_call  # noqa: E402

import anatomy  # noqa: E402
from anatomy.constraints.penetration import PAIRS, TissuePenetration  # noqa: E402
from anatomy.core.geometry import vertex_normals  # noqa: E402
from anatomy.core.rotations import axis_angle_to_matrix  # noqa: E402
from anatomy.io.official_nimble import BONE_TO_JOINT, NIMBLE_PARENTS  # noqa: E402


def articulating(num_bones: int) -> torch.Tensor:
    """``(P, P)`` bool: bones on the two sides of one joint."""
    joint_to_bone = {j: b for b, j in enumerate(BONE_TO_JOINT)}
    mask = torch.zeros(num_bones, num_bones, dtype=torch.bool)
    for b, j in enumerate(BONE_TO_JOINT):
        parent = NIMBLE_PARENTS[j]
        while parent >= 0 and parent not in joint_to_bone:
            parent = NIMBLE_PARENTS[parent]
        if parent >= 0:
            mask[b, joint_to_bone[parent]] = mask[joint_to_bone[parent], b] = True
    return mask


def summary(name: str, depth: torch.Tensor) -> str:
    finite = depth[torch.isfinite(depth)]
    return (f"{name:28s} max {float(finite.max()):6.2f} mm   >0: {100 * float((depth > 0).float().mean()):6.3f} %"
            f"   >0.5 mm: {100 * float((depth > 0.5).float().mean()):6.3f} % of vertices, "
            f"{100 * float((depth > 0.5).any(1).float().mean()):5.1f} % of poses")


def bone_split(pen: TissuePenetration, bones: torch.Tensor,
               neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sd = pen.bone_pair_distances(bones)  # (B, n, P)
    own = neighbours[pen.bone_parts]  # (n, P): articulating with the vertex's bone
    joint = (-sd.masked_fill(~own, float("inf")).amin(-1)).clamp(min=0)
    other = (-sd.masked_fill(own, float("inf")).amin(-1)).clamp(min=0)
    return joint, other


def nimble_style_fixup(skin: np.ndarray, normals: np.ndarray, muscles: np.ndarray, muscle_faces: np.ndarray,
                       surface: np.ndarray) -> np.ndarray:
    """One sample: skin surface vertices inside the muscle mesh are moved along their normal to
    where the ray leaves the muscle, plus 2 mm (NIMBLE's published behaviour)."""
    import trimesh

    mesh = trimesh.Trimesh(muscles, muscle_faces, process=False)
    inside = np.zeros(len(skin), dtype=bool)
    inside[surface] = mesh.contains(skin[surface])
    out = skin.copy()
    if inside.sum() > 1:
        ids = np.nonzero(inside)[0]
        loc, ray, _ = mesh.ray.intersects_location(skin[ids], normals[ids])
        out[ids[ray]] = loc + 2.0 * normals[ids[ray]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poses", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--separate", type=int, default=200, help="poses passed through separate_bones (slow)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = anatomy.Nimble()
    start = time.perf_counter()
    pen = model.penetration()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; penetration tables built "
          f"in {time.perf_counter() - start:.1f} s; {args.poses} poses from sample_pose, beta ~ N(0, 1)")
    g = torch.Generator().manual_seed(0)
    neighbours = articulating(pen.num_parts)
    raw: dict[str, list[torch.Tensor]] = {k: [] for k in PAIRS}
    fixed: dict[str, list[torch.Tensor]] = {"skin_muscle": [], "skin_bone": []}
    split: dict[str, list[torch.Tensor]] = {"joint": [], "other": [], "joint_sep": [], "other_sep": []}
    t_fix = t_sep = 0.0
    for s in range(0, args.poses, args.chunk):
        n = min(args.chunk, args.poses - s)
        pose = model.sample_pose(n, generator=g)
        beta = torch.randn(n, 11, generator=g)
        with torch.no_grad():
            out = model(pose, beta)
            d = pen.depths(out.bones, out.skin, out.muscles)
            for k in PAIRS:
                raw[k].append(getattr(d, k))
            t0 = time.perf_counter()
            fix = model.push_skin_out(out)
            t_fix += time.perf_counter() - t0
            d2 = pen.depths(fix.bones, fix.skin, fix.muscles)
            fixed["skin_muscle"].append(d2.skin_muscle)
            fixed["skin_bone"].append(d2.skin_bone)
            joint, other = bone_split(pen, out.bones, neighbours)
            split["joint"].append(joint)
            split["other"].append(other)
        if s < args.separate:
            t0 = time.perf_counter()
            sep = model.separate_bones(pose, beta)
            t_sep += time.perf_counter() - t0
            with torch.no_grad():
                joint, other = bone_split(pen, model(sep, beta).bones, neighbours)
            split["joint_sep"].append(joint)
            split["other_sep"].append(other)
        print(f"  {s + n} poses", end="\r", flush=True, file=sys.stderr)
    print("\nas sampled (plain LBS):")
    for k in PAIRS:
        print("  " + summary(k, torch.cat(raw[k])))
    print(f"after push_skin_out ({1e3 * t_fix / args.poses:.0f} ms per pose):")
    for k, v in fixed.items():
        print("  " + summary(k, torch.cat(v)))
    n_sep = sum(len(x) for x in split["joint_sep"])
    print(f"bone-bone by kind, as sampled ({args.poses} poses) and after separate_bones (the first {n_sep}, "
          f"{1e3 * t_sep / max(1, n_sep):.0f} ms per pose):")
    for kind, label in (("joint", "articulating"), ("other", "other pairs")):
        print("  " + summary(f"{label}, sampled", torch.cat(split[kind])))
        if split[f"{kind}_sep"]:
            print("  " + summary(f"{label}, separated", torch.cat(split[f"{kind}_sep"])))

    # joint limits on random pose-PCA poses
    pca = anatomy.Nimble(pose_mode="pca")
    limits = model.joint_limits()
    theta = torch.randn(args.poses, pca.num_pose_pca, generator=g)
    with torch.no_grad():
        rot = pca.bone_rotations(theta)
        viol = limits.violation(rot)[:, 1:]
        after = limits.violation(limits.clamp(rot))[:, 1:]
        sampled = limits.violation(axis_angle_to_matrix(model.sample_pose(args.poses, generator=g)))[:, 1:]
    for name, v in (("sample_pose", sampled), ("PCA N(0,1)", viol), ("PCA N(0,1), clamped", after)):
        print(f"joint limits, {name:20s}: {100 * float((v > 1e-4).any(-1).float().mean()):5.1f} % of joints "
              f"outside, {100 * float((v > 1e-4).any(-1).any(-1).float().mean()):5.1f} % of poses, "
              f"largest excess {float(v.max()) * 180 / np.pi:5.1f} deg")

    # timings
    pose = model.sample_pose(64, generator=g).requires_grad_()
    beta = torch.randn(64, 11, generator=g)

    def layer() -> None:
        model(pose, beta).vertices.square().mean().backward()

    def with_penalty(weights: dict[str, float]) -> Callable[[], None]:
        def run() -> None:
            out = model(pose, beta)
            penalty = pen.penalty(out.bones, out.skin, out.muscles, weights=weights)
            (out.vertices.square().mean() + penalty.mean()).backward()
        return run

    t_layer = time_call(layer, repeats=3)
    t_bone = time_call(with_penalty({"skin_muscle": 0.0}), repeats=3)
    t_all = time_call(with_penalty({}), repeats=3)
    print(f"B=64 fwd+bwd: layer {1e3 * t_layer:.0f} ms; + the three bone penalties {1e3 * t_bone:.0f} ms "
          f"({t_bone / t_layer:.1f}x); + all four {1e3 * t_all:.0f} ms ({t_all / t_layer:.1f}x)")
    try:
        import trimesh  # noqa: F401
    except ImportError:
        print("trimesh not installed: NIMBLE-style fix-up not timed")
        return
    with torch.no_grad():
        out = model(pose[:16].detach(), beta[:16])
    skin_t = out.faces("skin")
    normals = vertex_normals(out.skin, skin_t).numpy()
    surface = pen.skin_surface.numpy()
    t0 = time.perf_counter()
    for i in range(16):
        nimble_style_fixup(out.skin[i].numpy(), normals[i], out.muscles[i].numpy(), out.faces("muscles").numpy(),
                           surface)
    t_ref = (time.perf_counter() - t0) / 16
    t0 = time.perf_counter()
    model.push_skin_out(out)
    t_ours = (time.perf_counter() - t0) / 16
    print(f"skin fix-up per pose (16 poses): NIMBLE-style loop {1e3 * t_ref:.0f} ms, push_skin_out "
          f"{1e3 * t_ours:.0f} ms = {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
