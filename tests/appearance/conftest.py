"""Appearance of the embedded default models, built once per test session (about 2 s each)."""

from __future__ import annotations

import pytest
import torch

import anatomy
from anatomy.appearance import SkinAppearance, appearance


class Built:
    def __init__(self, model: anatomy.ArticulatedModel, tissue: str) -> None:
        self.model = model
        self.app = appearance(model)
        assert isinstance(self.app, SkinAppearance)
        with torch.no_grad():
            self.out = model()
        layout = next(t for t in model.layout if t.name == tissue)
        self.vertices = self.out.tissue(tissue)[0].double().numpy()
        self.faces = layout.faces.numpy()


@pytest.fixture(scope="session")
def hand_app() -> Built:
    return Built(anatomy.Nimble(), "skin")


@pytest.fixture(scope="session")
def head_app() -> Built:
    return Built(anatomy.Sculptor(), "face")
