"""Add a pose PCA to the embedded default hand (``templates/assets/hand.*``), NIMBLE layout.

Poses are drawn inside the hand's joint limits (``Nimble.joint_limits``, from MyoHand):
half uniformly, half from a grasp synergy in which one per-sample closure level drives
the flexion of every finger joint (with per-joint noise), so the leading components are
closing/opening the hand, as in measured grasp data (Santello et al. 1998, J Neurosci
18:10105, found two synergies explaining > 80 % of static grasp postures). The 57 values of
bones 1..19 (axis-angle) are reduced by PCA and stored as the official NIMBLE pose PCA
extras (``full = basis[:k]^T (theta * pm_std[:k] + pm_mean[:k]) + mean``), so
``Nimble(pose_mode="pca")`` works on the default model.

Run after ``build_model.py``: ``python templates/hand/build_pose_space.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from anatomy.core.rotations import matrix_to_axis_angle
from anatomy.io import load_model, save_model
from anatomy.models import Nimble

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "templates" / "assets" / "hand.safetensors"
NUM_SAMPLES = 8000
NUM_COMPONENTS = 30
SEED = 0


def sample_angles(hand: Nimble, num: int, g: torch.Generator) -> torch.Tensor:
    lim = hand.joint_limits().to(dtype=torch.float64)
    lo, hi = lim.lower, lim.upper
    half = num // 2
    uniform = lo + torch.rand(half, 20, 3, generator=g, dtype=torch.float64) * (hi - lo)
    closure = torch.rand(num - half, 1, 1, generator=g, dtype=torch.float64)
    noise = 0.15 * torch.randn(num - half, 20, 3, generator=g, dtype=torch.float64)
    synergy = lo + (closure + noise).clamp(0, 1) * (hi - lo)
    # abduction and twist stay near neutral in the synergy (a closing hand does not spread)
    mid = torch.minimum(torch.maximum(torch.zeros_like(lo), lo), hi)
    synergy[..., 1:] = mid[..., 1:] + 0.3 * (synergy[..., 1:] - mid[..., 1:])
    angles = torch.cat([uniform, synergy])
    angles[:, 0] = 0.0
    return angles


def main() -> None:
    data = load_model(MODEL)
    hand = Nimble(data, dtype=torch.float64)
    g = torch.Generator().manual_seed(SEED)
    lim = hand.joint_limits()
    rot = lim.rotations(sample_angles(hand, NUM_SAMPLES, g))
    rows = matrix_to_axis_angle(rot)[:, 1:].reshape(NUM_SAMPLES, 57)
    mean = rows.mean(0)
    _, sing, vt = torch.linalg.svd(rows - mean, full_matrices=False)
    std = sing / (NUM_SAMPLES - 1) ** 0.5
    explained = (sing**2).cumsum(0) / (sing**2).sum()
    k = NUM_COMPONENTS
    data.extras["pose_pca_basis"] = vt[:k].float().contiguous()
    data.extras["pose_pca_mean"] = mean.float()
    data.extras["pose_pca_pm_std"] = std[:k].float()
    data.extras["pose_pca_pm_mean"] = torch.zeros(k)
    data.meta.setdefault("provenance", {})["pose_space"] = {
        "script": "templates/hand/build_pose_space.py", "samples": NUM_SAMPLES, "seed": SEED,
        "components": k, "explained_variance": [round(float(x), 4) for x in explained[:k]],
        "method": "PCA of poses sampled within the joint limits (half uniform, half grasp synergy)",
    }
    save_model(data, MODEL, overwrite=True)
    print(f"pose PCA: {k} components explain {float(explained[k - 1]):.3f} of the variance "
          f"(first 2: {float(explained[1]):.3f}, first 10: {float(explained[9]):.3f}); wrote {MODEL}")


if __name__ == "__main__":
    main()
