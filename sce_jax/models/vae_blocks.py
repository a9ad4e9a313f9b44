"""Building blocks of the diffusers autoencoders, in Flax NNX, NHWC.

Each class mirrors the diffusers module of the same name layer for layer, and names its
sub-modules exactly as diffusers does (``norm1``, ``conv1``, ``to_q``, ``to_out.0``,
``downsamplers.0.conv`` ...), so :mod:`sce_jax.weights.torch_layout` maps a diffusers state dict
onto them by layer type alone. Only the inference path of the blocks used by the autoencoders is
ported: no time embedding, no dropout (diffusers' VAEs use dropout 0), no gradient checkpointing.

Precision: every layer computes in ``dtype`` (float32 or bfloat16) with parameters stored in
``param_dtype``. Group normalisation computes its statistics and the normalisation itself in
float32 whatever ``dtype`` is, and the attention softmax runs in float32 (as diffusers'
``upcast_softmax=True`` asks), so bfloat16 compute stays numerically safe.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.conv import conv_general_dilated

Array = jax.Array
DType = jnp.dtype | type


def _mish(x: Array) -> Array:
    """``mish(x) = x * tanh(softplus(x))``."""
    return x * jnp.tanh(jax.nn.softplus(x))


def _gelu_exact(x: Array) -> Array:
    """``gelu(x) = x * Phi(x)`` with the exact normal CDF (PyTorch's ``nn.GELU()`` default)."""
    return jax.nn.gelu(x, approximate=False)


# diffusers.models.activations.ACT2CLS, by (lower-cased) name.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": _mish,
    "gelu": _gelu_exact,
    "relu": jax.nn.relu,
}


def activation_function(name: str) -> Callable[[Array], Array]:
    """The activation diffusers' ``get_activation(name)`` builds (names are case-insensitive).

    Raises:
      ValueError: for a name diffusers does not know.
    """
    fn = ACTIVATIONS.get(str(name).lower())
    if fn is None:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return fn


class Activation(nnx.Module):
    """A parameter-free activation layer (it holds an index in ``nn.Sequential`` lists)."""

    def __init__(self, name: str):
        self.name = str(name).lower()
        activation_function(self.name)  # fails early on an unknown name

    def __call__(self, x: Array) -> Array:
        return activation_function(self.name)(x)


class Dropout(nnx.Module):
    """A dropout slot of a PyTorch ``ModuleList`` / ``Sequential``: the identity at inference,
    no parameters (it keeps the indices of the layers after it)."""

    def __call__(self, x: Array) -> Array:
        return x


def upsample_nearest(x: Array, factor: int) -> Array:
    """Nearest-neighbour upsampling of NHWC ``x`` by an integer ``factor`` (each pixel -> f x f)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


@dataclasses.dataclass(frozen=True)
class LayerFactory:
    """Builds the NNX layers of a port with one compute dtype, parameter dtype and RNG stream."""

    rngs: nnx.Rngs
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
             padding: int | tuple[tuple[int, int], tuple[int, int]] | None = None,
             use_bias: bool = True) -> nnx.Conv:
        """``nn.Conv2d(in, out, k, stride, padding)``; ``padding`` defaults to ``k // 2``."""
        if padding is None:
            padding = kernel_size // 2
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), (stride, stride),
                        padding=padding, use_bias=use_bias, dtype=self.dtype,
                        param_dtype=self.param_dtype, rngs=self.rngs,
                        conv_general_dilated=conv_general_dilated)

    def linear(self, in_features: int, out_features: int, *, use_bias: bool = True) -> nnx.Linear:
        return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=self.dtype,
                          param_dtype=self.param_dtype, rngs=self.rngs)

    def group_norm(self, channels: int, groups: int, eps: float) -> "GroupNorm":
        """``nn.GroupNorm(groups, channels, eps)``: per sample and group of ``channels / groups``
        channels, ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance
        over the group's channels and all pixels; computed in float32 (two-pass variance)."""
        return GroupNorm(channels, num_groups=groups, epsilon=eps, use_fast_variance=False,
                         dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs)


class GroupNorm(nnx.GroupNorm):
    """``nnx.GroupNorm`` (same variables, same values) with its statistics taken per channel
    first, so every reduction runs over the pixels with the channels as the minor axis::

        m_c = mean_hw x_c,   mean_g = mean_{c in g} m_c
        v_c = mean_hw (x_c - mean_g)^2,   var_g = mean_{c in g} v_c   (two-pass variance)

    (each channel of a group has the same number of pixels, so these are the group's mean and
    biased variance). XLA:CPU reduces the flax layout ``(..., groups, channels / groups)``
    over a non-minor and a minor axis at once, 2-4x slower, forward and backward; the group
    norms were a third of the demo decoder's VJP. Statistics and normalisation in float32.
    """

    def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
        if mask is not None or self.reduction_axes is not None or self.axis_name is not None \
                or x.ndim < 3:
            return super().__call__(x, mask=mask)
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        out_dtype = x.dtype
        xf = x.astype(jnp.float32)
        b, c = x.shape[0], x.shape[-1]
        groups, size = self.num_groups, self.group_size
        pixels = tuple(range(1, x.ndim - 1))
        stats_shape = (b,) + (1,) * len(pixels) + (c,)

        def group_mean(per_channel):  # (B, C) -> (B, C): the mean over each channel's group
            g = jnp.mean(per_channel.reshape(b, groups, size), axis=-1, keepdims=True)
            return jnp.broadcast_to(g, (b, groups, size)).reshape(stats_shape)

        mean = group_mean(jnp.mean(xf, axis=pixels))
        centred = xf - mean
        var = group_mean(jnp.mean(centred * centred, axis=pixels))
        mul = jax.lax.rsqrt(var + self.epsilon)
        if scale is not None:
            mul = mul * scale.astype(jnp.float32)
        y = centred * mul
        if bias is not None:
            y = y + bias.astype(jnp.float32)
        return y.astype(out_dtype)


