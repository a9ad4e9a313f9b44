"""The SD3 / SD3.5 transformer as the search's prior (:class:`sce_jax.prior.Prior`).

The prior's convention (see :mod:`sce_jax.prior`) and SD3's differ only in the time scale::

    v = prior.velocity(z_t, t, context)
      = SD3Transformer2DModel(z_t, context["encoder_hidden_states"],
                              context["pooled_projections"], timestep = 1000 t)

``z_t`` is NHWC in the generator's scaled latent convention, which is what diffusers' SD3
pipelines feed the transformer (``(z - shift_factor) * scaling_factor``), and SD3 predicts
``v = eps - z`` as the prior does. ``context`` is the dict pytree of precomputed prompt
embeddings (:func:`sce_jax.priors.prompt_embeddings.load_prompt_embeddings`); a context of
batch 1 (one prompt) is broadcast to the latents' batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.sd3_transformer import SD3Transformer2DModel
from sce_jax.prior import Prior
from sce_jax.priors.prompt_embeddings import CONTEXT_KEYS

Array = jax.Array

TIMESTEP_SCALE = 1000.0  # SD3 pipelines pass timestep = 1000 * sigma


def _context_arrays(context: Mapping[str, Array] | None, batch: int) -> tuple[Array, Array]:
    if context is None or not all(k in context for k in CONTEXT_KEYS):
        have = sorted(context) if isinstance(context, Mapping) else context
        raise ValueError(f"the SD3 prior needs a context dict with {list(CONTEXT_KEYS)} "
                         f"(precomputed prompt embeddings, scripts/encode_prompt.py); got {have}")
    out = []
    for key in CONTEXT_KEYS:
        x = jnp.asarray(context[key])
        if x.shape[0] == 1 and batch != 1:
            x = jnp.broadcast_to(x, (batch,) + x.shape[1:])
        out.append(x)
    return tuple(out)


def sd3_velocity(model: SD3Transformer2DModel, z_t: Array, t: Array,
                 context: Mapping[str, Array] | None) -> Array:
    """``v (B, h, w, c)`` float32 for ``z_t`` NHWC, ``t`` (B,) in [0, 1] (1 = noise)."""
    hidden, pooled = _context_arrays(context, z_t.shape[0])
    timestep = TIMESTEP_SCALE * jnp.asarray(t, jnp.float32)
    return model(z_t, hidden, pooled, timestep)


def sd3_prior(model: SD3Transformer2DModel, *, name: str | None = None) -> Prior:
    """The :class:`~sce_jax.prior.Prior` of an SD3 transformer (``needs_context=True``).

    Parameters are the model's NNX state (split once); ``velocity_fn`` merges them inside the
    caller's ``jit``.
    """
    graphdef, state = nnx.split(model)

    def velocity(params: Any, z_t: Array, t: Array, context: Any) -> Array:
        return sd3_velocity(nnx.merge(graphdef, params), z_t, t, context)

    return Prior(velocity, state, needs_context=True, name=name or "sd3")


def from_diffusers(path: str, dtype: Any) -> Prior:
    """The prior of an SD3 transformer read from a diffusers folder, pipeline folder (its
    ``transformer/``) or cached repo id, computing and storing its weights in ``dtype``
    (the ``prior.kind = "sd3"`` entry of :data:`sce_jax.models.registry.DIFFUSERS_PRIORS`)."""
    return sd3_prior(SD3Transformer2DModel.from_pretrained(path, dtype=dtype, param_dtype=dtype))
