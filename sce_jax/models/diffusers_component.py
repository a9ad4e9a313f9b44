"""``from_pretrained`` / ``save_pretrained`` for the ports of diffusers model classes.

A port inherits :class:`DiffusersComponent` and names, as class attributes, the diffusers
class its folders must hold (``diffusers_class_name``), the pipeline component used when it is
given a whole pipeline folder (``pipeline_subfolder``: ``"vae"``, ``"transformer"``) and, if its
old checkpoints used other tensor names, a ``key_rename = staticmethod(fn)``. Loading is local and
strict (:mod:`sce_jax.weights.diffusers_dirs`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

import jax.numpy as jnp

from sce_jax.weights.diffusers_dirs import load_diffusers_model, save_pretrained_diffusers


class DiffusersComponent:
    """Mixin: load from / write to diffusers model folders (see the module docstring)."""

    diffusers_class_name: ClassVar[str]
    pipeline_subfolder: ClassVar[str] = "vae"
    key_rename: ClassVar[Callable[[str], str] | None] = None

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, *, dtype: Any = jnp.float32,
                        param_dtype: Any = jnp.float32, subfolder: str | None = None,
                        revision: str = "main", variant: str | None = None):
        """Loads the diffusers class ``diffusers_class_name`` from local disk; strict.

        Args:
          path_or_repo_id: a diffusers model folder (``config.json`` + weights, single or
            sharded with their ``.index.json``), a pipeline folder (its
            ``pipeline_subfolder`` is used), or a repo id resolved in the local Hugging Face
            cache only (see :mod:`sce_jax.weights.diffusers_dirs`).
          dtype / param_dtype: compute and parameter dtypes (``param_dtype=jnp.bfloat16``
            halves the memory of a large checkpoint).
          subfolder: the component folder, when not the folder itself or the default one.
          revision: for repo ids, the ref or commit in the cache.
          variant: a weights variant such as ``"fp16"`` (by default the plain weights, else the
            only variant present).

        Raises:
          DiffusersDirError, ConfigError, WeightMismatchError, WeightFileError.
        """
        return load_diffusers_model(cls, path_or_repo_id, class_name=cls.diffusers_class_name,
                                    dtype=dtype, param_dtype=param_dtype, subfolder=subfolder,
                                    default_subfolder=cls.pipeline_subfolder, revision=revision,
                                    variant=variant, rename=cls.key_rename)

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Writes a diffusers model folder that diffusers' own class of this name loads."""
        return save_pretrained_diffusers(self, directory)
