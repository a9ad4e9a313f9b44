"""Files shipped inside the package: the demo models and the demo data.

``sce_jax/assets/`` holds what ``scripts/train_demo_models.py`` produced (orbax checkpoints,
diffusers-format copies, small test subsets, and a ``provenance.json`` with the commands and
seeds that made them). :func:`asset_path` finds a file there or says how to make it.
"""

from __future__ import annotations

import os

ASSET_DIR = os.path.dirname(os.path.abspath(__file__))


def asset_path(*parts: str, must_exist: bool = True) -> str:
    """Absolute path of a shipped asset; a clear error when it is missing."""
    path = os.path.join(ASSET_DIR, *parts)
    if must_exist and not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: shipped asset missing; recreate the demo assets with "
            "`python scripts/train_demo_models.py` (see docs/demo_models.md)")
    return path
