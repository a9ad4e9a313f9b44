"""Console entry points of an installed package: ``sce-jax-explain``, ``sce-jax-evaluate``.

Each runs the same script a checkout runs as ``python scripts/explain.py`` (or
``scripts/evaluate.py``), with the same flags and exit codes. The build maps ``scripts/`` into
the package as ``sce_jax/_scripts`` (pyproject.toml); an editable install or a checkout uses
the top-level ``scripts/`` folder itself.
"""

from __future__ import annotations

import os
import runpy

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sce_jax/
SCRIPT_DIRS = (os.path.join(PACKAGE_DIR, "_scripts"),
               os.path.join(os.path.dirname(PACKAGE_DIR), "scripts"))


def script_path(name: str) -> str:
    """The path of ``scripts/<name>.py`` in the installed package or the checkout."""
    for folder in SCRIPT_DIRS:
        path = os.path.join(folder, name + ".py")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name}.py is neither in {SCRIPT_DIRS[0]} nor in {SCRIPT_DIRS[1]}; "
                            "reinstall sce_jax")


def _run(name: str) -> None:
    runpy.run_path(script_path(name), run_name="__main__")


def explain() -> None:
    """``sce-jax-explain``: scripts/explain.py."""
    _run("explain")


def evaluate() -> None:
    """``sce-jax-evaluate``: scripts/evaluate.py."""
    _run("evaluate")


def merge() -> None:
    """``sce-jax-merge``: scripts/merge.py."""
    _run("merge")
