"""The generator the search optimises through: images in [0, 1] <-> scaled latents.

A :class:`Generator` is a pair of pure functions over explicit parameters, so it composes
with ``jax.jit``, ``jax.vmap`` and sharded arrays::

    z = generator.encode(x)        # x: (N, H, W, C) in [0, 1]  ->  z: (N, h, w, c)
    x_hat = generator.decode(z)    # back to [0, 1] (not clipped, so gradients flow)

For an autoencoder in diffusers' convention (images in [-1, 1], raw latents), the latents the
search sees are scaled exactly as diffusers pipelines scale them::

    z_scaled = (z_raw - shift) * scaling_factor / std        (encode)
    z_raw    = z_scaled * std / scaling_factor + shift        (decode)

where ``shift`` is ``latents_mean`` when the config has it, else ``shift_factor`` (else 0), and
``std`` is ``latents_std`` when given, else 1. The encoder uses the posterior mean (``mode``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.search.generator_spec import EncodeFn, GeneratorSpec

Array = jax.Array
DecodeFn = Callable[[Any, Array], Array]


@dataclasses.dataclass(frozen=True)
class LatentScaling:
    """``z_scaled = (z_raw - shift) * scale``; shift and scale broadcast over channels."""

    shift: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)

    @classmethod
    def from_config(cls, config: Any) -> "LatentScaling":
        scaling = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        shift_factor = getattr(config, "shift_factor", None)
        if mean is not None:
            shift = tuple(float(v) for v in mean)
        else:
            shift = (float(shift_factor or 0.0),)
        if std is not None:
            scale = tuple(scaling / float(v) for v in std)
        else:
            scale = (scaling,)
        return cls(shift, scale)

    def to_scaled(self, z_raw: Array) -> Array:
        shift = jnp.asarray(self.shift, z_raw.dtype)
        scale = jnp.asarray(self.scale, z_raw.dtype)
        return (z_raw - shift) * scale

    def to_raw(self, z_scaled: Array) -> Array:
        shift = jnp.asarray(self.shift, z_scaled.dtype)
        scale = jnp.asarray(self.scale, z_scaled.dtype)
        return z_scaled / scale + shift


@dataclasses.dataclass(frozen=True)
class Generator:
    """Encode/decode functions over explicit parameters, in the search's conventions.

    Attributes:
      decode_fn: ``(params, z) -> images`` in [0, 1] (NHWC, unclipped).
      encode_fn: ``(params, images) -> z``, or None for a generator without an encoder (a GAN):
        then the search needs a starting latent.
      params: the parameters (a pytree; NNX state for the ported autoencoders).
      downsample: image size / latent size (8 for Stable Diffusion VAEs).
      latent_channels: channels of ``z``.
      name: for logs and reports.
      uses_context: ``decode_fn`` takes a third argument, a per-example context pytree.
    """

    decode_fn: DecodeFn
    encode_fn: EncodeFn | None
    params: Any
    downsample: int
    latent_channels: int
    name: str = "generator"
    uses_context: bool = False

    @property
    def spec(self) -> GeneratorSpec:
        """The static part, for a jitted search (see :class:`GeneratorSpec`)."""
        return GeneratorSpec(self.decode_fn, self.encode_fn, self.downsample, self.latent_channels,
                             self.uses_context, self.name)

    def decode(self, z: Array, context: Any = None) -> Array:
        return self.spec.decode(self.params, z, context)

    def encode(self, images: Array) -> Array:
        if self.encode_fn is None:
            raise ValueError(f"{self.name} has no encoder: pass starting latents to the search")
        return self.encode_fn(self.params, images)

    @property
    def has_encoder(self) -> bool:
        return self.encode_fn is not None

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        return self.spec.latent_shape(image_shape)

    @classmethod
    def from_autoencoder(cls, model: nnx.Module, *, name: str | None = None) -> "Generator":
        """Wraps an :class:`~sce_jax.models.AutoencoderKL` or ``AutoencoderTiny`` port.

        The model works in diffusers' conventions (images in [-1, 1], raw latents); the
        wrapper maps [0, 1] images and applies the latent scaling of the model's config.
        """
        graphdef, state = nnx.split(model)
        scaling = LatentScaling.from_config(model.config)

        def encode(params, images):
            ae = nnx.merge(graphdef, params)
            latent = ae.encode(images * 2.0 - 1.0)
            latent = latent.mode() if hasattr(latent, "mode") else latent
            return scaling.to_scaled(latent.astype(jnp.float32))

        def decode(params, z):
            ae = nnx.merge(graphdef, params)
            images = ae.decode(scaling.to_raw(z).astype(ae_dtype(ae)))
            return (images.astype(jnp.float32) + 1.0) * 0.5

        config = model.config
        downsample = _downsample_factor(config)
        return cls(decode, encode, state, downsample,
                   int(getattr(config, "latent_channels")), name or type(model).__name__)

    @classmethod
    def from_functions(cls, decode: DecodeFn, encode: EncodeFn | None = None, params: Any = None,
                       *, downsample: int, latent_channels: int, name: str = "generator",
                       uses_context: bool = False) -> "Generator":
        """Wraps user functions that already speak [0, 1] images and the search's latents.

        With ``uses_context``, ``decode(params, z, context)`` receives the batch's context.
        """
        return cls(decode, encode, params, int(downsample), int(latent_channels), name,
                   bool(uses_context))


def ae_dtype(model: nnx.Module):
    """The compute dtype of a port (float32 unless it was built with another)."""
    return getattr(model, "dtype", None) or jnp.float32


def _downsample_factor(config: Any) -> int:
    """Spatial reduction of the diffusers autoencoders: 2 per block after the first."""
    if hasattr(config, "downsample_factor"):
        return int(config.downsample_factor)
    blocks = getattr(config, "block_out_channels", None)
    if blocks is None:  # AutoencoderTiny: one stride-2 stage per encoder block after the first
        blocks = getattr(config, "encoder_block_out_channels", None)
    if blocks is None:
        raise ValueError("cannot infer the downsampling factor of this autoencoder")
    return int(2 ** (len(blocks) - 1))

