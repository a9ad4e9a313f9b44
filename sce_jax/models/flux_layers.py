"""The layers of diffusers' FLUX transformer, in Flax NNX: embeddings, adaptive norms, RoPE,
joint attention, feed-forward.

Each class mirrors the diffusers module of the same name and names its sub-modules as
diffusers does (``linear_1``, ``to_q``, ``norm_added_q``, ``net.0.proj`` ...), so
:mod:`sce_jax.weights.torch_layout` maps a diffusers state dict onto them by layer type alone.
Inference only: no dropout (a parameter-free :class:`Dropout` keeps the list indices), no
IP-adapter, no LoRA, no fused projections.

Precision: linear layers compute in ``dtype`` (float32 or bfloat16) with parameters in
``param_dtype``; layer norms, RMS norms, the rotary embedding and the attention softmax
compute in float32 and cast back, as diffusers does for its float16/bfloat16 runs. bfloat16
matrix products accumulate in float32 and round the result to bfloat16
(:func:`bf16_dot_general`): XLA:CPU upcasts a plain bfloat16 product to float32 and runs it at
float32 speed, while this form runs on the CPU's bfloat16 matrix units (a FLUX-width MLP
product, 768 x 3072 x 12288, on the 2-core Xeon: 617 ms float32, 691 ms plain bfloat16,
223 ms this way); GPUs accumulate bfloat16 products in float32 anyway.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.models.attention import attention
from sce_jax.models.vae_blocks import Dropout, LayerFactory

Array = jax.Array

TIME_PROJ_CHANNELS = 256   # CombinedTimestep*Embeddings: Timesteps(num_channels=256)
ROPE_THETA = 10000         # FluxPosEmbed(theta=10000)
NORM_EPS = 1e-6            # every LayerNorm and the attention's RMS norms in FLUX


def bf16_dot_general(lhs: Array, rhs: Array, dimension_numbers, precision=None,
                     preferred_element_type=None, **kwargs) -> Array:
    """``lax.dot_general``; with bfloat16 operands, accumulated in float32 and returned in
    bfloat16 (``nnx.Linear``'s ``dot_general`` hook)."""
    if lhs.dtype == jnp.bfloat16 and rhs.dtype == jnp.bfloat16 and preferred_element_type is None:
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                  preferred_element_type=jnp.float32, **kwargs)
        return out.astype(jnp.bfloat16)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)


class FluxLayerFactory(LayerFactory):
    """:class:`LayerFactory` whose linear layers use :func:`bf16_dot_general`."""

    def linear(self, in_features: int, out_features: int, *, use_bias: bool = True) -> nnx.Linear:
        return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=self.dtype,
                          param_dtype=self.param_dtype, rngs=self.rngs, dot_general=bf16_dot_general)


def layer_norm(x: Array, eps: float = NORM_EPS) -> Array:
    """``nn.LayerNorm(dim, elementwise_affine=False, eps)``: ``(x - mean) / sqrt(var + eps)``
    over the last axis (biased variance), in float32, returned in ``x``'s dtype."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    return (centred * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def gelu_tanh(x: Array) -> Array:
    """``nn.GELU(approximate="tanh")``: ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return jax.nn.gelu(x, approximate=True)


