"""Core LBS forward and forward+backward against an SMPL-style reference, on CPU.

Prints, per model size and batch, the time of the reference and of the core
(``anatomy.core.lbs``), their ratio (reference / core, > 1 means the core is
faster), the max abs difference of the vertices, and the peak memory of each
forward+backward. Run: ``python benchmarks/forward.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_memory_mib, reexec_with_fixed_mmap_threshold, time_call  # noqa: E402
from reference_lbs import reference_lbs  # noqa: E402

from anatomy.core.lbs import blend_skin, prepare  # noqa: E402
from anatomy.core.rotations import axis_angle_to_matrix  # noqa: E402

SIZES = {
    # name: (V, J, K)
    "MANO-like": (778, 16, 10),
    "NIMBLE-like": (14970, 25, 20),
    "SMPL-X-like": (10475, 55, 10),
}


def chain_parents(num_joints: int, fingers: int = 5) -> list[int]:
    """A hand-like tree: root, then ``fingers`` chains of equal length (remainder on the first)."""
    parents = [-1]
    per = (num_joints - 1) // fingers
    extra = (num_joints - 1) - per * fingers
    for f in range(fingers):
        n = per + (extra if f == 0 else 0)
        for i in range(n):
            parents.append(0 if i == 0 else len(parents) - 1)
    return parents


def make_model(num_v: int, num_j: int, num_k: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    parents = chain_parents(num_j)
    template = torch.randn(num_v, 3, generator=g) * 50
    weights = torch.rand(num_v, num_j, generator=g) ** 8
    weights = weights / weights.sum(1, keepdim=True)
    regressor = torch.rand(num_j, num_v, generator=g)
    regressor = regressor / regressor.sum(1, keepdim=True)
    shape = torch.randn(num_k, num_v, 3, generator=g)
    pose = torch.randn(9 * (num_j - 1), num_v, 3, generator=g) * 0.1
    return {"template": template, "weights": weights, "regressor": regressor, "shape": shape,
            "pose": pose, "parents": parents}


def measure(name: str, m: dict, batch: int) -> dict[str, float | str | int]:
    """Time and compare the reference and the core on one model size and batch."""
    parents: list[int] = m["parents"]
    t, w, r, s, p = (m[k] for k in ("template", "weights", "regressor", "shape", "pose"))
    num_j, num_k = len(parents), s.shape[0]
    buffers = prepare(t, w, r, parents, space_bases=s, pose_basis=p, pose_feature_joints=range(1, num_j))
    shapedirs = s.permute(1, 2, 0).contiguous()
    posedirs = p.reshape(p.shape[0], -1).contiguous()
    g = torch.Generator().manual_seed(1)
    aa = (torch.randn(batch, num_j, 3, generator=g) * 0.4).requires_grad_()
    betas = torch.randn(batch, num_k, generator=g).requires_grad_()

    def ref_fwd() -> torch.Tensor:
        return reference_lbs(betas, axis_angle_to_matrix(aa), t, shapedirs, posedirs, r, parents, w)[0]

    def core_fwd() -> torch.Tensor:
        return blend_skin(buffers, axis_angle_to_matrix(aa), betas).vertices

    def fwd_bwd(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            out = f()
            out.backward(torch.ones_like(out))
            aa.grad = None
            betas.grad = None
        return call

    with torch.no_grad():
        diff = float((ref_fwd() - core_fwd()).abs().max())
        repeats = 3 if batch >= 1024 else 5
        tr_f = time_call(ref_fwd, repeats=repeats)
        tc_f = time_call(core_fwd, repeats=repeats)
    tr_b = time_call(fwd_bwd(ref_fwd), repeats=repeats)
    tc_b = time_call(fwd_bwd(core_fwd), repeats=repeats)
    mem_r = peak_memory_mib(fwd_bwd(ref_fwd))
    mem_c = peak_memory_mib(fwd_bwd(core_fwd))
    return {"size": name, "batch": batch, "ref_fwd_ms": tr_f * 1e3, "core_fwd_ms": tc_f * 1e3,
            "fwd_ratio": tr_f / tc_f, "ref_fb_ms": tr_b * 1e3, "core_fb_ms": tc_b * 1e3,
            "fb_ratio": tr_b / tc_b, "ref_peak_mib": mem_r, "core_peak_mib": mem_c, "max_abs_diff_mm": diff}


def run(quick: bool, sizes: list[str] | None = None) -> list[dict[str, float | str | int]]:
    rows = []
    batches = [1, 64] if quick else [1, 64, 1024]
    for name, (num_v, num_j, num_k) in SIZES.items():
        if sizes and name not in sizes:
            continue
        m = make_model(num_v, num_j, num_k)
        for batch in batches:
            r_ = measure(name, m, batch)
            rows.append(r_)
            print(f"{name:12s} B={batch:5d}  fwd {r_['ref_fwd_ms']:9.2f} / {r_['core_fwd_ms']:9.2f} ms "
                  f"= {r_['fwd_ratio']:5.2f}x   fwd+bwd {r_['ref_fb_ms']:9.2f} / {r_['core_fb_ms']:9.2f} ms "
                  f"= {r_['fb_ratio']:5.2f}x   peak {r_['ref_peak_mib']:8.1f} / {r_['core_peak_mib']:8.1f} MiB   "
                  f"max|diff| {r_['max_abs_diff_mm']:.1e} mm", flush=True)
    return rows


def main() -> None:
    reexec_with_fixed_mmap_threshold()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 64 only")
    parser.add_argument("--sizes", nargs="*", choices=list(SIZES), help="model sizes to run (default all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"columns: reference / core = ratio (> 1: core faster)")
    run(args.quick, args.sizes)


if __name__ == "__main__":
    main()
