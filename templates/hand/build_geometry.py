"""Build the geometry of the embedded default hand (bones, joints, axes/ranges, skin).

    python templates/hand/build_geometry.py [--wheel PATH] [--no-render]

Source: the right-hand bone meshes and the MuJoCo kinematic chain of the ``myo-sim`` wheel
(Apache-2.0), fetched with ``pip download --no-deps`` into ``templates/_cache/`` and read as a zip.
Output: ``templates/hand/build/hand_geometry.npz`` (+ a check picture and a JSON report). See
``templates/hand/README.md`` for the frame, the keys and the measured figures.

Build-time tools only (``templates/requirements-build.txt``): trimesh, rtree, pymeshfix,
fast-simplification, scikit-image, scipy, matplotlib. The ``anatomy`` package imports none of this.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import myo_source  # noqa: E402
import skin_sdf  # noqa: E402

REPO = HERE.parent.parent
CACHE = REPO / "templates" / "_cache"
OUT = HERE / "build"

# ----------------------------------------------------------------------------- NIMBLE tables
# DESIGN.md section 4.
BONE_NAMES = [
    "carpal", "met1", "pro1", "dis1",
    "met2", "pro2", "int2", "dis2",
    "met3", "pro3", "int3", "dis3",
    "met4", "pro4", "int4", "dis4",
    "met5", "pro5", "int5", "dis5",
]
JOINT_NAMES = ["carpal"]
JOINT_PARENTS = [-1]
for _f, _chain in enumerate([["met1", "pro1", "dis1"]] + [[f"met{d}", f"pro{d}", f"int{d}", f"dis{d}"]
                                                          for d in range(2, 6)]):
    for _k, _n in enumerate(_chain + [_chain[-1] + "_end"]):
        JOINT_PARENTS.append(0 if _k == 0 else len(JOINT_NAMES) - 1)
        JOINT_NAMES.append(_n)
BONE_TO_JOINT = [JOINT_NAMES.index(n) for n in BONE_NAMES]  # joint at each bone's proximal end
END_JOINTS = [i for i, n in enumerate(JOINT_NAMES) if n.endswith("_end")]
CARPAL_BODIES = ["scaphoid_r", "lunate_r", "triquetrum_r", "pisiform_r",
                 "trapezium_r", "trapezoid_r", "capitate_r", "hamate_r"]
BONE_BODIES = {b: [n for n, k in myo_source.BODY_TO_BONE.items() if k == b] for b in range(20)}
BONE_BODIES[0] = CARPAL_BODIES

# MuJoCo joint name -> (NIMBLE joint, dof slot). Slot 0 = flexion/extension, slot 1 =
# abduction/adduction (radial/ulnar deviation for the wrist). MuJoCo applies the joints of one body
# in XML order; that order is kept in ``joint_dof_order``.
_MJ_FIXED = {"flexion": (0, 0), "deviation": (0, 1), "cmc_flexion": (1, 0), "cmc_abduction": (1, 1),
             "mp_flexion": (2, 0), "ip_flexion": (3, 0)}


def mj_joint_slot(name: str) -> tuple[int, int]:
    """MuJoCo joint name (with or without the ``_r`` suffix, which MyoHand uses unevenly) ->
    (NIMBLE joint, dof slot)."""
    base = name[:-2] if name.endswith("_r") else name
    if base in _MJ_FIXED:
        return _MJ_FIXED[base]
    for prefix, step in (("mcp", 1), ("pm", 2), ("md", 3)):
        if base.startswith(prefix) and base[len(prefix)].isdigit():
            d = int(base[len(prefix)])
            kind = base[len(prefix) + 2:]
            slot = {"flexion": 0, "abduction": 1}[kind]
            return JOINT_NAMES.index(f"met{d}") + step, slot
    raise KeyError(f"unmapped MuJoCo joint {name}")


TARGET_BONE_VERTS = 3300  # NIMBLE: 3,345
FLOOR_VERTS = 48  # per source mesh (each carpal, each long bone)
SEED = 0


# ----------------------------------------------------------------------------- geometry helpers
def sphere_fit(p: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere through points."""
    a = np.c_[2 * p, np.ones(len(p))]
    x = np.linalg.lstsq(a, (p ** 2).sum(1), rcond=None)[0]
    c = x[:3]
    return c, float(np.sqrt(x[3] + c @ c))


def surface_samples(tm, n: int) -> np.ndarray:
    import trimesh
    pts, _ = trimesh.sample.sample_surface_even(tm, n, seed=SEED)
    return np.concatenate([pts, tm.vertices])