def timestep_embedding(t: Array, dim: int = TIME_PROJ_CHANNELS, max_period: float = 10000.0) -> Array:
    """diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``::

        f_i = exp(-ln(max_period) i / (dim / 2)),  i = 0 .. dim/2 - 1
        emb(t) = [cos(t f), sin(t f)]                                 (B, dim), float32
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rope_tables(ids, axes_dim: tuple[int, ...], theta: float = ROPE_THETA) -> tuple[Array, Array]:
    """``FluxPosEmbed``: the cosines and sines of the 3-axis rotary embedding of ``ids`` (S, n).

    For axis ``a`` of width ``d_a`` and position ``p = ids[:, a]``::

        w_j = theta ** (-2j / d_a),  j = 0 .. d_a/2 - 1;   angle = p w_j
        cos_a = repeat_interleave(cos(angle), 2), sin_a likewise          (S, d_a)

    and the tables are the concatenation over axes, (S, sum d_a) = (S, head_dim). Concrete
    (numpy) ids are evaluated in float64 as diffusers does; traced ids in float32.
    """
    if isinstance(ids, np.ndarray):
        xp, pos = np, np.asarray(ids, np.float32).astype(np.float64)
    else:
        xp, pos = jnp, jnp.asarray(ids).astype(jnp.float32)
    cos_out, sin_out = [], []
    for axis, d in enumerate(axes_dim):
        freqs = 1.0 / (theta ** (xp.arange(0, d, 2, dtype=pos.dtype) / d))
        angle = pos[:, axis, None] * freqs[None, :]
        cos_out.append(xp.repeat(xp.cos(angle), 2, axis=-1))
        sin_out.append(xp.repeat(xp.sin(angle), 2, axis=-1))
    cos = xp.concatenate(cos_out, axis=-1)
    sin = xp.concatenate(sin_out, axis=-1)
    return jnp.asarray(cos, jnp.float32), jnp.asarray(sin, jnp.float32)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """diffusers' ``apply_rotary_emb(use_real=True, use_real_unbind_dim=-1)`` on ``x``
    (B, S, heads, head_dim): with ``(x_re, x_im)`` the interleaved pairs of the last axis,
    ``rot(x) = interleave(-x_im, x_re)`` and ``y = x cos + rot(x) sin`` (float32 math)."""
    xf = x.astype(jnp.float32)
    pairs = xf.reshape(*x.shape[:-1], -1, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    out = xf * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.astype(x.dtype)


class RMSNorm(nnx.Module):
    """``torch.nn.RMSNorm(dim, eps)`` over the last axis: ``y = x / sqrt(mean(x^2) + eps) * weight``
    (float32 math). Its one parameter keeps PyTorch's name, ``weight``."""

    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(x.dtype)


class TimestepEmbedding(nnx.Module):
    """diffusers ``TimestepEmbedding(in, dim)``: ``linear_2(silu(linear_1(x)))``."""

    def __init__(self, in_channels: int, dim: int, *, make: LayerFactory):
        self.linear_1 = make.linear(in_channels, dim)
        self.linear_2 = make.linear(dim, dim)

    def __call__(self, x: Array) -> Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class PixArtAlphaTextProjection(nnx.Module):
    """diffusers ``PixArtAlphaTextProjection(in, dim, act_fn="silu")``:
    ``linear_2(silu(linear_1(x)))``."""

    def __init__(self, in_features: int, dim: int, *, make: LayerFactory):
        self.linear_1 = make.linear(in_features, dim)
        self.linear_2 = make.linear(dim, dim)

    def __call__(self, x: Array) -> Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class CombinedTimestepTextProjEmbeddings(nnx.Module):
    """diffusers' conditioning vector of FLUX, with or without the guidance embedding::

        temb = timestep_embedder(emb(t)) [+ guidance_embedder(emb(g))] + text_embedder(pooled)

    (``CombinedTimestepGuidanceTextProjEmbeddings`` when ``guidance``, FLUX.1-dev; else
    ``CombinedTimestepTextProjEmbeddings``, FLUX.1-schnell). ``t`` and ``g`` are already on
    the 0..1000 scale.
    """

    def __init__(self, dim: int, pooled_projection_dim: int, *, guidance: bool, make: LayerFactory):
        self.timestep_embedder = TimestepEmbedding(TIME_PROJ_CHANNELS, dim, make=make)
        self.guidance_embedder = (TimestepEmbedding(TIME_PROJ_CHANNELS, dim, make=make)
                                  if guidance else None)
        self.text_embedder = PixArtAlphaTextProjection(pooled_projection_dim, dim, make=make)

    def __call__(self, timestep: Array, guidance: Array | None, pooled: Array) -> Array:
        dtype = pooled.dtype
        temb = self.timestep_embedder(timestep_embedding(timestep).astype(dtype))
        if self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(timestep_embedding(guidance).astype(dtype))
        return temb + self.text_embedder(pooled)


class AdaLayerNormZero(nnx.Module):
    """diffusers ``AdaLayerNormZero`` (``n_chunks=6``) and ``AdaLayerNormZeroSingle`` (3)::

        (shift, scale, gate, ...) = chunks of linear(silu(temb))
        x' = layer_norm(x) (1 + scale) + shift

    Returns ``x'`` and the remaining chunks after ``shift, scale``.
    """

    def __init__(self, dim: int, n_chunks: int, *, make: LayerFactory):
        self.n_chunks = n_chunks
        self.linear = make.linear(dim, n_chunks * dim)

    def __call__(self, x: Array, temb: Array) -> tuple[Array, ...]:
        chunks = jnp.split(self.linear(jax.nn.silu(temb)), self.n_chunks, axis=-1)
        shift, scale = chunks[0], chunks[1]
        x = layer_norm(x) * (1 + scale[:, None]) + shift[:, None]
        return (x, *chunks[2:])


