"""A FLUX transformer as the search's prior: NHWC latents in, NHWC velocity out.

:func:`flux_prior` wraps a :class:`~sce_jax.models.flux_transformer.FluxTransformer2DModel`
as a :class:`~sce_jax.prior.Prior` with the call a FLUX pipeline makes at each step::

    tokens = pack_latents(z_t)                                   (2x2 patches)
    v = unpack(transformer(tokens, context["encoder_hidden_states"],
                           context["pooled_projections"], timestep=t,
                           img_ids=latent_image_ids(h, w), txt_ids=0,
                           guidance=guidance (dev) or None (schnell)))

``z_t`` is (B, h, w, 16) in the pipeline's scaled latent convention
(``(vae_latent - shift_factor) * scaling_factor``, what :class:`sce_jax.Generator` encodes
to), ``t`` is (B,) in [0, 1] with 1 = noise -- FLUX pipelines pass ``sigma``, i.e. exactly
this ``t``, and the transformer scales it by 1000 -- and ``v ~ eps - z``. The context is the
precomputed prompt embedding (T5 tokens and the pooled CLIP vector), one per example.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.flux_packing import latent_image_ids, pack_latents, text_ids, unpack_latents
from sce_jax.models.flux_transformer import FluxTransformer2DModel
from sce_jax.prior import Prior

Array = jax.Array
CONTEXT_KEYS = ("encoder_hidden_states", "pooled_projections")
DEFAULT_GUIDANCE = 3.5   # FluxPipeline's default guidance_scale (used by dev models only)


def flux_prior(model: FluxTransformer2DModel, *, guidance: float | None = None,
               name: str | None = None) -> Prior:
    """The :class:`Prior` of a FLUX transformer.

    Args:
      model: the loaded transformer (its ``in_channels`` = 4 x the latent channels).
      guidance: the guidance scale fed to a guidance-distilled (dev) model, a static setting;
        None takes FluxPipeline's default 3.5 for dev models. Must be None for schnell.
      name: for logs; by default ``"flux-dev"`` or ``"flux-schnell"``.

    Returns:
      a Prior with ``needs_context=True``; its context is a dict with
      ``"encoder_hidden_states"`` (B, L, joint_attention_dim) and ``"pooled_projections"``
      (B, pooled_projection_dim).
    """
    config = model.config
    if config.guidance_embeds:
        guidance = DEFAULT_GUIDANCE if guidance is None else float(guidance)
    elif guidance is not None:
        raise ValueError("flux_prior: this transformer has no guidance embedding (FLUX.1-schnell "
                         f"style, guidance_embeds=False); got guidance={guidance}, pass None")
    if config.in_channels % 4:
        raise ValueError(f"flux_prior: in_channels={config.in_channels} is not 4 x the latent "
                         "channels of 2x2-packed FLUX tokens")
    if config.output_channels != config.in_channels:
        raise ValueError(f"flux_prior: the transformer outputs {config.output_channels} channels "
                         f"per token, not its {config.in_channels} input channels")
    latent_channels = config.in_channels // 4
    graphdef, state = nnx.split(model)

    def velocity(params, z_t: Array, t: Array, context: Any) -> Array:
        if not isinstance(context, dict) or any(k not in context for k in CONTEXT_KEYS):
            raise ValueError(f"the FLUX prior needs a context dict with {list(CONTEXT_KEYS)} "
                             "(precomputed prompt embeddings)")
        b, h, w, c = z_t.shape
        if c != latent_channels:
            raise ValueError(f"the FLUX prior takes (B, h, w, {latent_channels}) latents, got "
                             f"{tuple(z_t.shape)}")
        hidden = context["encoder_hidden_states"]
        g = None if not config.guidance_embeds else jnp.full((b,), guidance, jnp.float32)
        net = nnx.merge(graphdef, params)
        out = net(pack_latents(z_t), hidden, context["pooled_projections"],
                  jnp.broadcast_to(t, (b,)), latent_image_ids(h, w), text_ids(hidden.shape[1]), g)
        return unpack_latents(out, h, w).astype(z_t.dtype)

    default = "flux-dev" if config.guidance_embeds else "flux-schnell"
    return Prior(velocity, state, needs_context=True, name=name or default)


def from_diffusers(path: str, dtype: Any) -> Prior:
    """The prior of a FLUX transformer read from a diffusers folder, pipeline folder (its
    ``transformer/``) or cached repo id, computing and storing its weights in ``dtype`` (the
    ``prior.kind = "flux"`` entry of :data:`sce_jax.models.registry.DIFFUSERS_PRIORS`; a
    guidance-distilled model gets FluxPipeline's default guidance 3.5)."""
    return flux_prior(FluxTransformer2DModel.from_pretrained(path, dtype=dtype, param_dtype=dtype))
