"""Pose a hand: named poses and random poses inside the joint limits, meshes per tissue and a render.

The embedded default hand (:class:`anatomy.Nimble`) is posed flat, as a fist, pointing, and in random
poses drawn uniformly inside its anatomical joint limits (``Nimble.sample_pose``), with a random shape.
Poses are built from anatomical angles (flexion, abduction, twist per bone, radians) through the
hand's joint frames (``hand.joint_limits().rotations``), so "flex the index 80 %" means the same on
every hand. For each pose the bones, muscles and skin are written as PLY (mm, hand frame: +x radial,
+y distal, +z palmar), the 21 keypoints as JSON, and all poses are rendered side by side (bones and
muscles under a translucent skin; pyvista off-screen, or matplotlib with a note).
Printed per pose: the largest limit violation (0 inside the limits), the thumb-index tip distance
and the hand's length (wrist to middle fingertip), in mm.
Run: ``python examples/04_pose_a_hand.py [--random 4] [--out DIR]``.
"""

from __future__ import annotations

import json
import time
import warnings

import torch
from _common import base_parser, out_folder

from anatomy import Nimble
from anatomy.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from anatomy.io import write_ply
from anatomy.vis import RenderFallbackWarning, render_model

THUMB, INDEX, MIDDLE, RING, LITTLE = (1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15), (16, 17, 18, 19)


def named_pose(hand: Nimble, flex: dict[tuple[int, ...], float]) -> torch.Tensor:
    """``(1, 20, 3)`` axis-angle pose bending each listed finger's bones to a fraction of its flexion limit."""
    limits = hand.joint_limits()
    angles = torch.zeros(1, 20, 3)
    for bones, fraction in flex.items():
        for b in bones:
            top = limits.upper[b, 0] if fraction >= 0 else -limits.lower[b, 0]
            angles[0, b, 0] = fraction * top
    return matrix_to_axis_angle(limits.rotations(angles))


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=4, help="random poses inside the limits (default 4)")
    args = parser.parse_args()
    out = out_folder(args)
    torch.set_num_threads(1)
    hand = Nimble()
    poses = {"flat": torch.zeros(1, 20, 3),
             "fist": named_pose(hand, {THUMB: -0.6, INDEX: 0.85, MIDDLE: 0.85, RING: 0.85, LITTLE: 0.85})}
    if not args.smoke:
        poses["point"] = named_pose(hand, {THUMB: -0.6, MIDDLE: 0.9, RING: 0.9, LITTLE: 0.9})
        sampled = hand.sample_pose(args.random, generator=torch.Generator().manual_seed(args.seed))
        poses.update({f"random{i}": sampled[i:i + 1] for i in range(args.random)})
    shape = torch.randn(1, hand.space_sizes["shape"], generator=torch.Generator().manual_seed(args.seed + 1))
    batch = torch.cat(list(poses.values()))
    start = time.perf_counter()
    with torch.no_grad():
        result = hand(batch, shape)
    print(f"posed {len(poses)} hands ({hand.num_vertices} vertices each) in {time.perf_counter() - start:.3f} s")
    limits = hand.joint_limits()
    violation = limits.violation(axis_angle_to_matrix(batch))[:, 1:].abs().amax(dim=(1, 2))  # the root is free
    names = hand.keypoint_names
    tip = {n: names.index(n) for n in names}
    print(f"{'pose':<9} {'limit violation':>16} {'thumb-index tips':>17} {'wrist-middle tip':>17}")
    for b, name in enumerate(poses):
        folder = out / name
        folder.mkdir(exist_ok=True)
        for layout in result.layout:
            write_ply(folder / f"{layout.name}.ply", result.tissue(layout.name)[b], layout.faces)
        kp = result.keypoints[b]
        (folder / "keypoints.json").write_text(json.dumps({"units": "mm", "names": list(names),
                                                           "keypoints": kp.tolist()}, indent=1))
        pinch = float((kp[tip[names[4]]] - kp[tip[names[8]]]).norm())
        length = float((kp[0] - kp[tip[names[12]]]).norm())
        print(f"{name:<9} {float(violation[b]):>13.2e} rad {pinch:>14.1f} mm {length:>14.1f} mm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RenderFallbackWarning)
        picture = render_model(result, out / "hands.png", titles=list(poses), size=(400, 400) if args.smoke
                               else (600, 600))
    for w in caught:
        print(f"note: {w.message}")
    print(f"picture: {picture}")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
