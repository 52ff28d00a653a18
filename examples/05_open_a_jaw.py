"""Open a jaw: a sweep of the jaw's opening angle from closed to its limit, meshes and renders.

The embedded default head (:class:`anatomy.Sculptor`) opens its mouth in steps from 0 to the jaw's
opening limit (the anatomical angle of ``head.jaw_limits()``: the first angle of the jaw frame,
radians; the limit is set for a 50 mm interincisal opening) while the condyles glide forward
(``jaw_offset``, mm, a growing share of the forward offset limit) as they do in a real opening. Printed
per step: the angle (degrees), the distance between the upper incisal edge and infradentale (the lower
incisors' alveolar crest) and how far the soft-tissue chin (soft pogonion) moved (mm). Written per step:
skull, mandible and face as PLY (mm, RAS+); renders of the sweep (bones in a translucent face, side view)
and of the face closed vs fully open, coloured by how far each skin vertex moved.
Run: ``python examples/05_open_a_jaw.py [--steps 5] [--out DIR]``.
"""

from __future__ import annotations

import math
import warnings

import torch
from _common import base_parser, out_folder

from anatomy import Sculptor
from anatomy.core.rotations import matrix_to_axis_angle
from anatomy.io import write_ply
from anatomy.vis import RenderFallbackWarning, render_before_after, render_model


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="opening steps including closed and the limit")
    args = parser.parse_args()
    out = out_folder(args)
    steps = 3 if args.smoke else max(2, args.steps)
    torch.set_num_threads(1)
    head = Sculptor()
    limits = head.jaw_limits()
    fraction = torch.linspace(0.0, 1.0, steps)
    angles = torch.zeros(steps, 1, 3)
    angles[:, 0, 0] = fraction * limits.upper[0, 0]
    jaw_pose = matrix_to_axis_angle(limits.rotations(angles)[:, 0])
    low, high = head.jaw_offset_limits()
    forward = int(torch.argmax(high.abs()))  # the offset axis with the largest range (condylar glide forward)
    jaw_offset = torch.zeros(steps, 3)
    jaw_offset[:, forward] = 0.5 * fraction * high.reshape(-1)[forward]
    with torch.no_grad():
        result = head(jaw_pose=jaw_pose, jaw_offset=jaw_offset)
    upper, lower = result.landmark("upper_incisal_edge"), result.landmark("infradentale")
    chin = result.landmark("soft_pogonion")
    print(f"{'step':>4} {'opening':>9} {'glide':>8} {'incisal edge - infradentale':>28} {'soft chin moved':>16}")
    for s in range(steps):
        folder = out / f"step{s}"
        folder.mkdir(exist_ok=True)
        for layout in result.layout:
            write_ply(folder / f"{layout.name}.ply", result.tissue(layout.name)[s], layout.faces)
        gap = float((upper[s] - lower[s]).norm())
        moved = float((chin[s] - chin[0]).norm())
        print(f"{s:>4} {math.degrees(float(angles[s, 0, 0])):>7.1f} deg {float(jaw_offset[s, forward]):>5.2f} mm "
              f"{gap:>25.1f} mm {moved:>13.1f} mm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RenderFallbackWarning)
        size = (350, 350) if args.smoke else (500, 500)
        sweep = render_model(result, out / "opening.png", view="right", size=size,
                             titles=[f"{math.degrees(float(a)):.0f} deg" for a in angles[:, 0, 0]])
        with torch.no_grad():
            closed, opened = head(), head(jaw_pose=jaw_pose[-1:], jaw_offset=jaw_offset[-1:])
        change = render_before_after(closed, opened, out / "face_change.png", show=["face"], view="oblique",
                                     size=size, titles=("closed", "open"))
    for w in caught:
        print(f"note: {w.message}")
    print(f"pictures: {sweep}, {change}")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
