"""FLUX's latent packing: NHWC latents <-> sequences of 2x2-patch tokens, and their ids.

FLUX pipelines (diffusers' ``FluxPipeline._pack_latents`` / ``_unpack_latents`` /
``_prepare_latent_image_ids``) feed the transformer tokens of 2x2 latent patches. For a latent
``z`` of shape (B, h, w, C) (NHWC here; NCHW in diffusers), with ``h`` and ``w`` even::

    token (i, j) = [z[2i + dy, 2j + dx, c] for c in 0..C-1 for dy in 0, 1 for dx in 0, 1]
    tokens: (B, (h/2)(w/2), 4C), row-major over (i, j); channel index c * 4 + dy * 2 + dx

and the token's position id is ``(0, i, j)``. Text tokens all have id ``(0, 0, 0)``.
"""

from __future__ import annotations

import jax
import numpy as np

Array = jax.Array
PATCH = 2


def _check_even(h: int, w: int) -> None:
    if h % PATCH or w % PATCH:
        raise ValueError(f"FLUX packs 2x2 latent patches: latent height and width must be even, "
                         f"got {h}x{w} (image sizes must be multiples of 16 for an 8x VAE)")


def pack_latents(z: Array) -> Array:
    """(B, h, w, C) -> (B, (h/2)(w/2), 4C) 2x2-patch tokens, in diffusers' channel order."""
    b, h, w, c = z.shape
    _check_even(h, w)
    z = z.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, c)
    z = z.transpose(0, 1, 3, 5, 2, 4)                      # (B, h/2, w/2, C, dy, dx)
    return z.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack_latents(tokens: Array, h: int, w: int) -> Array:
    """The inverse of :func:`pack_latents`: (B, (h/2)(w/2), 4C) -> (B, h, w, C)."""
    b, n, c4 = tokens.shape
    _check_even(h, w)
    if n != (h // PATCH) * (w // PATCH) or c4 % (PATCH * PATCH):
        raise ValueError(f"cannot unpack {tuple(tokens.shape)} tokens to a {h}x{w} latent")
    c = c4 // (PATCH * PATCH)
    z = tokens.reshape(b, h // PATCH, w // PATCH, c, PATCH, PATCH)
    z = z.transpose(0, 1, 4, 2, 5, 3)                      # (B, h/2, dy, w/2, dx, C)
    return z.reshape(b, h, w, c)


def latent_image_ids(h: int, w: int) -> np.ndarray:
    """The ids (float32 numpy, ((h/2)(w/2), 3)) of the tokens of an h x w latent: ``(0, i, j)``."""
    _check_even(h, w)
    rows, cols = h // PATCH, w // PATCH
    ids = np.zeros((rows, cols, 3), np.float32)
    ids[..., 1] = np.arange(rows, dtype=np.float32)[:, None]
    ids[..., 2] = np.arange(cols, dtype=np.float32)[None, :]
    return ids.reshape(rows * cols, 3)


def text_ids(length: int) -> np.ndarray:
    """The ids of ``length`` text tokens: all zero, (length, 3) float32 (as FLUX pipelines)."""
    return np.zeros((length, 3), np.float32)