class ResnetBlock2D(nnx.Module):
    """diffusers ``ResnetBlock2D`` without time embedding::

        h = conv1(act(norm1(x)));  h = conv2(act(norm2(h)))
        y = shortcut(x) + h        (shortcut: a 1x1 conv when the channel count changes)
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, eps: float,
                 act_fn: str, make: LayerFactory):
        self.norm1 = make.group_norm(in_channels, groups, eps)
        self.conv1 = make.conv(in_channels, out_channels, 3)
        self.norm2 = make.group_norm(out_channels, groups, eps)
        self.conv2 = make.conv(out_channels, out_channels, 3)
        self.nonlinearity = Activation(act_fn)
        self.conv_shortcut = (make.conv(in_channels, out_channels, 1)
                              if in_channels != out_channels else None)

    def __call__(self, x: Array) -> Array:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nnx.Module):
    """diffusers ``Attention`` as the VAE mid-block uses it: spatial self-attention with a
    residual connection, group norm in front, ``heads = channels / head_dim``::

        h = group_norm(x) as (B, HW, C);  q, k, v = to_q(h), to_k(h), to_v(h)
        a = softmax(q k^T / sqrt(head_dim)) v   (per head; logits and softmax in float32)
        y = x + to_out[0](a)
    """

    def __init__(self, channels: int, *, head_dim: int, groups: int, eps: float,
                 make: LayerFactory):
        if channels % head_dim:
            raise ValueError(f"attention: {channels} channels are not a multiple of head_dim {head_dim}")
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.group_norm = make.group_norm(channels, groups, eps)
        self.to_q = make.linear(channels, channels)
        self.to_k = make.linear(channels, channels)
        self.to_v = make.linear(channels, channels)
        self.to_out = nnx.List([make.linear(channels, channels)])  # to_out.1 is a dropout

    def __call__(self, x: Array) -> Array:
        b, height, width, c = x.shape
        h = self.group_norm(x).reshape(b, height * width, c)
        split = (b, height * width, self.heads, self.head_dim)
        q = self.to_q(h).reshape(split)
        k = self.to_k(h).reshape(split)
        v = self.to_v(h).reshape(split)
        logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(self.head_dim), axis=-1)
        a = jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v).reshape(b, height * width, c)
        return x + self.to_out[0](a).reshape(b, height, width, c)


class Downsample2D(nnx.Module):
    """diffusers ``Downsample2D(use_conv=True, padding=0)``: pad one pixel at the bottom and
    right, then a 3x3 convolution with stride 2 (``H -> floor((H - 2) / 2) + 1``)."""

    def __init__(self, channels: int, *, make: LayerFactory):
        self.conv = make.conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)))

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """diffusers ``Upsample2D(use_conv=True)``: nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int, *, make: LayerFactory):
        self.conv = make.conv(channels, channels, 3)

    def __call__(self, x: Array) -> Array:
        return self.conv(upsample_nearest(x, 2))


class DownEncoderBlock2D(nnx.Module):
    """diffusers ``DownEncoderBlock2D``: ``num_layers`` resnets, then an optional downsampler."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int,
                 eps: float, act_fn: str, add_downsample: bool, make: LayerFactory):
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups=groups,
                          eps=eps, act_fn=act_fn, make=make)
            for i in range(num_layers)])
        self.downsamplers = (nnx.List([Downsample2D(out_channels, make=make)])
                             if add_downsample else None)

    def __call__(self, x: Array) -> Array:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                x = downsampler(x)
        return x


class UpDecoderBlock2D(nnx.Module):
    """diffusers ``UpDecoderBlock2D``: ``num_layers`` resnets, then an optional upsampler."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int,
                 eps: float, act_fn: str, add_upsample: bool, make: LayerFactory):
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups=groups,
                          eps=eps, act_fn=act_fn, make=make)
            for i in range(num_layers)])
        self.upsamplers = (nnx.List([Upsample2D(out_channels, make=make)])
                           if add_upsample else None)

    def __call__(self, x: Array) -> Array:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                x = upsampler(x)
        return x


class UNetMidBlock2D(nnx.Module):
    """diffusers ``UNetMidBlock2D`` with one layer: ``resnets[0]``, then (optionally)
    ``attentions[0]``, then ``resnets[1]``. The attention has one head over all channels."""

    def __init__(self, channels: int, *, groups: int, eps: float, act_fn: str,
                 add_attention: bool, make: LayerFactory):
        self.resnets = nnx.List([
            ResnetBlock2D(channels, channels, groups=groups, eps=eps, act_fn=act_fn, make=make)
            for _ in range(2)])
        self.attentions = nnx.List(
            [Attention(channels, head_dim=channels, groups=groups, eps=eps, make=make)]
            if add_attention else [])

    def __call__(self, x: Array) -> Array:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)
