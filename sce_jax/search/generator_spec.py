"""What the search needs of a generator: its functions and latent layout, hashable.

A :class:`GeneratorSpec` is the static part of a :class:`sce_jax.Generator`
(:attr:`sce_jax.Generator.spec`): a jitted search closes over it, while the parameters travel
separately as a pytree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Array = jax.Array
EncodeFn = Callable[[Any, Array], Array]


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """The static part of a :class:`Generator`: its functions and latent layout (hashable).

    This is what a jitted search closes over; the parameters travel separately as a pytree.

    Attributes:
      decode_fn: ``(params, z) -> images``, or ``(params, z, context) -> images`` when
        ``uses_context`` (a per-example conditioning pytree with leading axis B).
      encode_fn: ``(params, images) -> z``, or None (the search then needs starting latents).
      downsample: image size / latent size.
      latent_channels: channels of ``z`` (latents are NHWC: (B, H / downsample, W / downsample, c)).
      uses_context: whether ``decode_fn`` takes the context argument.
      name: for logs and messages.
    """

    decode_fn: Callable
    encode_fn: EncodeFn | None
    downsample: int
    latent_channels: int
    uses_context: bool = False
    name: str = "generator"

    def decode(self, params: Any, z: Array, context: Any = None) -> Array:
        if self.uses_context:
            return self.decode_fn(params, z, context)
        return self.decode_fn(params, z)

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        """(h, w, c) of the latents of (H, W) images; a size that does not divide raises."""
        h, w = image_shape
        if h % self.downsample or w % self.downsample:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of {self.name}'s downsampling factor "
                f"{self.downsample}; resize the inputs (data.image_size) to a multiple of it")
        return h // self.downsample, w // self.downsample, self.latent_channels
