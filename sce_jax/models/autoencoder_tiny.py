"""A Flax NNX port of diffusers' ``AutoencoderTiny`` (TAESD), NHWC.

TAESD is a small distilled autoencoder with the latent space of a Stable Diffusion VAE. It has
no posterior: the encoder maps an image straight to a latent. The API mirrors diffusers'
exactly, only in NHWC:

- ``encode(images)``: images in **[-1, 1]** (diffusers' convention at the API; internally
  ``(x + 1) / 2`` feeds the network, which was trained on [0, 1]) -> the raw latents, i.e.
  diffusers' ``vae.encode(x).latents`` -- the same latent space as the matching
  ``AutoencoderKL``'s posterior mean *before* its ``scaling_factor`` (TAESD's own
  ``scaling_factor`` is 1.0). There is no distribution, so no ``.mode()``/``.sample()``.
- ``decode(latents)``: raw latents -> images in [-1, 1] (``2 y - 1`` of the network's [0, 1]
  output, not clipped). The decoder first soft-clamps its input, ``3 tanh(z / 3)``, as
  diffusers does.
- ``__call__(images)``: diffusers' ``forward``: encode, quantise the latents to 8 bits
  (:meth:`AutoencoderTiny.scale_latents`, round, :meth:`AutoencoderTiny.unscale_latents`),
  decode. The rounding has zero gradient; use ``decode(encode(x))`` to differentiate.

Module names follow diffusers' ``nn.Sequential`` indices (``encoder.layers.3.conv.2``), with a
parameter-free module at the indices that hold activations and upsampling layers, so a diffusers
state dict loads by layer type without renames.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.diffusers_component import DiffusersComponent
from sce_jax.models.vae_blocks import ACTIVATIONS, Activation, LayerFactory, upsample_nearest
from sce_jax.weights.model_config import ConfigError

Array = jax.Array

UPSAMPLE_METHODS = ("nearest", "bilinear")


@dataclasses.dataclass(frozen=True)
class AutoencoderTinyConfig:
    """The fields of a diffusers ``AutoencoderTiny`` ``config.json``, with diffusers' defaults.

    Attributes:
      in_channels / out_channels: image channels.
      encoder_block_out_channels / num_encoder_blocks: per encoder stage, its channels and its
        number of residual blocks; every stage after the first starts with a stride-2 conv, so
        images shrink by ``2 ** (stages - 1)``. diffusers chains the stages without
        projections, so all stages have the same channels.
      decoder_block_out_channels / num_decoder_blocks: the same for the decoder; every stage
        but the last ends with an upsampling by ``upsampling_scaling_factor``.
      act_fn: activation of the blocks: relu (TAESD), silu/swish, mish, gelu.
      upsample_fn: interpolation of the decoder's upsampling: ``nearest`` (TAESD) or
        ``bilinear`` (PyTorch's ``align_corners=False``).
      latent_channels: channels of the latents.
      upsampling_scaling_factor: integer upsampling factor per decoder stage.
      latent_magnitude, latent_shift: the 8-bit latent packing of ``scale_latents``.
      force_upcast: stored only (diffusers always registers False for this class).
      scaling_factor, shift_factor: the latent scaling a pipeline applies; stored only.
      block_out_channels: written by diffusers as a copy of ``decoder_block_out_channels``;
        stored only.
    """

    in_channels: int = 3
    out_channels: int = 3
    encoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)
    decoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)
    act_fn: str = "relu"
    upsample_fn: str = "nearest"
    latent_channels: int = 4
    upsampling_scaling_factor: int = 2
    num_encoder_blocks: tuple[int, ...] = (1, 3, 3, 3)
    num_decoder_blocks: tuple[int, ...] = (3, 3, 3, 1)
    latent_magnitude: float = 3
    latent_shift: float = 0.5
    force_upcast: bool = False
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    block_out_channels: tuple[int, ...] | None = None

    def __post_init__(self):
        def fail(field: str, expected: str):
            raise ConfigError(f"AutoencoderTinyConfig.{field}={getattr(self, field)!r} is not "
                              f"supported; expected {expected}")

        for name in ("encoder_block_out_channels", "decoder_block_out_channels",
                     "num_encoder_blocks", "num_decoder_blocks", "block_out_channels"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("in_channels", "out_channels", "latent_channels", "upsampling_scaling_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive integer")
        if not isinstance(self.act_fn, str) or self.act_fn.lower() not in ACTIVATIONS:
            fail("act_fn", f"one of {sorted(ACTIVATIONS)}")
        if self.upsample_fn not in UPSAMPLE_METHODS:
            fail("upsample_fn", f"one of {list(UPSAMPLE_METHODS)}")
        for part in ("encoder", "decoder"):
            channels = getattr(self, f"{part}_block_out_channels")
            blocks = getattr(self, f"num_{part}_blocks")
            if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
                fail(f"{part}_block_out_channels", "a non-empty list of positive integers")
            if len(set(channels)) != 1:
                fail(f"{part}_block_out_channels",
                     "equal entries (diffusers chains the stages without channel projections)")
            if len(blocks) != len(channels) or not all(isinstance(n, int) and n >= 0 for n in blocks):
                fail(f"num_{part}_blocks",
                     f"{len(channels)} non-negative integers (one per {part} stage)")

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size (the encoder's reduction)."""
        return 2 ** (len(self.encoder_block_out_channels) - 1)


class AutoencoderTinyBlock(nnx.Module):
    """diffusers ``AutoencoderTinyBlock``: ``relu(conv(act(conv(act(conv(x))))) + skip(x))``."""

    def __init__(self, in_channels: int, out_channels: int, act_fn: str, *, make: LayerFactory):
        self.conv = nnx.List([make.conv(in_channels, out_channels, 3), Activation(act_fn),
                              make.conv(out_channels, out_channels, 3), Activation(act_fn),
                              make.conv(out_channels, out_channels, 3)])
        self.skip = (make.conv(in_channels, out_channels, 1, use_bias=False)
                     if in_channels != out_channels else None)

    def __call__(self, x: Array) -> Array:
        h = x
        for layer in self.conv:
            h = layer(h)
        skip = x if self.skip is None else self.skip(x)
        return jax.nn.relu(h + skip)  # diffusers' ``fuse`` is always a ReLU


class Upsample(nnx.Module):
    """``nn.Upsample(scale_factor=factor, mode=method)`` on NHWC images."""

    def __init__(self, factor: int, method: str):
        self.factor = int(factor)
        self.method = method

    def __call__(self, x: Array) -> Array:
        if self.method == "nearest":
            return upsample_nearest(x, self.factor)
        b, h, w, c = x.shape
        # Half-pixel centres with edge clamping, as PyTorch's align_corners=False.
        return jax.image.resize(x, (b, h * self.factor, w * self.factor, c), method="linear",
                                antialias=False)


class EncoderTiny(nnx.Module):
    """diffusers ``EncoderTiny``: [0, 1] images -> raw latents (its input mapping is done by
    :meth:`AutoencoderTiny.encode`)."""

    def __init__(self, config: AutoencoderTinyConfig, *, make: LayerFactory):
        channels = config.encoder_block_out_channels
        layers: list[nnx.Module] = []
        for i, num_blocks in enumerate(config.num_encoder_blocks):
            c = channels[i]
            if i == 0:
                layers.append(make.conv(config.in_channels, c, 3))
            else:
                layers.append(make.conv(c, c, 3, stride=2, use_bias=False))
            layers += [AutoencoderTinyBlock(c, c, config.act_fn, make=make) for _ in range(num_blocks)]
        layers.append(make.conv(channels[-1], config.latent_channels, 3))
        self.layers = nnx.List(layers)

    def __call__(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer(x)
        return x


class DecoderTiny(nnx.Module):
    """diffusers ``DecoderTiny`` without the [-1, 1] output mapping: raw latents, soft-clamped
    by ``3 tanh(z / 3)``, -> [0, 1]-scaled images."""

    def __init__(self, config: AutoencoderTinyConfig, *, make: LayerFactory):
        channels = config.decoder_block_out_channels
        layers: list[nnx.Module] = [make.conv(config.latent_channels, channels[0], 3),
                                    Activation(config.act_fn)]
        last = len(channels) - 1
        for i, num_blocks in enumerate(config.num_decoder_blocks):
            c = channels[i]
            layers += [AutoencoderTinyBlock(c, c, config.act_fn, make=make) for _ in range(num_blocks)]
            if i < last:
                layers.append(Upsample(config.upsampling_scaling_factor, config.upsample_fn))
            layers.append(make.conv(c, c if i < last else config.out_channels, 3,
                                    use_bias=i == last))
        self.layers = nnx.List(layers)

    def __call__(self, z: Array) -> Array:
        x = jnp.tanh(z / 3.0) * 3.0
        for layer in self.layers:
            x = layer(x)
        return x


class AutoencoderTiny(DiffusersComponent, nnx.Module):
    """diffusers ``AutoencoderTiny`` (TAESD) in Flax NNX; images and latents NHWC.

    Args:
      config: the architecture.
      rngs: for the (random) initial parameters.
      dtype: compute dtype (float32 or bfloat16).
      param_dtype: parameter dtype.
    """

    config_class = AutoencoderTinyConfig
    diffusers_class_name = "AutoencoderTiny"
    diffusers_derived_fields = ("block_out_channels",)  # diffusers registers it itself

    def __init__(self, config: AutoencoderTinyConfig, *, rngs: nnx.Rngs,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32):
        self.config = config
        self.dtype = dtype
        make = LayerFactory(rngs, dtype, param_dtype)
        self.encoder = EncoderTiny(config, make=make)
        self.decoder = DecoderTiny(config, make=make)

    def _check(self, x: Array, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"AutoencoderTiny.{what}: expected (N, H, W, {channels}) NHWC input, "
                             f"got shape {tuple(x.shape)}")

    def encode(self, images: Array) -> Array:
        """Raw latents (N, H/f, W/f, latent_channels) of images in [-1, 1]."""
        self._check(images, self.config.in_channels, "encode")
        return self.encoder((images + 1.0) / 2.0)

    def decode(self, latents: Array) -> Array:
        """Images in [-1, 1] (not clipped) of raw latents."""
        self._check(latents, self.config.latent_channels, "decode")
        return self.decoder(latents) * 2.0 - 1.0

    def scale_latents(self, latents: Array) -> Array:
        """Raw latents -> [0, 1]: ``clip(z / (2 m) + s, 0, 1)`` (m: latent_magnitude, s: shift)."""
        m, s = self.config.latent_magnitude, self.config.latent_shift
        return jnp.clip(latents / (2 * m) + s, 0.0, 1.0)

    def unscale_latents(self, scaled: Array) -> Array:
        """[0, 1] -> raw latents: ``(u - s) * 2 m``."""
        m, s = self.config.latent_magnitude, self.config.latent_shift
        return (scaled - s) * (2 * m)

    def __call__(self, images: Array) -> Array:
        """diffusers' forward: encode, quantise the latents to 8 bits, decode."""
        packed = jnp.round(self.scale_latents(self.encode(images)) * 255.0)
        return self.decode(self.unscale_latents(packed / 255.0))
