"""A Flax NNX port of diffusers' ``FluxTransformer2DModel`` (FLUX.1 dev / schnell).

Semantics are diffusers' own: the model works on *packed* latents, tokens of 2x2 latent
patches (see :mod:`sce_jax.models.flux_packing`), and predicts the flow-matching velocity::

    out = model(hidden_states (B, N, in_channels), encoder_hidden_states (B, L, joint_dim),
                pooled_projections (B, pooled_dim), timestep (B,) in [0, 1],
                img_ids (N, 3), txt_ids (L, 3), guidance (B,) or None)      # (B, N, p^2 out)

Inside, as diffusers: ``timestep`` and ``guidance`` are multiplied by 1000 and embedded with
the pooled text vector into ``temb``; image and text tokens are embedded (``x_embedder``,
``context_embedder``); ``num_layers`` double-stream blocks (separate weights per stream,
joint attention over ``[text; image]``), ``num_single_layers`` single-stream blocks (one
sequence, attention and MLP in parallel), all with AdaLN-Zero modulation by ``temb`` and a
3-axis rotary embedding of ``concat(txt_ids, img_ids)``; ``norm_out`` + ``proj_out`` on the
image tokens.

FLUX.1-dev is guidance-distilled (``guidance_embeds=True``: a guidance scale, e.g. 3.5, is an
input); schnell has no guidance embedding (passing one is an error, as omitting it for dev).

Load a real checkpoint with :meth:`FluxTransformer2DModel.from_pretrained` (a diffusers
``transformer/`` folder, a pipeline folder, or a repo id in the local Hugging Face cache;
never the network). :func:`sce_jax.priors.flux.flux_prior` wraps a loaded model as the
search's :class:`~sce_jax.prior.Prior`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.models.diffusers_component import DiffusersComponent
from sce_jax.models.flux_layers import (
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    CombinedTimestepTextProjEmbeddings,
    FeedForward,
    FluxAttention,
    FluxLayerFactory,
    gelu_tanh,
    layer_norm,
    rope_tables,
)
from sce_jax.models.vae_blocks import LayerFactory
from sce_jax.weights.model_config import ConfigError

Array = jax.Array
TIME_SCALE = 1000.0   # diffusers multiplies timestep and guidance by 1000 inside forward()


@dataclasses.dataclass(frozen=True)
class FluxTransformer2DModelConfig:
    """The fields of a diffusers ``FluxTransformer2DModel`` ``config.json``, with its defaults.

    Attributes:
      patch_size: only sizes ``proj_out`` (``patch_size^2 * out_channels`` outputs); FLUX
        checkpoints use 1 and pack 2x2 latent patches outside the model.
      in_channels: channels of a packed token (64 = 16 latent channels x 2 x 2).
      out_channels: output channels per token; None means ``in_channels``.
      num_layers / num_single_layers: double- and single-stream blocks (19 / 38 in FLUX.1).
      attention_head_dim / num_attention_heads: head width and count (128 x 24 = 3072).
      joint_attention_dim: width of the text embeddings (T5-XXL: 4096).
      pooled_projection_dim: width of the pooled text vector (CLIP-L: 768).
      guidance_embeds: True for guidance-distilled models (FLUX.1-dev).
      axes_dims_rope: rotary widths of the three id axes; they sum to ``attention_head_dim``.
    """

    patch_size: int = 1
    in_channels: int = 64
    out_channels: int | None = None
    num_layers: int = 19
    num_single_layers: int = 38
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    pooled_projection_dim: int = 768
    guidance_embeds: bool = False
    axes_dims_rope: tuple[int, ...] = (16, 56, 56)

    def __post_init__(self):
        if isinstance(self.axes_dims_rope, list):
            object.__setattr__(self, "axes_dims_rope", tuple(self.axes_dims_rope))

        def fail(field: str, expected: str):
            raise ConfigError(f"FluxTransformer2DModelConfig.{field}={getattr(self, field)!r} is "
                              f"not supported; expected {expected}")

        for name in ("patch_size", "in_channels", "attention_head_dim", "num_attention_heads",
                     "joint_attention_dim", "pooled_projection_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive integer")
        for name in ("num_layers", "num_single_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(name, "a non-negative integer")
        if self.out_channels is not None and (not isinstance(self.out_channels, int)
                                              or self.out_channels < 1):
            fail("out_channels", "None or a positive integer")
        if not isinstance(self.guidance_embeds, bool):
            fail("guidance_embeds", "true or false")
        axes = self.axes_dims_rope
        if (len(axes) != 3 or not all(isinstance(d, int) and d > 0 and d % 2 == 0 for d in axes)):
            fail("axes_dims_rope", "three positive even widths")
        if sum(axes) != self.attention_head_dim:
            fail("axes_dims_rope", f"widths summing to attention_head_dim={self.attention_head_dim}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        """Outputs per token: ``patch_size^2 * (out_channels or in_channels)``."""
        return self.patch_size ** 2 * (self.out_channels or self.in_channels)


class FluxTransformerBlock(nnx.Module):
    """diffusers ``FluxTransformerBlock`` (double stream), for image ``x`` and text ``c``::

        x', g_a, s_m, sc_m, g_m = norm1(x, temb);  c', ... = norm1_context(c, temb)
        a_x, a_c = attn(x', c')                                  (joint attention)
        x = x + g_a a_x;  x = x + g_m ff(layer_norm(x) (1 + sc_m) + s_m)
        c likewise with ff_context.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, *, make: LayerFactory):
        self.norm1 = AdaLayerNormZero(dim, 6, make=make)
        self.norm1_context = AdaLayerNormZero(dim, 6, make=make)
        self.attn = FluxAttention(dim, heads, head_dim, joint=True, make=make)
        self.ff = FeedForward(dim, make=make)
        self.ff_context = FeedForward(dim, make=make)

    def __call__(self, x: Array, c: Array, temb: Array, rope) -> tuple[Array, Array]:
        nx, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, temb)
        nc, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(c, temb)
        attn_x, attn_c = self.attn(nx, rope, nc)

        x = x + gate_msa[:, None] * attn_x
        nx = layer_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp[:, None] * self.ff(nx)

        c = c + c_gate_msa[:, None] * attn_c
        nc = layer_norm(c) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        c = c + c_gate_mlp[:, None] * self.ff_context(nc)
        return c, x


