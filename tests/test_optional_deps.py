"""The core package works with only its required dependencies; optional ones fail clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_works_without_optional_packages() -> None:
    script = textwrap.dedent(
        """
        import sys
        for name in ("trimesh", "matplotlib", "pyvista", "nibabel", "pydicom", "open3d", "dask"):
            sys.modules[name] = None  # make any import of them fail
        import torch
        import anatomy
        from anatomy.core.errors import OptionalDependencyError
        model = anatomy.ArticulatedModel(anatomy.make_toy_model_data())
        out = model(torch.zeros(2, model.num_joints, 3), shape=torch.ones(1, 3))
        assert out.vertices.shape == (2, model.num_vertices, 3)
        for call in (lambda: out.to_trimesh("skin"), lambda: out.to_pyvista("skin")):
            try:
                call()
            except OptionalDependencyError as exc:
                assert "pip install" in str(exc), exc
            else:
                raise SystemExit("expected OptionalDependencyError")
        from anatomy.vis import render_output
        try:
            render_output(out, "x.png")
        except OptionalDependencyError as exc:
            assert "anatomy[vis]" in str(exc), exc
        else:
            raise SystemExit("expected OptionalDependencyError")
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
