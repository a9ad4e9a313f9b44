"""Orbax checkpoints of converted models: weights plus the config that rebuilds them.

A checkpoint directory holds ``model.json`` (the model class name and its config) and
``state/`` (the NNX state written by orbax). Loading builds the model abstractly
(``nnx.eval_shape``, no memory for random weights), restores the state into it, and checks
that every array has the shape the config implies, so a run needs neither torch nor a
conversion step.

Models that can be checkpointed follow one protocol: a ``config`` attribute (a frozen
dataclass, see :mod:`sce_jax.weights.model_config`), a ``config_class`` class attribute and a
constructor ``cls(config, *, rngs, dtype=..., param_dtype=...)``.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.registry import model_class
from sce_jax.weights.model_config import config_from_dict, config_to_dict

MODEL_FILE = "model.json"
STATE_DIR = "state"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A directory that is not a loadable sce_jax model checkpoint."""


def _checkpointer():
    import orbax.checkpoint as ocp
    return ocp.StandardCheckpointer()


def save_model(model: nnx.Module, directory: str | os.PathLike) -> str:
    """Writes ``model`` to ``directory`` (created; must not hold a checkpoint already)."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(os.path.join(directory, MODEL_FILE)):
        raise CheckpointError(f"{directory}: already holds a checkpoint; choose a new directory")
    os.makedirs(directory, exist_ok=True)
    state = nnx.state(model)
    ckpt = _checkpointer()
    ckpt.save(os.path.join(directory, STATE_DIR), state)
    ckpt.wait_until_finished()
    meta = {"format": FORMAT_VERSION, "class": type(model).__name__,
            "config": config_to_dict(model.config)}
    tmp = os.path.join(directory, MODEL_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, MODEL_FILE))  # written last: marks it complete
    return directory


def read_model_meta(directory: str | os.PathLike) -> dict[str, Any]:
    directory = os.fspath(directory)
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{directory}: no {MODEL_FILE}; not an sce_jax checkpoint (make one with "
            "scripts/convert_weights.py or sce_jax.models.checkpoint.save_model)")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None


@functools.lru_cache(maxsize=32)
def _abstract_model(cls: type, config, *, dtype=jnp.float32, param_dtype=jnp.float32):
    """The graph and the parameter shapes of ``cls(config)``, traced once per class, config and
    dtypes: tracing a model's constructor costs about as much as restoring its weights, and a
    process often loads the same model again (every run of a notebook, the evaluation)."""
    kwargs = {} if dtype == jnp.float32 and param_dtype == jnp.float32 else dict(
        dtype=dtype, param_dtype=param_dtype)
    return nnx.split(nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), **kwargs)))


def load_model(directory: str | os.PathLike, *, expect: type | tuple[type, ...] | None = None,
               dtype=jnp.float32, param_dtype=jnp.float32) -> nnx.Module:
    """Loads a checkpoint written by :func:`save_model`.

    Args:
      directory: the checkpoint directory.
      expect: the model class(es) the caller can use; another class raises CheckpointError.
      dtype: compute dtype of the rebuilt model.
      param_dtype: parameter dtype; the stored float32 weights are cast to it.
    """
    directory = os.path.abspath(os.fspath(directory))
    meta = read_model_meta(directory)
    cls = model_class(meta.get("class", "?"), where=directory)
    if expect is not None:
        expected = expect if isinstance(expect, tuple) else (expect,)
        if not issubclass(cls, expected):
            names = ", ".join(c.__name__ for c in expected)
            raise CheckpointError(f"{directory}: holds a {cls.__name__}, expected {names}")
    config = config_from_dict(cls.config_class, meta["config"], what=f"{directory}/{MODEL_FILE}")
    graphdef, abstract_state = _abstract_model(cls, config)
    # Every process restores a whole copy onto its own first device. Without a sharding,
    # orbax would use the one recorded at save time (the saving process's device), which
    # another process of a multi-process run cannot address ("topology mismatch").
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local), abstract_state)
    try:
        state = _checkpointer().restore(os.path.join(directory, STATE_DIR), abstract_state)
    except Exception as e:  # orbax raises several types for missing/mis-shaped arrays
        raise CheckpointError(f"{directory}/{STATE_DIR}: cannot be restored into a "
                              f"{cls.__name__} of this config ({type(e).__name__}: {e})") from None
    model = nnx.merge(graphdef, state)
    if dtype != jnp.float32 or param_dtype != jnp.float32:
        graphdef, _ = _abstract_model(cls, config, dtype=dtype, param_dtype=param_dtype)
        state = jax.tree.map(lambda x: x.astype(param_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                             nnx.state(model))
        model = nnx.merge(graphdef, state)
    return model