class AdaLayerNormContinuous(nnx.Module):
    """diffusers ``AdaLayerNormContinuous(elementwise_affine=False, eps=1e-6)``::

        (scale, shift) = chunks of linear(silu(temb));  y = layer_norm(x) (1 + scale) + shift

    (note the order: scale first, unlike the AdaLN-Zero norms).
    """

    def __init__(self, dim: int, conditioning_dim: int, *, make: LayerFactory):
        self.linear = make.linear(conditioning_dim, 2 * dim)

    def __call__(self, x: Array, temb: Array) -> Array:
        scale, shift = jnp.split(self.linear(jax.nn.silu(temb)), 2, axis=-1)
        return layer_norm(x) * (1 + scale[:, None]) + shift[:, None]


class GELU(nnx.Module):
    """diffusers ``GELU(dim_in, dim_out, approximate="tanh")``: ``gelu_tanh(proj(x))``."""

    def __init__(self, dim_in: int, dim_out: int, *, make: LayerFactory):
        self.proj = make.linear(dim_in, dim_out)

    def __call__(self, x: Array) -> Array:
        return gelu_tanh(self.proj(x))


class FeedForward(nnx.Module):
    """diffusers ``FeedForward(dim, dim_out=dim, activation_fn="gelu-approximate")``:
    ``net.2(net.0(x))`` with ``net.0 = GELU(dim, 4 dim)`` and ``net.1`` a dropout."""

    def __init__(self, dim: int, *, make: LayerFactory, mult: int = 4):
        self.net = nnx.List([GELU(dim, mult * dim, make=make), Dropout(),
                             make.linear(mult * dim, dim)])

    def __call__(self, x: Array) -> Array:
        for layer in self.net:
            x = layer(x)
        return x


class FluxAttention(nnx.Module):
    """diffusers ``FluxAttention`` with ``FluxAttnProcessor``.

    Per stream, ``q, k, v = to_q(x), to_k(x), to_v(x)`` split into heads, RMS norm on q and k
    (``norm_q``/``norm_k``; the context stream's ``norm_added_q``/``norm_added_k`` after
    ``add_q_proj``...). With a context, the sequence is ``[context; image]``. RoPE on q and k,
    then attention. Joint blocks split the result back and project each part (``to_out.0``,
    ``to_add_out``); a ``pre_only`` block (single-stream) returns the attention output as is.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, *, joint: bool, make: LayerFactory):
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.norm_q = RMSNorm(head_dim, eps=NORM_EPS, param_dtype=make.param_dtype)
        self.norm_k = RMSNorm(head_dim, eps=NORM_EPS, param_dtype=make.param_dtype)
        self.to_q = make.linear(dim, inner)
        self.to_k = make.linear(dim, inner)
        self.to_v = make.linear(dim, inner)
        if joint:
            self.to_out = nnx.List([make.linear(inner, dim)])    # to_out.1 is a dropout
            self.norm_added_q = RMSNorm(head_dim, eps=NORM_EPS, param_dtype=make.param_dtype)
            self.norm_added_k = RMSNorm(head_dim, eps=NORM_EPS, param_dtype=make.param_dtype)
            self.add_q_proj = make.linear(dim, inner)
            self.add_k_proj = make.linear(dim, inner)
            self.add_v_proj = make.linear(dim, inner)
            self.to_add_out = make.linear(inner, dim)
        else:
            self.to_out = None

    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], -1, self.head_dim)

    def __call__(self, x: Array, rope: tuple[Array, Array], context: Array | None = None):
        q = self.norm_q(self._heads(self.to_q(x)))
        k = self.norm_k(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        if context is not None:
            q = jnp.concatenate([self.norm_added_q(self._heads(self.add_q_proj(context))), q], axis=1)
            k = jnp.concatenate([self.norm_added_k(self._heads(self.add_k_proj(context))), k], axis=1)
            v = jnp.concatenate([self._heads(self.add_v_proj(context)), v], axis=1)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attention(q, k, v.astype(q.dtype))
        out = out.reshape(*out.shape[:2], -1)
        if context is None:
            return out
        n_context = context.shape[1]
        return self.to_out[0](out[:, n_context:]), self.to_add_out(out[:, :n_context])
