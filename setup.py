"""The package list: sce_jax's own packages plus the two top-level folders the build maps in.

Everything else is in pyproject.toml. ``configs/`` and ``scripts/`` stay at the top of the
checkout (``python scripts/explain.py --config=configs/squares.py``); pyproject.toml's
``package-dir`` maps them to ``sce_jax._configs`` and ``sce_jax._scripts`` so an installed
package has the shipped configs and the ``sce-jax-explain`` / ``sce-jax-evaluate`` scripts.
"""

from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["sce_jax", "sce_jax.*"])
      + ["sce_jax._configs", "sce_jax._scripts"])
