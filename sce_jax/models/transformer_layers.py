"""Building blocks of diffusers' diffusion transformers (MMDiT), in Flax NNX.

Each class mirrors the diffusers module of the same name and names its sub-modules and
parameters as diffusers does (``linear``, ``to_q``, ``add_k_proj``, ``to_out.0``,
``norm_added_q.weight``, ``ff.net.0.proj``, ``ff.net.2`` ...), so
:mod:`sce_jax.weights.torch_layout` maps a diffusers state dict onto them by layer type alone.
Only the inference path is ported (no dropout, no chunked feed-forward, no fused projections).
The attention itself is :func:`sce_jax.models.attention.attention` (head by head on CPU), which
the FLUX and ViT ports use too.

Tokens are ``(B, T, D)``. Precision: linear layers and attention compute in ``dtype``
(float32 or bfloat16) over parameters stored in ``param_dtype``; layer/RMS normalisation, the
adaptive modulation ``norm(x) * (1 + scale) + shift``, the attention logits and softmax, the
timestep embedding and the residual stream stay in float32, so bfloat16 compute only rounds
the matrix products.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.attention import attention
from sce_jax.models.vae_blocks import Dropout, LayerFactory

Array = jax.Array

LAYER_NORM_EPS = 1e-6  # every norm of diffusers' SD3 blocks uses eps = 1e-6


def linear(make: LayerFactory, in_features: int, out_features: int) -> nnx.Linear:
    """``nn.Linear(in, out)`` computing in ``make.dtype`` and accumulating in float32::

        y = dot(x.astype(dtype), W.astype(dtype), accumulate float32) + b     (float32 out)

    With bfloat16 operands XLA:CPU then runs the product on the bfloat16 matrix units (AMX)
    instead of upcasting both operands to float32 on every call (weights included), and GPUs
    accumulate in float32 as they would anyway; for float32 it is the plain product.
    """
    return nnx.Linear(in_features, out_features, dtype=make.dtype, param_dtype=make.param_dtype,
                      preferred_element_type=jnp.float32, rngs=make.rngs)


def layer_norm(x: Array, eps: float = LAYER_NORM_EPS) -> Array:
    """``nn.LayerNorm(dim, elementwise_affine=False)`` over the last axis, in float32::

        y = (x - mean(x)) / sqrt(var(x) + eps)        (biased variance)
    """
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
    """``x * (1 + scale) + shift`` with per-example ``shift, scale`` (B, D) over tokens (B, T, D)."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