class FluxSingleTransformerBlock(nnx.Module):
    """diffusers ``FluxSingleTransformerBlock`` on the joint sequence ``h = [c; x]``::

        h', gate = norm(h, temb)
        h = h + gate proj_out([attn(h'); gelu_tanh(proj_mlp(h'))])     (mlp width 4 dim)
    """

    def __init__(self, dim: int, heads: int, head_dim: int, *, make: LayerFactory,
                 mlp_ratio: float = 4.0):
        mlp = int(dim * mlp_ratio)
        self.norm = AdaLayerNormZero(dim, 3, make=make)
        self.proj_mlp = make.linear(dim, mlp)
        self.proj_out = make.linear(dim + mlp, dim)
        self.attn = FluxAttention(dim, heads, head_dim, joint=False, make=make)

    def __call__(self, x: Array, c: Array, temb: Array, rope) -> tuple[Array, Array]:
        n_context = c.shape[1]
        h = jnp.concatenate([c, x], axis=1)
        nh, gate = self.norm(h, temb)
        mlp = gelu_tanh(self.proj_mlp(nh))
        attn = self.attn(nh, rope)
        h = h + gate[:, None] * self.proj_out(jnp.concatenate([attn, mlp], axis=-1))
        return h[:, :n_context], h[:, n_context:]