def articular_midpoint(parent_pts: np.ndarray, child_pts: np.ndarray, band: float = 2.5):
    """Midpoint of the two facing articular patches: the points of each bone within ``band`` mm
    of the smallest bone-to-bone gap. Returns (midpoint, gap, parent patch points)."""
    from scipy.spatial import cKDTree
    dc, _ = cKDTree(parent_pts).query(child_pts)
    dp, _ = cKDTree(child_pts).query(parent_pts)
    gap = float(min(dc.min(), dp.min()))
    pc, pp = child_pts[dc < gap + band], parent_pts[dp < gap + band]
    return 0.5 * (pc.mean(0) + pp.mean(0)), gap, pp


def repair(v: np.ndarray, f: np.ndarray):
    """Welded, watertight, consistently wound single-component mesh."""
    import pymeshfix
    import trimesh
    tm = trimesh.Trimesh(v, f, process=True)
    if not tm.is_watertight or tm.body_count != 1:
        v2, f2 = pymeshfix.clean_from_arrays(np.ascontiguousarray(tm.vertices, dtype=np.float64),
                                             np.ascontiguousarray(tm.faces, dtype=np.int32))
        tm = trimesh.Trimesh(v2, f2, process=True)
    trimesh.repair.fix_normals(tm)
    if not tm.is_watertight:
        raise RuntimeError("mesh still open after repair")
    return tm


def voxel_remesh(tm, pitch: float = 0.2):
    """Closed genus-0 rebuild of a mesh that has tunnels (the wheel's pisiform has genus 9 and
    the 5th distal phalanx genus 1: scan artefacts) or whose decimation keeps breaking: fill a
    voxel grid, close it morphologically just enough to remove the tunnels, blur slightly and
    take the 0.5 iso-surface."""
    import trimesh
    from scipy import ndimage
    from skimage import measure
    vox = tm.voxelized(pitch).fill()
    pad = 12
    base = np.pad(vox.matrix, pad)
    tr = np.asarray(vox.transform)
    struct = ndimage.generate_binary_structure(3, 1)
    for it in range(0, 11):
        mat = ndimage.binary_closing(base, structure=struct, iterations=it) if it else base
        mat = ndimage.binary_fill_holes(mat)
        g = ndimage.gaussian_filter(mat.astype(np.float64), 0.8)
        v, f, _, _ = measure.marching_cubes(g, 0.5)
        out = trimesh.Trimesh((v - pad) @ tr[:3, :3].T + tr[:3, 3], f[:, ::-1], process=True)
        if out.is_watertight and out.body_count == 1 and out.euler_number == 2:
            trimesh.repair.fix_normals(out)
            return out
    raise RuntimeError("voxel remesh did not reach a closed genus-0 surface")


def _quadric(tm, n_verts: int, agg: float):
    import fast_simplification
    import trimesh
    v, f = fast_simplification.simplify(np.asarray(tm.vertices, dtype=np.float64),
                                        np.asarray(tm.faces, dtype=np.int32),
                                        target_count=int(2 * n_verts - 4), agg=agg)
    return trimesh.Trimesh(v, f, process=True)


def decimate(tm, n_verts: int):
    """Quadric decimation to about ``n_verts`` vertices (closed genus-0: F = 2V - 4). The result
    must be one closed genus-0 component with no more than 3 % of the area changed; if no
    aggressiveness gives that (or the source is not genus 0), the source is first rebuilt from
    voxels (``voxel_remesh``) and decimated again."""
    import trimesh

    def ok(m, ref):
        return (m.is_watertight and m.body_count == 1 and m.euler_number == 2
                and abs(m.area / ref.area - 1) < 0.03 and len(m.vertices) <= 1.2 * n_verts)

    for source in (tm if tm.euler_number == 2 else None, None):
        if source is None:
            source = voxel_remesh(tm)
        for dn in (0, 6, -6, 12, -12):
            for agg in (5.0, 7.0, 9.0, 4.0, 6.0, 8.0):
                out = _quadric(source, n_verts + dn, agg)
                if ok(out, source):
                    trimesh.repair.fix_normals(out)
                    return out
    raise RuntimeError(f"could not decimate a mesh of {len(tm.vertices)} vertices to {n_verts}")


