"""A Flax NNX port of diffusers' ``AutoencoderKL`` (the Stable Diffusion VAE), NHWC.

Semantics are diffusers' own: images in [-1, 1], latents raw (unscaled; the latent scaling
``scaling_factor`` / ``shift_factor`` / ``latents_mean`` / ``latents_std`` of the config is
applied by :class:`sce_jax.generator.Generator`, as diffusers pipelines apply it). Only the
layout differs: images are ``(N, H, W, C)`` and latents ``(N, h, w, c)``.

    posterior = vae.encode(images)          # DiagonalGaussian over latents
    z = posterior.mode()                    # or posterior.sample(key)
    images = vae.decode(z)

The module tree mirrors diffusers' (``encoder.down_blocks.0.resnets.0.conv1``,
``decoder.mid_block.attentions.0.to_out.0`` ...), so a diffusers state dict loads by layer type
(:mod:`sce_jax.weights.torch_layout`) without renames. Old checkpoints that name the mid-block
attention ``query`` / ``key`` / ``value`` / ``proj_attn`` (diffusers before 0.14) are mapped by
:func:`legacy_key_rename`, the map diffusers applies on load; 1x1-convolution-shaped attention
weights of such files load as the linear layers they are.

Load a real checkpoint with :meth:`AutoencoderKL.from_pretrained` (a diffusers folder, a
pipeline folder with ``vae/``, or a repo id in the local Hugging Face cache; never the network).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.diffusers_component import DiffusersComponent
from sce_jax.models.vae_blocks import (
    ACTIVATIONS,
    DownEncoderBlock2D,
    LayerFactory,
    UNetMidBlock2D,
    UpDecoderBlock2D,
)
from sce_jax.weights.model_config import ConfigError

Array = jax.Array

SUPPORTED_DOWN_BLOCKS = ("DownEncoderBlock2D",)
SUPPORTED_UP_BLOCKS = ("UpDecoderBlock2D",)
RESNET_EPS = 1e-6  # diffusers' Encoder/Decoder fix eps at 1e-6 for every norm
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """The fields of a diffusers ``AutoencoderKL`` ``config.json``, with diffusers' defaults.

    Attributes:
      in_channels / out_channels: image channels in and out.
      down_block_types / up_block_types: one entry per level; only ``DownEncoderBlock2D`` /
        ``UpDecoderBlock2D`` exist for this class.
      block_out_channels: channels per level (encoder order); the image is downsampled by
        ``2 ** (len - 1)``.
      layers_per_block: resnets per encoder level (the decoder has one more per level).
      act_fn: activation of the resnets: silu/swish, mish, gelu, relu (case-insensitive).
      latent_channels: channels of the latents.
      norm_num_groups: groups of every GroupNorm; must divide every block's channels.
      sample_size: the training image size (int or (h, w)); stored only.
      scaling_factor, shift_factor, latents_mean, latents_std: the latent scaling a pipeline
        applies around the VAE; stored only (see :class:`sce_jax.generator.LatentScaling`).
      force_upcast: diffusers pipelines run the VAE in float32 when this is true (its
        activations overflow float16). Stored only: here the compute dtype is the ``dtype``
        argument of the model; bfloat16 has float32's range, so the flag matters less.
      use_quant_conv / use_post_quant_conv: the 1x1 convolutions after the encoder and before
        the decoder (absent in SD3/FLUX VAEs).
      mid_block_add_attention: whether the mid blocks have their self-attention.
    """

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        def fail(field: str, expected: str):
            raise ConfigError(f"AutoencoderKLConfig.{field}={getattr(self, field)!r} is not "
                              f"supported; expected {expected}")

        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("latents_mean", "latents_std"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.sample_size, list):
            object.__setattr__(self, "sample_size", tuple(self.sample_size))

        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups",
                     "layers_per_block"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive integer")
        if not isinstance(self.act_fn, str) or self.act_fn.lower() not in ACTIVATIONS:
            fail("act_fn", f"one of {sorted(ACTIVATIONS)}")
        channels = self.block_out_channels
        if (not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                    for c in channels)):
            fail("block_out_channels", "a non-empty list of positive integers")
        for c in channels:
            if c % self.norm_num_groups:
                fail("norm_num_groups", f"a divisor of every entry of block_out_channels {list(channels)}")
        for name, supported in (("down_block_types", SUPPORTED_DOWN_BLOCKS),
                                ("up_block_types", SUPPORTED_UP_BLOCKS)):
            types = getattr(self, name)
            bad = [t for t in types if t not in supported]
            if bad:
                fail(name, f"only {list(supported)} entries (unsupported: {bad})")
            if len(types) != len(channels):
                fail(name, f"one entry per block_out_channels entry ({len(channels)})")
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.latent_channels:
                fail(name, f"None or {self.latent_channels} values (one per latent channel)")

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size."""
        return 2 ** (len(self.block_out_channels) - 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DiagonalGaussian:
    """diffusers' ``DiagonalGaussianDistribution`` over NHWC latents (a pytree).

    ``mean`` and ``logvar`` are the two channel halves of the encoder's moments, ``logvar``
    clipped to [-30, 20]; ``std = exp(logvar / 2)``, ``var = exp(logvar)``.
    """

    mean: Array
    logvar: Array

    @classmethod
    def from_moments(cls, moments: Array) -> "DiagonalGaussian":
        """Splits ``(N, h, w, 2c)`` moments into mean (first c channels) and log-variance."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    @property
    def std(self) -> Array:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> Array:
        return jnp.exp(self.logvar)

    def mode(self) -> Array:
        """The most likely latent: the mean."""
        return self.mean

    def sample(self, key: Array) -> Array:
        """``mean + std * eps``, ``eps ~ N(0, I)`` drawn from ``key``."""
        eps = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self, other: "DiagonalGaussian | None" = None) -> Array:
        """KL divergence per example, summed over (h, w, c)::

            KL(p || N(0, I)) = 1/2 sum(mean^2 + var - 1 - logvar)
            KL(p || q)       = 1/2 sum((mean_p - mean_q)^2 / var_q + var_p / var_q - 1
                                       - logvar_p + logvar_q)
        """
        if other is None:
            terms = jnp.square(self.mean) + self.var - 1.0 - self.logvar
        else:
            terms = (jnp.square(self.mean - other.mean) / other.var + self.var / other.var
                     - 1.0 - self.logvar + other.logvar)
        return 0.5 * jnp.sum(terms, axis=(1, 2, 3))


class Encoder(nnx.Module):
    """diffusers ``Encoder`` (double_z): image -> ``2 * latent_channels`` moments."""

    def __init__(self, config: AutoencoderKLConfig, *, make: LayerFactory):
        channels = config.block_out_channels
        groups, act = config.norm_num_groups, config.act_fn
        self.conv_in = make.conv(config.in_channels, channels[0], 3)
        blocks, out = [], channels[0]
        for i, c in enumerate(channels):
            blocks.append(DownEncoderBlock2D(
                out, c, num_layers=config.layers_per_block, groups=groups, eps=RESNET_EPS,
                act_fn=act, add_downsample=i < len(channels) - 1, make=make))
            out = c
        self.down_blocks = nnx.List(blocks)
        self.mid_block = UNetMidBlock2D(channels[-1], groups=groups, eps=RESNET_EPS, act_fn=act,
                                        add_attention=config.mid_block_add_attention, make=make)
        self.conv_norm_out = make.group_norm(channels[-1], groups, RESNET_EPS)
        self.conv_out = make.conv(channels[-1], 2 * config.latent_channels, 3)

    def __call__(self, x: Array) -> Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        # diffusers' conv_act is always SiLU, whatever act_fn the resnets use.
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """diffusers ``Decoder`` (group norm): latents -> image."""

    def __init__(self, config: AutoencoderKLConfig, *, make: LayerFactory):
        channels = tuple(reversed(config.block_out_channels))
        groups, act = config.norm_num_groups, config.act_fn
        self.conv_in = make.conv(config.latent_channels, channels[0], 3)
        self.mid_block = UNetMidBlock2D(channels[0], groups=groups, eps=RESNET_EPS, act_fn=act,
                                        add_attention=config.mid_block_add_attention, make=make)
        blocks, out = [], channels[0]
        for i, c in enumerate(channels):
            blocks.append(UpDecoderBlock2D(
                out, c, num_layers=config.layers_per_block + 1, groups=groups, eps=RESNET_EPS,
                act_fn=act, add_upsample=i < len(channels) - 1, make=make))
            out = c
        self.up_blocks = nnx.List(blocks)
        self.conv_norm_out = make.group_norm(channels[-1], groups, RESNET_EPS)
        self.conv_out = make.conv(channels[-1], config.out_channels, 3)

    def __call__(self, z: Array) -> Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


_LEGACY_ATTENTION = re.compile(
    r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def legacy_key_rename(key: str) -> str:
    """Maps a pre-0.14 diffusers attention key to its current name (others pass unchanged).

    ``<attn>.query`` -> ``<attn>.to_q``, ``key`` -> ``to_k``, ``value`` -> ``to_v``,
    ``proj_attn`` -> ``to_out.0``, for ``<attn>`` = ``{encoder,decoder}.mid_block.attentions.N``
    -- the map diffusers' ``ModelMixin._fix_state_dict_keys_on_load`` applies.
    """
    m = _LEGACY_ATTENTION.match(key)
    if m is None:
        return key
    return f"{m.group(1)}.{_LEGACY_NAMES[m.group(2)]}.{m.group(3)}"


class AutoencoderKL(DiffusersComponent, nnx.Module):
    """diffusers ``AutoencoderKL`` in Flax NNX; images and latents NHWC.

    Args:
      config: the architecture.
      rngs: for the (random) initial parameters.
      dtype: compute dtype (float32 or bfloat16); norms and softmax compute in float32.
      param_dtype: parameter dtype (float32 unless memory matters).
    """

    config_class = AutoencoderKLConfig
    diffusers_class_name = "AutoencoderKL"
    key_rename = staticmethod(legacy_key_rename)  # old attention tensor names

    def __init__(self, config: AutoencoderKLConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32):
        self.config = config
        self.dtype = dtype
        make = LayerFactory(rngs, dtype, param_dtype)
        self.encoder = Encoder(config, make=make)
        self.decoder = Decoder(config, make=make)
        latent = config.latent_channels
        self.quant_conv = make.conv(2 * latent, 2 * latent, 1) if config.use_quant_conv else None
        self.post_quant_conv = make.conv(latent, latent, 1) if config.use_post_quant_conv else None

    def _check(self, x: Array, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"AutoencoderKL.{what}: expected (N, H, W, {channels}) NHWC input, "
                             f"got shape {tuple(x.shape)}")

    def encode(self, images: Array) -> DiagonalGaussian:
        """The posterior over latents of ``images`` ((N, H, W, C) in [-1, 1])."""
        self._check(images, self.config.in_channels, "encode")
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, latents: Array) -> Array:
        """Images in [-1, 1] (not clipped) of raw latents (N, h, w, latent_channels)."""
        self._check(latents, self.config.latent_channels, "decode")
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)

    def __call__(self, images: Array, sample_posterior: bool = False,
                 key: Array | None = None) -> Array:
        """Reconstruction: decode the posterior's mode (or a sample drawn with ``key``)."""
        if sample_posterior and key is None:
            raise ValueError("AutoencoderKL: sample_posterior=True needs a PRNG key")
        posterior = self.encode(images)
        if sample_posterior:
            z = posterior.sample(key)
        else:
            z = posterior.mode()
        return self.decode(z)
