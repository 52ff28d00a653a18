"""Fit the hand to keypoints: 21 3D keypoints (e.g. a hand-pose network's output) and 2D keypoints in two views.

Random hands of the embedded default hand (pose inside the joint limits, shape ~ N(0, 1), any orientation)
give their 21 keypoints (``Nimble.keypoint_names``: wrist, then thumb CMC..tip, then index..little MCP, PIP,
DIP, tip) with 1 mm of noise, and their projections into two pinhole cameras 500 mm away (f = 1000 px,
1.5 px of noise). ``anatomy.fit`` recovers pose and shape from each (a batch of hands at once; the hand's
keypoint fits are Levenberg-Marquardt with the joint limits as bounds). Printed: the mean keypoint and
vertex errors against the true hands (mm) and the fit's seconds; written: the first hand's true and fitted
skin (PLY) and the fitted parameters (JSON).
Run: ``python examples/08_fit_hand_to_keypoints.py [--hands 64] [--out DIR]``.
"""

from __future__ import annotations

import json

import torch
from _common import base_parser, out_folder

import anatomy
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.fitting import Keypoints2D, Keypoints3D, PinholeCamera
from anatomy.io import write_ply


def camera(angle: float) -> PinholeCamera:
    """A camera 500 mm from the origin on a circle about the y axis, looking at it."""
    rot = axis_angle_to_matrix(torch.tensor([0.0, angle, 0.0]))
    return PinholeCamera(fx=1000.0, fy=1000.0, cx=320.0, cy=240.0, rotation=rot,
                         translation=torch.tensor([0.0, 0.0, 500.0]))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--hands", type=int, default=64, help="hands fitted at once (default 64)")
    args = parser.parse_args()
    out = out_folder(args)
    torch.set_num_threads(1)
    hands = 4 if args.smoke else args.hands
    hand = anatomy.Nimble()
    g = torch.Generator().manual_seed(args.seed)
    truth = {"pose": hand.sample_pose(hands, generator=g), "shape": torch.randn(hands, 11, generator=g),
             "global_orient": 0.5 * torch.randn(hands, 3, generator=g)}
    with torch.no_grad():
        true = hand(**truth)
    for label, target in (
        ("21 3D keypoints, 1 mm noise", Keypoints3D(true.keypoints + torch.randn(true.keypoints.shape, generator=g))),
        ("2D keypoints in 2 views, 1.5 px noise", [
            Keypoints2D(cam.project(true.keypoints) + 1.5 * torch.randn(hands, 21, 2, generator=g), camera=cam)
            for cam in (camera(-0.5), camera(0.5))]),
    ):
        res = anatomy.fit(hand, target)
        kp = (res.output.keypoints - true.keypoints).norm(dim=-1).mean()
        verts = (res.output.vertices - true.vertices).norm(dim=-1).mean()
        print(f"{label:<40} {hands} hands: keypoints {float(kp):.2f} mm, vertices {float(verts):.2f} mm, "
              f"{res.report['seconds']:.1f} s")
    skin = [t for t in hand.layout if t.name == "skin"][0]
    write_ply(out / "true_skin.ply", true.vertices[0, skin.start:skin.stop], skin.faces)
    write_ply(out / "fitted_skin.ply", res.output.vertices[0, skin.start:skin.stop], skin.faces)
    (out / "params.json").write_text(json.dumps({k: v[0].tolist() for k, v in res.params.items()}, indent=1))
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
