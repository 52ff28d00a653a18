"""Articulation learned from posed hands: held-out error without / with learned / with the true correctives.

Data: the embedded default hand with a known pose corrective (``anatomy.learning.bulge_correctives``:
a 4 mm bulge per joint and entry of ``R_j - I``, Gaussian of 10 mm about the joint), N subjects (shape
``~ N(0, 1)``) x P poses (``Nimble.sample_pose``, every joint inside its limits; root rotation ~ 0.3 rad,
translation ~ 5 mm; pose 0 of every subject the flat rest pose). The learner starts from the base rig
(weights, regressor, no correctives) and noisy poses (+ 0.03 rad per joint, + 0.5 mm translation, as from
fits). H further poses per subject are held out: each is fitted (pose + translation, Levenberg-Marquardt
from the same noise) with the learned model without correctives, with the learned correctives, and with
the generating model. Printed: mean vertex error (mm) of each, the weight error against the base
(mean L1 per vertex), the posed joint error of the held-out fits (mm), the learned rest joints' error after a
rigid alignment, and the seconds to learn. The bones are rigid: the generator bulges only soft tissue, and
the learner is told so (``rigid_vertices``; ``--soft-bones`` lets it put correctives on the bones too).

Run: ``python benchmarks/learning_pose.py [--subjects 20 --poses 10 --held 3]``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import anatomy
from anatomy.core.alignment import procrustes
from anatomy.core.kinematics import KinematicTree, forward_kinematics
from anatomy.core.rotations import axis_angle_to_matrix
from anatomy.io import load_model
from anatomy.io.official_nimble import BONE_TO_JOINT
from anatomy.learning import bulge_correctives, fit_poses, learn_articulation
from anatomy.learning.pose_fit import posed_vertices
from anatomy.models.nimble import default_hand_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--poses", type=int, default=10)
    parser.add_argument("--held", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--soft-bones", action="store_true",
                        help="let the learner put correctives on the bones too (it is told they are rigid by default)")
    args = parser.parse_args()
    base = load_model(default_hand_path())
    feats = [j for j in BONE_TO_JOINT if j != 0]
    joints0 = base.joint_regressor.to_dense().double() @ base.template.double()
    truth = copy.copy(base)
    rigid = base.tissue_mask("bones")
    truth.pose_basis = bulge_correctives(base.template, base.skinning_weights, joints0, base.parents, feats,
                                         rigid=rigid).float()
    truth.pose_feature_joints = feats
    model = anatomy.Nimble(truth, dtype=torch.float64)
    s, per = args.subjects, args.poses + args.held
    g = torch.Generator().manual_seed(1)
    shape = torch.randn(s, 11, generator=g, dtype=torch.float64)
    pose = model.sample_pose(s * per, generator=g).double()
    pose[:, 0] = 0.3 * torch.randn(s * per, 3, generator=g, dtype=torch.float64)
    index = torch.arange(s * per) % per
    pose[index == 0, 1:] = 0.0
    sub = torch.arange(s).repeat_interleave(per)
    transl = 5.0 * torch.randn(s * per, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model(pose, shape[sub], transl=transl)
    truej = pose.new_zeros(s * per, 25, 3)
    truej[:, list(BONE_TO_JOINT)] = pose
    noisy = truej + 0.03 * torch.randn(truej.shape, generator=g, dtype=torch.float64) * (truej.abs().sum(-1, True) > 0)
    noisy[index == 0, 1:] = 0.0
    tnoisy = transl + 0.5 * torch.randn(transl.shape, generator=g, dtype=torch.float64)
    train, held = index < args.poses, index >= args.poses
    t0 = time.perf_counter()
    art = learn_articulation(out.vertices[train], noisy[train], sub[train], base.template, base.skinning_weights,
                             base.joint_regressor, base.parents, transl=tnoisy[train], iterations=args.iterations,
                             rigid_vertices=None if args.soft_bones else rigid)
    seconds = time.perf_counter() - t0
    tree = KinematicTree.from_parents(base.parents)
    hs = sub[held]
    ids = torch.randperm(base.num_vertices, generator=g)[:2000]
    free = [0, *feats]
    w0 = base.skinning_weights.to_dense().double()
    true_rest = base.template.double() + torch.einsum("sk,kvd->svd", shape, base.spaces["shape"].double())
    true_joints = torch.einsum("jv,svd->sjd", base.joint_regressor.to_dense().double(), true_rest)

    def held_out(rest: torch.Tensor, joints: torch.Tensor, weights: torch.Tensor, basis: torch.Tensor | None,
                 fj: tuple[int, ...]) -> tuple[float, float]:
        p, t, _ = fit_poses(out.vertices[held], rest[hs], joints[hs], weights, base.parents, noisy[held],
                            transl=tnoisy[held], free=free, pose_basis=basis, feature_joints=fj, vertex_ids=ids,
                            steps=8)
        rot = axis_angle_to_matrix(p)
        verts, _ = posed_vertices(rest[hs], joints[hs], weights, tree, rot, t, basis, fj)
        pj = forward_kinematics(rot, joints[hs], tree, translation=t).positions
        return (float((verts - out.vertices[held]).norm(dim=-1).mean()),
                float((pj - out.joints[held]).norm(dim=-1).mean()))

    frame = procrustes(art.rest, true_rest)  # the learned rest meshes are in the base template's frame
    rest_joint_err = float((frame.apply(art.rest_joints) - true_joints).norm(dim=-1).mean())
    none = held_out(art.rest, art.rest_joints, art.weights, None, ())
    learned = held_out(art.rest, art.rest_joints, art.weights, art.pose_basis, art.feature_joints)
    generator = held_out(true_rest, true_joints, w0, truth.pose_basis.double(), tuple(feats))
    print(f"{s} subjects x {args.poses} poses ({int(train.sum())} meshes, {base.num_vertices} vertices), "
          f"{int(held.sum())} held-out poses; learned in {seconds:.1f} s ({args.iterations} rounds)")
    print(f"training error per round (mm): {[round(h, 4) for h in art.history]}")
    print(f"held-out mean vertex error (mm): no correctives {none[0]:.4f}, learned {learned[0]:.4f}, "
          f"true generator {generator[0]:.4f}")
    print(f"held-out posed joint error (mm): no correctives {none[1]:.4f}, learned {learned[1]:.4f}, "
          f"true generator {generator[1]:.4f}; learned rest joints (rigidly aligned) {rest_joint_err:.4f}")
    print(f"skinning weights vs base: mean L1 per vertex {float((art.weights - w0).abs().sum(1).mean()):.4f}, "
          f"max {float((art.weights - w0).abs().sum(1).max()):.4f}; non-zeros per vertex "
          f"{float((art.weights > 0).sum(1).double().mean()):.2f} (base {float((w0 > 0).sum(1).double().mean()):.2f})")


if __name__ == "__main__":
    main()
