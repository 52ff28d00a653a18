"""Fixtures for the anatomy.io tests: a tiny but complete, valid ModelData."""

from __future__ import annotations

import pytest
import torch

from anatomy.io import ModelData, TissueSpec


def build_small_model_data(*, sparse: bool = False, half_bases: bool = False) -> ModelData:
    """A 9-vertex model: tissue ``bone`` (a tetrahedron surface, 2 parts) and ``skin``
    (two tetrahedra sharing a face, with tets), 3 joints, a 2-component shape space,
    pose correctives for joints 1 and 2, 2 landmarks, extras and meta.

    ``sparse`` stores the joint regressor and skinning weights as sparse COO tensors,
    ``half_bases`` stores the shape and pose bases as float16.
    """
    g = torch.Generator().manual_seed(1234)
    bone_v = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    skin_v = torch.tensor([[0.0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20], [15, 15, 15]]) + 1.5
    template = torch.cat([bone_v, skin_v]) + 0.01 * torch.randn(9, 3, generator=g)
    bone = TissueSpec(
        "bone", 0, 4,
        faces=torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
        part_names=["proximal", "distal"],
        part_ids=torch.tensor([0, 0, 1, 1]),
    )
    skin = TissueSpec(
        "skin", 4, 9,
        faces=torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 4], [1, 4, 3], [2, 3, 4]]),
        tets=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]),
    )
    weights = torch.rand(9, 3, generator=g) + 0.05
    weights = weights / weights.sum(1, keepdim=True)
    jreg = torch.zeros(3, 9)
    jreg[0, [0, 1]] = 0.5
    jreg[1, [1, 2, 3]] = torch.tensor([0.2, 0.3, 0.5])
    jreg[2, 3] = 1.0
    if sparse:
        weights = weights.to_sparse()
        jreg = jreg.to_sparse()
    basis_dtype = torch.float16 if half_bases else torch.float32
    shape = torch.randn(2, 9, 3, generator=g).to(basis_dtype)
    pose = (0.1 * torch.randn(18, 9, 3, generator=g)).to(basis_dtype)
    return ModelData(
        template=template,
        tissues=[bone, skin],
        joint_names=["root", "mid", "tip"],
        parents=[-1, 0, 1],
        joint_regressor=jreg,
        skinning_weights=weights,
        spaces={"shape": shape},
        pose_basis=pose,
        pose_feature_joints=[1, 2],
        landmark_names=["apex", "corner"],
        landmark_vertices=torch.tensor([[4, 5, 6], [0, 1, 2]]),
        landmark_weights=torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]),
        extras={
            "pose_mean": torch.randn(6, generator=g, dtype=torch.float64),
            "limits": torch.tensor([[-1.0, 1.0], [0.0, 1.5], [0.0, 1.2]]),
            "surface_mask": torch.tensor([True, True, False, True, True]),
        },
        meta={
            "name": "small",
            "units": "mm",
            "handedness": "left",
            "licence": "CC0-1.0",
            "provenance": {"built_by": "tests/io/conftest.py", "seed": 1234},
            "description": "tiny test model ✓",
        },
    )


@pytest.fixture
def small_model_data() -> ModelData:
    """A valid tiny ModelData (dense, float32); see :func:`build_small_model_data`."""
    return build_small_model_data()


@pytest.fixture
def make_small_model_data():
    """The builder itself, for variants: ``make_small_model_data(sparse=True, half_bases=True)``."""
    return build_small_model_data