def mesh_distances(a, b, n: int = 20000) -> tuple[float, float]:
    """Symmetric Hausdorff and mean surface distance between trimesh meshes a and b (exact
    point-to-triangle distances from dense surface samples plus all vertices of each side)."""
    from meshdist import point_mesh_distance
    pa, pb = surface_samples(a, n), surface_samples(b, n)
    dab = point_mesh_distance(pa, np.asarray(b.vertices), np.asarray(b.faces))[0]
    dba = point_mesh_distance(pb, np.asarray(a.vertices), np.asarray(a.faces))[0]
    return float(max(dab.max(), dba.max())), float(0.5 * (dab.mean() + dba.mean()))


# ----------------------------------------------------------------------------- steps
def hand_frame(wrist: np.ndarray, mcp2: np.ndarray, mcp3: np.ndarray, mcp5: np.ndarray):
    """Rotation R (rows = hand axes in source coordinates) and origin of the hand frame:
    origin at the wrist centre, +y from the wrist centre to the 3rd MCP joint (long axis of the
    middle finger ray), +x radial (toward the thumb: from MCP5 to MCP2, made orthogonal to y),
    +z = x cross y, which for a right hand points palmar (volar)."""
    y = mcp3 - wrist
    y /= np.linalg.norm(y)
    x = mcp2 - mcp5
    x -= (x @ y) * y
    x /= np.linalg.norm(x)
    z = np.cross(x, y)
    return np.stack([x, y, z]), wrist


