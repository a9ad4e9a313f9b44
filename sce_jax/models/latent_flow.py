"""A small latent flow-matching transformer (DiT-style) for the shipped demos' priors.

It predicts the rectified-flow velocity of SD3 and FLUX over the latents of a demo
autoencoder, so the search can use it as a prior exactly as it would use a foundation model's
transformer::

    z_t = (1 - t) z + t eps,     v_theta(z_t, t) ~ eps - z,     t in [0, 1]

Architecture (Peebles & Xie's DiT with adaLN-Zero, patch size 1: one token per latent cell)::

    h_0   = W_in z_t + pos                                  (B, h*w, D)
    e     = MLP(sinusoid(1000 t))                           (B, D)
    for each block:
      (a1, b1, g1, a2, b2, g2) = W_mod silu(e)              (W_mod zero-initialised)
      h = h + g1 * Attn(LN(h) * (1 + a1) + b1)
      h = h + g2 * MLP(LN(h) * (1 + a2) + b2)
    v     = W_out (LN(h) * (1 + a) + b),  (a, b) = W_fin silu(e)   (W_out zero-initialised)

Inputs are NHWC latents in the search's scaled convention (what ``Generator.encode``
returns); ``context`` is accepted for the :class:`sce_jax.prior.Prior` protocol and ignored
(the demo priors are unconditional: the classifier, not the prior, decides the class).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.weights.model_config import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LatentFlowConfig:
    """The architecture of a :class:`LatentFlowTransformer`.

    Attributes:
      latent_channels: channels of the latents it models.
      sample_size: (height, width) of the latent grid (the position embedding's size).
      hidden_size: token width D.
      depth: number of transformer blocks.
      num_heads: attention heads (must divide ``hidden_size``).
      mlp_ratio: hidden width of each block's MLP over ``hidden_size``.
      frequency_dim: size of the sinusoidal time features.
    """

    latent_channels: int = 4
    sample_size: tuple[int, int] = (8, 8)
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    frequency_dim: int = 128

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"LatentFlowConfig: hidden_size {self.hidden_size} is not a "
                              f"multiple of num_heads {self.num_heads}")
        if len(tuple(self.sample_size)) != 2:
            raise ConfigError(f"LatentFlowConfig: sample_size {self.sample_size} must be (h, w)")


def timestep_features(t: Array, dim: int, max_period: float = 10000.0) -> Array:
    """``[cos(1000 t w_i), sin(1000 t w_i)]`` with ``w_i = max_period^(-i / (dim/2))``; (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (1000.0 * t.astype(jnp.float32))[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _modulate(h: Array, shift: Array, scale: Array) -> Array:
    return h * (1.0 + scale[:, None]) + shift[:, None]


class FlowBlock(nnx.Module):
    """One adaLN-Zero transformer block."""

    def __init__(self, config: LatentFlowConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.norm1 = nnx.LayerNorm(d, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.proj = nnx.Linear(d, d, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        hidden = int(d * config.mlp_ratio)
        self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, rngs=rngs)
        self.modulation = nnx.Linear(d, 6 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, h: Array, emb: Array) -> Array:
        b, n, d = h.shape
        s1, a1, g1, s2, a2, g2 = jnp.split(self.modulation(jax.nn.silu(emb)), 6, axis=-1)
        q, k, v = jnp.split(self.qkv(_modulate(self.norm1(h), s1, a1)), 3, axis=-1)
        heads = lambda a: a.reshape(b, n, self.num_heads, d // self.num_heads)  # noqa: E731
        attended = jax.nn.dot_product_attention(heads(q), heads(k), heads(v)).reshape(b, n, d)
        h = h + g1[:, None] * self.proj(attended)
        mlp = self.fc2(jax.nn.gelu(self.fc1(_modulate(self.norm2(h), s2, a2)), approximate=True))
        return h + g2[:, None] * mlp


class LatentFlowTransformer(nnx.Module):
    """``v_theta(z_t, t)`` over (B, h, w, c) latents; see the module docstring."""

    config_class = LatentFlowConfig

    def __init__(self, config: LatentFlowConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        del dtype, param_dtype  # small enough to run in float32 everywhere
        self.config = config
        d, c = config.hidden_size, config.latent_channels
        h, w = config.sample_size
        self.embed = nnx.Linear(c, d, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, h * w, d)))
        self.time1 = nnx.Linear(config.frequency_dim, d, rngs=rngs)
        self.time2 = nnx.Linear(d, d, rngs=rngs)
        self.blocks = nnx.List([FlowBlock(config, rngs=rngs) for _ in range(config.depth)])
        self.final_norm = nnx.LayerNorm(d, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        self.final_modulation = nnx.Linear(d, 2 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.out = nnx.Linear(d, c, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, z_t: Array, t: Array, context=None) -> Array:
        del context
        b, h, w, c = z_t.shape
        if (h, w) != tuple(self.config.sample_size) or c != self.config.latent_channels:
            raise ValueError(f"LatentFlowTransformer models {tuple(self.config.sample_size)} x "
                             f"{self.config.latent_channels} latents, got {h}x{w}x{c}")
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1), (b,))
        emb = self.time2(jax.nn.silu(self.time1(timestep_features(t, self.config.frequency_dim))))
        tokens = self.embed(z_t.astype(jnp.float32).reshape(b, h * w, c)) + self.pos[...]
        for block in self.blocks:
            tokens = block(tokens, emb)
        shift, scale = jnp.split(self.final_modulation(jax.nn.silu(emb)), 2, axis=-1)
        v = self.out(_modulate(self.final_norm(tokens), shift, scale))
        return v.reshape(b, h, w, c)