class FluxTransformer2DModel(DiffusersComponent, nnx.Module):
    """diffusers ``FluxTransformer2DModel`` in Flax NNX (inference).

    Args:
      config: the architecture.
      rngs: for the (random) initial parameters.
      dtype: compute dtype (float32 or bfloat16); norms, RoPE and softmax compute in float32.
      param_dtype: parameter dtype (float32 unless memory matters; FLUX.1 has 11.9e9
        parameters: 47.6 GB in float32, 23.8 GB in bfloat16).
    """

    config_class = FluxTransformer2DModelConfig
    pipeline_subfolder = "transformer"
    diffusers_class_name = "FluxTransformer2DModel"

    def __init__(self, config: FluxTransformer2DModelConfig, *, rngs: nnx.Rngs,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
        self.config = config
        self.dtype = dtype
        make = FluxLayerFactory(rngs, dtype, param_dtype)
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            dim, config.pooled_projection_dim, guidance=config.guidance_embeds, make=make)
        self.context_embedder = make.linear(config.joint_attention_dim, dim)
        self.x_embedder = make.linear(config.in_channels, dim)
        self.transformer_blocks = nnx.List([
            FluxTransformerBlock(dim, heads, head_dim, make=make) for _ in range(config.num_layers)])
        self.single_transformer_blocks = nnx.List([
            FluxSingleTransformerBlock(dim, heads, head_dim, make=make)
            for _ in range(config.num_single_layers)])
        self.norm_out = AdaLayerNormContinuous(dim, dim, make=make)
        self.proj_out = make.linear(dim, config.output_channels)

    def _check(self, hidden_states, encoder_hidden_states, pooled_projections, timestep,
               img_ids, txt_ids, guidance) -> None:
        c = self.config
        name = type(self).__name__

        def fail(what: str, expected: str, got):
            raise ValueError(f"{name}: {what} must be {expected}, got shape {tuple(got.shape)}")

        if hidden_states.ndim != 3 or hidden_states.shape[-1] != c.in_channels:
            fail("hidden_states", f"(B, N, {c.in_channels}) packed latent tokens", hidden_states)
        b, n = hidden_states.shape[:2]
        if encoder_hidden_states.shape[0::2] != (b, c.joint_attention_dim) or encoder_hidden_states.ndim != 3:
            fail("encoder_hidden_states", f"({b}, L, {c.joint_attention_dim})", encoder_hidden_states)
        if pooled_projections.shape != (b, c.pooled_projection_dim):
            fail("pooled_projections", f"({b}, {c.pooled_projection_dim})", pooled_projections)
        if timestep.shape != (b,):
            fail("timestep", f"({b},)", timestep)
        if img_ids.shape != (n, 3):
            fail("img_ids", f"({n}, 3) (one id triple per image token)", img_ids)
        if txt_ids.shape != (encoder_hidden_states.shape[1], 3):
            fail("txt_ids", f"({encoder_hidden_states.shape[1]}, 3) (one per text token)", txt_ids)
        if c.guidance_embeds and guidance is None:
            raise ValueError(f"{name}: this model has a guidance embedding (guidance_embeds=True, "
                             "FLUX.1-dev); pass guidance, e.g. 3.5 per example")
        if not c.guidance_embeds and guidance is not None:
            raise ValueError(f"{name}: this model has no guidance embedding (guidance_embeds="
                             "False, FLUX.1-schnell); pass guidance=None")
        if guidance is not None and guidance.shape != (b,):
            fail("guidance", f"({b},)", guidance)

    def __call__(self, hidden_states: Array, encoder_hidden_states: Array,
                 pooled_projections: Array, timestep: Array, img_ids, txt_ids,
                 guidance: Array | None = None) -> Array:
        """The velocity of the packed latent tokens (B, N, ``output_channels``), in ``dtype``.

        Args:
          hidden_states: packed noisy latents (B, N, in_channels).
          encoder_hidden_states: text token embeddings (B, L, joint_attention_dim).
          pooled_projections: pooled text embedding (B, pooled_projection_dim).
          timestep: (B,) in [0, 1] (the sigma; multiplied by 1000 here, as in diffusers).
          img_ids / txt_ids: (N, 3) / (L, 3) position ids of the tokens (numpy arrays give
            float64 RoPE tables exactly as diffusers computes them).
          guidance: (B,) guidance scales for dev models, None for schnell.
        """
        guidance = None if guidance is None else jnp.asarray(guidance)
        timestep = jnp.asarray(timestep)
        self._check(hidden_states, encoder_hidden_states, pooled_projections, timestep,
                    img_ids, txt_ids, guidance)
        dtype = self.dtype
        x = self.x_embedder(hidden_states.astype(dtype))
        # Float32 whatever dtype is. diffusers computes timestep.to(dtype) * 1000 in the compute
        # dtype: in bfloat16 that moves t by up to 2 units of 1000 and scrambles the
        # high-frequency part of the timestep embedding (a 16% output change measured on random
        # weights); here bfloat16 stays within ~1% of float32.
        t = timestep.astype(jnp.float32) * TIME_SCALE
        g = None if guidance is None else guidance.astype(jnp.float32) * TIME_SCALE
        temb = self.time_text_embed(t, g, pooled_projections.astype(dtype))
        c = self.context_embedder(encoder_hidden_states.astype(dtype))
        if isinstance(img_ids, np.ndarray) and isinstance(txt_ids, np.ndarray):
            ids = np.concatenate([txt_ids, img_ids], axis=0)
        else:
            ids = jnp.concatenate([jnp.asarray(txt_ids), jnp.asarray(img_ids)], axis=0)
        rope = rope_tables(ids, self.config.axes_dims_rope)
        for block in self.transformer_blocks:
            c, x = block(x, c, temb, rope)
        for block in self.single_transformer_blocks:
            c, x = block(x, c, temb, rope)
        return self.proj_out(self.norm_out(x, temb))