def main(argv: list[str] | None = None) -> dict:
    import trimesh

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", type=Path, default=None, help="myo-sim wheel (else cache/pip download)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)

    wheel = myo_source.locate_wheel(CACHE, args.wheel)
    bodies, meshes, info = myo_source.read_hand(wheel)
    print(f"read {len(meshes)} bone meshes from {wheel.name} ({time.time() - t0:.1f}s)")

    # ---- source meshes in mm, lunate_r frame; repaired (2 of 27 are open in the wheel)
    src = {}
    open_in_source = []
    for name in myo_source.BODY_TO_BONE:
        v, f = meshes[name]
        raw = trimesh.Trimesh(v * 1000.0, f, process=True)
        if not raw.is_watertight:
            open_in_source.append(name)
        src[name] = repair(raw.vertices, raw.faces)

    # ---- joints in the source frame (mm)
    mj = {j.name: (j, name) for name, b in bodies.items() for j in b.joints}
    slots = {n: mj_joint_slot(n) for n in mj}
    if len(set(slots.values())) != len(slots):
        raise RuntimeError(f"two MuJoCo joints map to one NIMBLE dof: {slots}")
    samples = {n: surface_samples(tm, 12000) for n, tm in src.items()}
    carpal_pts = np.concatenate([samples[n] for n in CARPAL_BODIES])
    bone_pts = {b: (carpal_pts if b == 0 else np.concatenate([samples[n] for n in BONE_BODIES[b]]))
                for b in range(20)}

    joints = np.zeros((25, 3))
    joint_source = [""] * 25
    compare = {}  # per joint: MuJoCo pos, articular midpoint, head-sphere centre
    for b in range(1, 20):
        j = BONE_TO_JOINT[b]
        parent_bone = BONE_NAMES.index(JOINT_NAMES[JOINT_PARENTS[j]]) if JOINT_PARENTS[j] > 0 else 0
        mid, gap, ppatch = articular_midpoint(bone_pts[parent_bone], bone_pts[b])
        body = BONE_BODIES[b][0]
        row = {"articular_midpoint": mid, "gap_mm": gap}
        if bodies[body].joints:
            row["mujoco"] = bodies[body].joints[0].pos * 1000.0
            if b not in (1,):  # CMC1 is a saddle: a sphere through its facet means nothing
                row["head_sphere"] = sphere_fit(ppatch)[0]
            joints[j] = row["mujoco"]
            joint_source[j] = "mujoco"
        else:  # CMC2-5 are rigid in MyoHand: no joint there, use the articular midpoint
            joints[j] = mid
            joint_source[j] = "articular_midpoint"
        compare[JOINT_NAMES[j]] = row

    # wrist centre: centre of the capitate head (Youm et al. 1978, J Bone Joint Surg Am 60:423, place
    # the flexion/extension and deviation axes of the wrist in the head of the capitate); the
    # MyoHand wrist joints sit at the lunate body origin instead -- both are reported.
    cap = samples["capitate_r"]
    cap_axis = (bodies["thirdmc_r"].pos - bodies["capitate_r"].pos)
    cap_axis /= np.linalg.norm(cap_axis)
    proj = (cap - bodies["capitate_r"].pos * 1000.0) @ cap_axis
    head = cap[proj < proj.min() + 6.0]
    wrist_c, wrist_r = sphere_fit(head)
    joints[0] = wrist_c
    joint_source[0] = "capitate_head_sphere"
    compare["carpal"] = {"mujoco": bodies["lunate_r"].joints[0].pos * 1000.0, "head_sphere": wrist_c}

    # fingertips: the most distal point of each distal phalanx along its joint-to-centroid axis
    for b, e in zip([3, 7, 11, 15, 19], END_JOINTS):
        p = bone_pts[b]
        base = joints[BONE_TO_JOINT[b]]
        ax = p.mean(0) - base
        ax /= np.linalg.norm(ax)
        s = (p - base) @ ax
        joints[e] = p[s > s.max() - 0.5].mean(0)
        joint_source[e] = "distal_tip"

    # ---- hand frame, then everything into it
    R, origin = hand_frame(joints[0], joints[JOINT_NAMES.index("pro2")],
                           joints[JOINT_NAMES.index("pro3")], joints[JOINT_NAMES.index("pro5")])
    to_hand = lambda p: (np.asarray(p) - origin) @ R.T  # noqa: E731
    pis = src["pisiform_r"].centroid
    if to_hand(pis)[2] <= 0 or to_hand(src["firstmc_r"].centroid)[0] <= 0:
        raise RuntimeError("hand frame check failed: pisiform must be palmar (+z), thumb radial (+x)")
    joints_h = to_hand(joints)
    for row in compare.values():
        for k in list(row):
            if k != "gap_mm":
                row[k] = to_hand(row[k])
    src_h = {n: trimesh.Trimesh(to_hand(tm.vertices), tm.faces, process=False) for n, tm in src.items()}

    # ---- axes and ranges
    axes = np.zeros((25, 2, 3))
    ranges = np.zeros((25, 2, 2))
    dof_mask = np.zeros((25, 2), dtype=np.int64)
    dof_order = np.full((25, 2), -1, dtype=np.int64)  # MuJoCo application order within the joint
    names_mj = [["", ""] for _ in range(25)]
    for body_name, b in bodies.items():
        for k, jt in enumerate(b.joints):
            ji, slot = mj_joint_slot(jt.name)
            axes[ji, slot] = jt.axis @ R.T
            ranges[ji, slot] = jt.range
            dof_mask[ji, slot] = 1
            dof_order[ji, slot] = k
            names_mj[ji][slot] = jt.name

    # ---- decimate bones
    areas = {n: tm.area for n, tm in src_h.items()}
    total_area = sum(areas.values())
    spare = TARGET_BONE_VERTS - FLOOR_VERTS * len(areas)
    bone_v, bone_f, bone_id, sub_id = [], [], [], []
    per_bone = []
    dec = {}
    for n, tm in src_h.items():
        nv = int(round(FLOOR_VERTS + spare * areas[n] / total_area))
        dec[n] = decimate(tm, nv)
    off = 0
    per_bone_vf = {}
    for b in range(20):
        vs, fs, o = [], [], 0
        for n in BONE_BODIES[b]:
            vs.append(dec[n].vertices)
            fs.append(dec[n].faces + o)
            sub_id.extend([CARPAL_BODIES.index(n) if b == 0 else 0] * len(dec[n].vertices))
            o += len(dec[n].vertices)
        v, f = np.concatenate(vs), np.concatenate(fs)
        per_bone_vf[b] = (v, f)
        bone_v.append(v)
        bone_f.append(f + off)
        bone_id.extend([b] * len(v))
        off += len(v)
        a = trimesh.util.concatenate([src_h[n] for n in BONE_BODIES[b]])
        d = trimesh.Trimesh(v, f, process=False)
        haus, mean = mesh_distances(d, a)
        per_bone.append({"bone": BONE_NAMES[b], "verts": int(len(v)), "faces": int(len(f)),
                         "source_verts": int(len(a.vertices)), "watertight": bool(d.is_watertight),
                         "components": int(d.body_count), "hausdorff_mm": round(haus, 3),
                         "mean_dist_mm": round(mean, 3)})
        print(f"  bone {b:2d} {BONE_NAMES[b]:6s} {len(v):4d} v  hausdorff {haus:.2f} mm  mean {mean:.3f} mm")
    bone_v = np.concatenate(bone_v)
    bone_f = np.concatenate(bone_f)
    bone_id = np.asarray(bone_id, dtype=np.int64)
    print(f"bones: {len(bone_v)} v / {len(bone_f)} f ({time.time() - t0:.1f}s)")

    # ---- skin
    skin = skin_sdf.build_skin(per_bone_vf, joints_h, JOINT_NAMES, src_h, seed=SEED)
    print(f"skin: {len(skin['verts'])} v / {len(skin['faces'])} f ({time.time() - t0:.1f}s)")

    # ---- save
    bone_v_offsets = np.cumsum([0] + [len(per_bone_vf[b][0]) for b in range(20)]).astype(np.int64)
    bone_f_offsets = np.cumsum([0] + [len(per_bone_vf[b][1]) for b in range(20)]).astype(np.int64)
    arrays = {
        "bone_verts": bone_v.astype(np.float32),
        "bone_faces": bone_f.astype(np.int64),
        "bone_vert_id": bone_id,
        "bone_vert_carpal_id": np.asarray(sub_id, dtype=np.int64),
        "bone_v_offsets": bone_v_offsets,
        "bone_f_offsets": bone_f_offsets,
        "joints": joints_h.astype(np.float32),
        "joint_parents": np.asarray(JOINT_PARENTS, dtype=np.int64),
        "bone_joint": np.asarray(BONE_TO_JOINT, dtype=np.int64),
        "joint_axes": axes.astype(np.float32),
        "joint_ranges": ranges.astype(np.float32),
        "joint_dof_mask": dof_mask,
        "joint_dof_order": dof_order,
        "joints_mujoco": np.stack([compare[n].get("mujoco", np.full(3, np.nan)) if n in compare
                                   else np.full(3, np.nan) for n in JOINT_NAMES]).astype(np.float32),
        "joints_articular_midpoint": np.stack(
            [compare[n].get("articular_midpoint", np.full(3, np.nan)) if n in compare
             else np.full(3, np.nan) for n in JOINT_NAMES]).astype(np.float32),
        "skin_verts": skin["verts"].astype(np.float32),
        "skin_faces": skin["faces"].astype(np.int64),
        "frame_rotation": R.astype(np.float32),
        "frame_origin_m": (origin / 1000.0).astype(np.float32),
    }
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(k)
    for b in range(20):
        arrays[f"bone{b:02d}_verts"] = per_bone_vf[b][0].astype(np.float32)
        arrays[f"bone{b:02d}_faces"] = per_bone_vf[b][1].astype(np.int64)
    npz = args.out / "hand_geometry.npz"
    np.savez_compressed(npz, **arrays)
    size = npz.stat().st_size

    dists = {k: round(float(np.linalg.norm(row["mujoco"] - row["articular_midpoint"])), 2)
             for k, row in compare.items() if "mujoco" in row and "articular_midpoint" in row}
    sph = {k: round(float(np.linalg.norm(row["mujoco"] - row["head_sphere"])), 2)
           for k, row in compare.items() if "mujoco" in row and "head_sphere" in row}
    report = {
        "source": {k: v for k, v in info.items() if k != "license_text"},
        "open_source_meshes_repaired": open_in_source,
        "bones": per_bone,
        "bone_totals": {"verts": int(len(bone_v)), "faces": int(len(bone_f)),
                        "hausdorff_max_mm": max(p["hausdorff_mm"] for p in per_bone),
                        "mean_dist_mm": round(float(np.mean([p["mean_dist_mm"] for p in per_bone])), 3)},
        "joints": {n: [round(float(c), 2) for c in joints_h[i]] for i, n in enumerate(JOINT_NAMES)},
        "joint_source": dict(zip(JOINT_NAMES, joint_source)),
        "mujoco_vs_articular_midpoint_mm": dists,
        "mujoco_vs_parent_head_sphere_mm": sph,
        "articular_gap_mm": {k: round(row["gap_mm"], 2) for k, row in compare.items() if "gap_mm" in row},
        "wrist_capitate_head_radius_mm": round(wrist_r, 2),
        "mujoco_dofs": {JOINT_NAMES[i]: names_mj[i] for i in range(25) if any(names_mj[i])},
        "skin": skin["report"],
        "npz_bytes": int(size),
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "hand_geometry_report.json").write_text(json.dumps(report, indent=1))
    if info.get("license_text"):
        (REPO / "templates" / "LICENSE-myo-sim").write_text(info["license_text"])
    if not args.no_render:
        import render_check
        render_check.render(arrays, JOINT_NAMES, args.out / "hand_geometry.png")
    print(f"wrote {npz} ({size / 1e6:.2f} MB) in {time.time() - t0:.1f}s")
    return report


if __name__ == "__main__":
    main()
