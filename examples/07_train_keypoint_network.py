"""Train a network through the hand layer: an MLP regresses pose and shape from keypoints.

A small MLP reads the 21 hand keypoints (3D, relative to the wrist; or with ``--input 2d`` their
projection by a pinhole camera) and predicts the hand's pose (19 bone rotations as axis-angle,
radians; the root stays fixed) and shape (normalised coefficients). The prediction goes through the
differentiable :class:`anatomy.Nimble` layer and the loss is measured on what the layer outputs: the
mean distance (mm) of the predicted vertices (bones, muscles, skin) and joints to the true ones. The
training data are synthetic and endless: poses uniform inside the joint limits (``Nimble.sample_pose``),
shapes ~ N(0, 1), optional noise on the keypoints (``--noise`` mm).
Printed: the held-out mean vertex and joint errors (mm) before training and as it goes down; written:
the network's weights (safetensors), the log (JSON) and the training curves (PNG).
Run: ``python examples/07_train_keypoint_network.py [--iterations 500] [--input 3d|2d] [--out DIR]``
(minutes on a CPU; ``--smoke``: a few seconds).
"""

from __future__ import annotations

import json
import time

import torch
from _common import base_parser, out_folder
from torch import nn

from anatomy import Nimble
from anatomy.vis import plot_fit_log

FOCAL_PX, DEPTH_MM = 1000.0, 500.0  # the 2D input's pinhole camera: hand 500 mm in front of it


class KeypointRegressor(nn.Module):
    """Keypoints ``(B, 21, 3 | 2)`` -> pose ``(B, 20, 3)`` axis-angle (root zero) and shape ``(B, K)``."""

    def __init__(self, inputs: int, num_shape: int, width: int = 256) -> None:
        super().__init__()
        self.num_shape = num_shape
        self.body = nn.Sequential(nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU())
        self.head = nn.Linear(width, 19 * 3 + num_shape)
        nn.init.zeros_(self.head.weight)  # start at the flat, mean hand
        nn.init.zeros_(self.head.bias)

    def forward(self, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(keypoints.flatten(1)))
        bones = out[:, :57].view(-1, 19, 3)
        pose = torch.cat([bones.new_zeros(bones.shape[0], 1, 3), bones], 1)
        return pose, out[:, 57:]


def network_input(keypoints: torch.Tensor, mode: str, noise_mm: float, generator: torch.Generator) -> torch.Tensor:
    """Wrist-relative keypoints in units of 100 mm (3D), or their pinhole projection relative to the wrist
    in units of 100 px (2D), after ``noise_mm`` of Gaussian noise on the 3D points."""
    if noise_mm > 0:
        keypoints = keypoints + noise_mm * torch.randn(keypoints.shape, generator=generator)
    if mode == "2d":
        depth = keypoints[..., 2:] + DEPTH_MM
        pixels = FOCAL_PX * keypoints[..., :2] / depth
        return (pixels - pixels[:, :1]) / 100.0
    return (keypoints - keypoints[:, :1]) / 100.0


def draw(hand: Nimble, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (pose, shape) inside the joint limits and the shape space."""
    return hand.sample_pose(batch, generator=generator), torch.randn(batch, hand.space_sizes["shape"],
                                                                       generator=generator)


def errors(hand: Nimble, pose: torch.Tensor, shape: torch.Tensor, target: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean vertex and joint distance (mm) of the layer at (pose, shape) to a target output."""
    out = hand(pose, shape)
    vertex = (out.vertices - target.vertices).norm(dim=-1).mean()  # type: ignore[attr-defined]
    joint = (out.joints - target.joints).norm(dim=-1).mean()  # type: ignore[attr-defined]
    return vertex, joint


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--batch", type=int, default=16, help="samples per step (default 16)")
    parser.add_argument("--input", choices=("3d", "2d"), default="3d", help="3D keypoints or their 2D projection")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise on the keypoints, mm (default 0)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    args = parser.parse_args()
    out = out_folder(args)
    if args.smoke:
        args.iterations, args.batch = 12, 8
    torch.manual_seed(args.seed)
    hand = Nimble()
    hand.requires_grad_(False)
    g_train = torch.Generator().manual_seed(args.seed)
    g_val = torch.Generator().manual_seed(args.seed + 10_000)
    val_pose, val_shape = draw(hand, 8 if args.smoke else 64, g_val)
    with torch.no_grad():
        val_target = hand(val_pose, val_shape)
    val_input = network_input(val_target.keypoints, args.input, args.noise, g_val)
    net = KeypointRegressor(val_input[0].numel(), hand.space_sizes["shape"])
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.iterations, eta_min=args.lr / 10)
    log: list[dict[str, float]] = []

    def evaluate(step: int, loss: float | None, started: float) -> None:
        with torch.no_grad():
            vertex, joint = errors(hand, *net(val_input), val_target)
        row = {"iteration": step, "val_vertex_mm": float(vertex), "val_joint_mm": float(joint)}
        if loss is not None:
            row["train_loss_mm"] = loss
        log.append(row)
        trained = "" if loss is None else f"train loss {loss:6.2f} mm, "
        print(f"step {step:>5}: {trained}held-out vertex error {float(vertex):6.2f} mm, joint error "
              f"{float(joint):6.2f} mm ({time.perf_counter() - started:.0f} s)", flush=True)

    print(f"{args.input.upper()} keypoints -> pose + shape through the hand layer ({hand.num_vertices} vertices), "
          f"{args.iterations} steps of {args.batch}")
    start = time.perf_counter()
    evaluate(0, None, start)
    every = max(1, args.iterations // 10)
    for step in range(1, args.iterations + 1):
        pose, shape = draw(hand, args.batch, g_train)
        with torch.no_grad():
            target = hand(pose, shape)
        pred_pose, pred_shape = net(network_input(target.keypoints, args.input, args.noise, g_train))
        vertex, joint = errors(hand, pred_pose, pred_shape, target)
        loss = vertex + joint  # mm: every vertex of every tissue, and the joints
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % every == 0 or step == args.iterations:
            evaluate(step, loss.item(), start)
    first, last = log[0], log[-1]
    print(f"held-out vertex error {first['val_vertex_mm']:.2f} -> {last['val_vertex_mm']:.2f} mm, joint error "
          f"{first['val_joint_mm']:.2f} -> {last['val_joint_mm']:.2f} mm in {time.perf_counter() - start:.0f} s")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "keypoint_regressor.safetensors"),
              metadata={"input": args.input, "iterations": str(args.iterations)})
    (out / "training_log.json").write_text(json.dumps({"units": "mm", "log": log}, indent=1))
    plot_fit_log(log, out / "training.png", ylabel="mean error (mm)",
                 title=f"keypoints ({args.input}) -> Nimble pose + shape")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