def timestep_embedding(timesteps: Array, dim: int = 256, max_period: float = 10000.0) -> Array:
    """diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``, float32::

        f_i = exp(-ln(max_period) i / (dim / 2)),  i = 0 .. dim/2 - 1
        emb(t) = [cos(t f), sin(t f)]                      (B, dim)
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class RMSNorm(nnx.Module):
    """diffusers ``RMSNorm(dim, eps)`` with its ``weight``, over the last axis, in float32::

        y = x / sqrt(mean(x^2) + eps) * weight
    """

    def __init__(self, dim: int, *, eps: float = LAYER_NORM_EPS, param_dtype=jnp.float32):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        xf = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
        y = xf * jax.lax.rsqrt(var + self.eps) * self.weight[...].astype(jnp.float32)
        return y.astype(dtype)


def _rms_norm(dim: int, make: LayerFactory) -> RMSNorm:
    return RMSNorm(dim, param_dtype=make.param_dtype)


# diffusers Attention's ``qk_norm`` values this port supports -> the per-head norm it builds.
QK_NORMS: dict[str, Callable[[int, LayerFactory], nnx.Module]] = {
    "rms_norm": _rms_norm,
}


class GELU(nnx.Module):
    """diffusers ``GELU(dim_in, dim_out, approximate="tanh")``: ``gelu_tanh(proj(x))``."""

    def __init__(self, dim_in: int, dim_out: int, *, make: LayerFactory):
        self.proj = linear(make, dim_in, dim_out)

    def __call__(self, x: Array) -> Array:
        return jax.nn.gelu(self.proj(x), approximate=True)


class FeedForward(nnx.Module):
    """diffusers ``FeedForward(dim, dim_out, activation_fn="gelu-approximate")``, mult 4::

        ff(x) = net.2(gelu_tanh(net.0.proj(x)))        (net.1 is a dropout, p = 0)
    """

    def __init__(self, dim: int, dim_out: int | None = None, *, mult: int = 4,
                 make: LayerFactory):
        inner = dim * mult
        self.net = nnx.List([GELU(dim, inner, make=make), Dropout(),
                             linear(make, inner, dim_out or dim)])

    def __call__(self, x: Array) -> Array:
        for layer in self.net:
            x = layer(x)
        return x


class AdaLayerNormZero(nnx.Module):
    """diffusers ``AdaLayerNormZero(dim)`` (``chunks=6``) and ``SD35AdaLayerNormZeroX(dim)``
    (``chunks=9``): ``linear(silu(emb))`` split into ``chunks`` (B, D) modulation vectors, in
    diffusers' order (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
    [, shift_msa2, scale_msa2, gate_msa2]), float32. The normalised, modulated input is
    :func:`modulate` ``(layer_norm(x), shift_msa, scale_msa)``.
    """

    def __init__(self, dim: int, *, chunks: int = 6, make: LayerFactory):
        self.chunks = chunks
        self.linear = linear(make, dim, chunks * dim)

    def __call__(self, emb: Array) -> list[Array]:
        params = self.linear(jax.nn.silu(emb)).astype(jnp.float32)
        return jnp.split(params, self.chunks, axis=-1)


class AdaLayerNormContinuous(nnx.Module):
    """diffusers ``AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)``::

        scale, shift = split(linear(silu(c)), 2)           (note: scale first)
        y = layer_norm(x) * (1 + scale) + shift
    """

    def __init__(self, dim: int, conditioning_dim: int, *, make: LayerFactory):
        self.linear = linear(make, conditioning_dim, 2 * dim)

    def __call__(self, x: Array, conditioning: Array) -> Array:
        params = self.linear(jax.nn.silu(conditioning)).astype(jnp.float32)
        scale, shift = jnp.split(params, 2, axis=-1)
        return modulate(layer_norm(x), shift, scale)


class Attention(nnx.Module):
    """diffusers ``Attention`` with ``JointAttnProcessor2_0``: self-attention over the image
    tokens, joined (when ``added_kv``) by the context tokens' own projections::

        q = [norm_q(to_q x), norm_added_q(add_q_proj c)]    (per head; k, v likewise)
        a = softmax(q k^T / sqrt(head_dim)) v               (logits, softmax in float32)
        x' = to_out.0(a[:T_x]),   c' = to_add_out(a[T_x:])  (c' absent if context_pre_only)

    Args:
      dim: token width (query and output).
      heads, head_dim: the heads; ``heads * head_dim`` is the projection width.
      qk_norm: None or a key of :data:`QK_NORMS` (per-head norm of queries and keys).
      added_kv: build the context projections (``add_{q,k,v}_proj``) -- a joint block.
      context_pre_only: the last joint block's attention: context tokens take part as keys and
        values, but their output is dropped (no ``to_add_out``).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, *, qk_norm: str | None,
                 added_kv: bool, context_pre_only: bool = False, make: LayerFactory):
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = linear(make, dim, inner)
        self.to_k = linear(make, dim, inner)
        self.to_v = linear(make, dim, inner)
        norm = QK_NORMS[qk_norm] if qk_norm is not None else None
        self.norm_q = norm(head_dim, make) if norm else None
        self.norm_k = norm(head_dim, make) if norm else None
        if added_kv:
            self.add_q_proj = linear(make, dim, inner)
            self.add_k_proj = linear(make, dim, inner)
            self.add_v_proj = linear(make, dim, inner)
            self.norm_added_q = norm(head_dim, make) if norm else None
            self.norm_added_k = norm(head_dim, make) if norm else None
        else:
            self.add_q_proj = self.add_k_proj = self.add_v_proj = None
            self.norm_added_q = self.norm_added_k = None
        self.to_out = nnx.List([linear(make, inner, dim)])  # to_out.1 is a dropout
        self.to_add_out = linear(make, inner, dim) if added_kv and not context_pre_only else None

    def _heads(self, x: Array, proj: nnx.Linear, norm: nnx.Module | None) -> Array:
        b, t, _ = x.shape
        y = proj(x).reshape(b, t, self.heads, self.head_dim)
        return norm(y) if norm is not None else y

    def __call__(self, x: Array, context: Array | None = None) -> tuple[Array, Array | None]:
        """``(x', c')`` for image tokens ``x`` (B, T, D) and context tokens ``context``."""
        q = self._heads(x, self.to_q, self.norm_q)
        k = self._heads(x, self.to_k, self.norm_k)
        v = self._heads(x, self.to_v, None)
        tokens = x.shape[1]
        if context is not None:
            q = jnp.concatenate([q, self._heads(context, self.add_q_proj, self.norm_added_q)], 1)
            k = jnp.concatenate([k, self._heads(context, self.add_k_proj, self.norm_added_k)], 1)
            v = jnp.concatenate([v, self._heads(context, self.add_v_proj, None)], 1)
        dtype = self.to_q.dtype or jnp.float32
        q, k, v = (a.astype(dtype) for a in (q, k, v))
        a = attention(q, k, v)
        a = a.reshape(a.shape[0], a.shape[1], self.heads * self.head_dim)
        out = self.to_out[0](a[:, :tokens])
        if context is None or self.to_add_out is None:
            return out, None
        return out, self.to_add_out(a[:, tokens:])
