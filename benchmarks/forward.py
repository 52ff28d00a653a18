"""Core LBS forward and forward+backward against an SMPL-style reference, on CPU.

Prints, per model size and batch, the time of the reference and of the core
(``anatomy.core.lbs``), their ratio (reference / core, > 1 means the core is
faster) and the max abs difference of the vertices; then the peak memory of one
forward+backward of each, measured in a child process (see ``common.fixed_mmap_env``).
Run: ``python benchmarks/forward.py [--quick] [--sizes ...] [--threads N] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fixed_mmap_env, fwd_bwd, peak_memory_mib, time_call  # noqa: E402
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


def _setup(m: dict, batch: int) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor],
                                         Callable[[Callable[[], torch.Tensor]], Callable[[], None]]]:
    """The reference and core forward closures and a forward+backward wrapper."""
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

    def fb(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return fwd_bwd(f, aa, betas)

    return ref_fwd, core_fwd, fb


def measure_time(m: dict, batch: int) -> dict[str, float]:
    """Forward and forward+backward times (ms) of reference and core, and their max difference."""
    ref_fwd, core_fwd, fb = _setup(m, batch)
    repeats = 3 if batch >= 1024 else 5
    with torch.no_grad():
        diff = float((ref_fwd() - core_fwd()).abs().max())
        tr_f = time_call(ref_fwd, repeats=repeats)
        tc_f = time_call(core_fwd, repeats=repeats)
    tr_b = time_call(fb(ref_fwd), repeats=repeats)
    tc_b = time_call(fb(core_fwd), repeats=repeats)
    return {"ref_fwd_ms": tr_f * 1e3, "core_fwd_ms": tc_f * 1e3, "ref_fb_ms": tr_b * 1e3,
            "core_fb_ms": tc_b * 1e3, "max_abs_diff_mm": diff}


def measure_memory(m: dict, batch: int) -> dict[str, float]:
    """Peak resident memory (MiB) of one forward+backward of reference and core."""
    ref_fwd, core_fwd, fb = _setup(m, batch)
    fb(core_fwd)()  # warm-up: library workspaces, kernels
    return {"ref_peak_mib": peak_memory_mib(fb(ref_fwd)), "core_peak_mib": peak_memory_mib(fb(core_fwd))}


def configs(quick: bool, sizes: list[str] | None) -> list[tuple[str, int]]:
    batches = [1, 64] if quick else [1, 64, 1024]
    return [(name, b) for name in SIZES if not sizes or name in sizes for b in batches]


def memory_in_child(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run the memory measurements in a child process with glibc's mmap threshold fixed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-json"]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--sizes", *args.sizes] if args.sizes else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(cmd, env=fixed_mmap_env(), capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 64 only")
    parser.add_argument("--sizes", nargs="*", choices=list(SIZES), help="model sizes to run (default all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--memory-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {name: make_model(*SIZES[name]) for name in SIZES if not args.sizes or name in args.sizes}
    if args.memory_json:
        peaks = {f"{n}/{b}": measure_memory(models[n], b) for n, b in configs(args.quick, args.sizes)}
        print(json.dumps(peaks))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"columns: reference / core = ratio (> 1: core faster)")
    for name, batch in configs(args.quick, args.sizes):
        r = measure_time(models[name], batch)
        print(f"{name:12s} B={batch:5d}  fwd {r['ref_fwd_ms']:9.2f} / {r['core_fwd_ms']:9.2f} ms "
              f"= {r['ref_fwd_ms'] / r['core_fwd_ms']:5.2f}x   fwd+bwd {r['ref_fb_ms']:9.2f} / "
              f"{r['core_fb_ms']:9.2f} ms = {r['ref_fb_ms'] / r['core_fb_ms']:5.2f}x   "
              f"max|diff| {r['max_abs_diff_mm']:.1e} mm", flush=True)
    if args.no_memory:
        return
    print("peak resident memory of one forward+backward, reference / core (child process, fixed mmap threshold):")
    for key, p in memory_in_child(args).items():
        name, batch = key.split("/")
        ratio = p["ref_peak_mib"] / p["core_peak_mib"] if p["core_peak_mib"] >= 1.0 else float("nan")
        print(f"{name:12s} B={int(batch):5d}  {p['ref_peak_mib']:8.1f} / {p['core_peak_mib']:8.1f} MiB "
              f"= {ratio:5.2f}x less" + (" (core under 1 MiB: below the resolution)" if ratio != ratio else ""),
              flush=True)


if __name__ == "__main__":
    main()
