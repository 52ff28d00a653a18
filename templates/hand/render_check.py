"""Check picture of the built hand geometry (matplotlib, off-screen).

    python templates/hand/render_check.py [templates/hand/build/hand_geometry.npz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def render(arrays, joint_names, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    bv, bf, bid = arrays["bone_verts"], arrays["bone_faces"], arrays["bone_vert_id"]
    sv, sf = arrays["skin_verts"], arrays["skin_faces"]
    J, par = arrays["joints"], arrays["joint_parents"]
    cmap = plt.get_cmap("tab20")
    views = [("palmar (+z toward viewer)", 90, -90), ("dorsal", -90, -90),
             ("radial side (thumb)", 0, 0), ("oblique", 35, -60)]
    fig = plt.figure(figsize=(16, 9), dpi=90)
    light = np.array([0.3, -0.4, 0.85])
    for k, (title, elev, azim) in enumerate(views):
        for row, with_skin in enumerate((False, True)):
            ax = fig.add_subplot(2, 4, 1 + k + 4 * row, projection="3d")
            tri = bv[bf]
            nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
            shade = 0.45 + 0.55 * np.abs(nrm @ light)[:, None]
            col = np.asarray([cmap(int(b) % 20)[:3] for b in bid[bf[:, 0]]]) * shade
            ax.add_collection3d(Poly3DCollection(tri, facecolors=col, edgecolors="none",
                                                 alpha=0.35 if with_skin else 1.0))
            if with_skin:
                st = sv[sf]
                sn = np.cross(st[:, 1] - st[:, 0], st[:, 2] - st[:, 0])
                sn /= np.linalg.norm(sn, axis=1, keepdims=True) + 1e-12
                ssh = 0.5 + 0.5 * np.abs(sn @ light)[:, None]
                ax.add_collection3d(Poly3DCollection(st, facecolors=np.array([0.95, 0.75, 0.62]) * ssh,
                                                     edgecolors="none", alpha=0.25))
            else:
                ax.scatter(*J.T, c="k", s=8, depthshade=False)
                for j, p in enumerate(par):
                    if p >= 0:
                        ax.plot(*np.stack([J[p], J[j]]).T, c="r", lw=1)
            allp = np.concatenate([bv, sv])
            c = 0.5 * (allp.min(0) + allp.max(0))
            r = 0.5 * (allp.max(0) - allp.min(0)).max()
            ax.set_xlim(c[0] - r, c[0] + r)
            ax.set_ylim(c[1] - r, c[1] + r)
            ax.set_zlim(c[2] - r, c[2] + r)
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(elev=elev, azim=azim)
            ax.set_xlabel("x radial")
            ax.set_ylabel("y distal")
            ax.set_zlabel("z palmar")
            ax.set_title(("skin + bones, " if with_skin else "bones + joints, ") + title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


if __name__ == "__main__":
    p = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "build" / "hand_geometry.npz"
    d = dict(np.load(p))
    render(d, None, p.with_suffix(".png"))
