"""Embedded default model files, installed as the package ``anatomy.assets``.

They live in ``templates/assets`` in the source tree (next to the scripts that build them)
and are mapped into the package by ``[tool.setuptools.package-dir]`` in ``pyproject.toml``.
"""
