"""Edit masks: where a counterfactual may change (pixel and latent grids).

Masks are float arrays of shape (B, H, W, 1) in pixels or (B, h, w, 1) in latents, 1 where the
image may change. The edit mask of a search step is::

    d    = sum_c |D(z) - x0| * allowed       change map of the current reconstruction
                                             (inside the area that may change)
    d'   = blur_sigma(d) / max(blur_sigma(d))
    tau' = max(tau, q_a(d'))                 q_a: the value that a share a of the image's
                                             pixels reaches (``mask.max_area``; a = 1: tau)
    keep = fill_a([d' >= tau']) * allowed    allowed = user region * unlocked area; fill_a: the
                                             holes filled unless that exceeds the share a
    m    = blur_border(keep) * allowed       soft border, never outside ``allowed``

``fill`` (optional, ``mask.fill_holes``) adds the holes of the mask: pixels that no 4-connected
path of unmasked pixels joins to the image border. The first change map of a search peaks on
the edges of what it changes (a square's outline, say); without the fill the mask would close
onto that ring and the inside could never change.

and its latent version is a max-pool of ``m > 0`` over each latent cell, dilated by ``dilation``
cells, so a latent cell may move when any pixel it decodes to may change.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps ``exp(-i^2 / 2 sigma^2)``, radius ``ceil(3 sigma)``."""
    if sigma <= 0:
        return np.ones((1,), np.float32)
    radius = max(1, int(math.ceil(3 * sigma)))
    i = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(maps: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (B, H, W, 1) maps with zero padding outside the image."""
    if sigma <= 0:
        return maps
    k = jnp.asarray(gaussian_kernel1d(sigma), maps.dtype)
    n = k.shape[0]
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(maps, k.reshape(n, 1, 1, 1), (1, 1), "SAME", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(x, k.reshape(1, n, 1, 1), (1, 1), "SAME", dimension_numbers=dn)


def change_map(decoded: jax.Array, reference: jax.Array) -> jax.Array:
    """``sum_c |decoded - reference|`` as (B, H, W, 1)."""
    return jnp.sum(jnp.abs(decoded - reference), axis=-1, keepdims=True)


def threshold_mask(change: jax.Array, *, blur_sigma: float, threshold: float,
                   max_area: float = 1.0) -> jax.Array:
    """Binary mask ``[d' >= max(threshold, q)]`` per example, ``d' = blur(d) / max blur(d)``.

    ``q`` is the ``ceil(max_area * H * W)``-th largest value of ``d'``, so the mask covers at
    most that share of the image (ties at ``q`` aside); ``max_area = 1`` leaves the threshold
    alone. All ones where ``d = 0``.
    """
    blurred = gaussian_blur(change, blur_sigma)
    peak = jnp.max(blurred, axis=(1, 2, 3), keepdims=True)
    normalised = jnp.where(peak > 0, blurred / jnp.where(peak > 0, peak, 1.0), 1.0)
    cut = jnp.asarray(threshold, normalised.dtype)
    if max_area < 1.0:
        flat = normalised.reshape(normalised.shape[0], -1)
        rank = max(1, math.ceil(max_area * flat.shape[1]))
        kth = jax.lax.top_k(flat, rank)[0][:, -1]
        cut = jnp.maximum(cut, kth.reshape(-1, 1, 1, 1))
    return (normalised >= cut).astype(change.dtype)


def border_pixels(height: int, width: int) -> np.ndarray:
    """(H, W, 1) bool (a constant), True on the image's outermost rows and columns."""
    border = np.zeros((height, width, 1), bool)
    border[0] = border[-1] = border[:, 0] = border[:, -1] = True
    return border


def flood(seeds: jax.Array, passable: jax.Array) -> jax.Array:
    """(B, H, W, 1) bool: the pixels reached from ``seeds`` through ``passable`` pixels.

    Repeated 4-neighbour dilation restricted to ``passable`` until nothing changes (a
    ``lax.while_loop``: at most one pass per pixel of the longest path).
    """
    def grow(reached):
        padded = jnp.pad(reached, ((0, 0), (1, 1), (1, 1), (0, 0)))
        neighbours = (padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2]
                      | padded[:, 1:-1, 2:])
        return reached | (neighbours & passable)

    start = seeds & passable
    reached, _ = jax.lax.while_loop(lambda c: jnp.any(c[0] != c[1]),
                                    lambda c: (grow(c[0]), c[0]), (grow(start), start))
    return reached


def fill_holes(mask: jax.Array) -> jax.Array:
    """Binary (B, H, W, 1) mask plus its holes (regions enclosed by it, see the module docstring).

    The outside is flooded from the unmasked border pixels through unmasked pixels; what it
    never reaches is a hole.
    """
    free = mask <= 0
    outside = flood(free & border_pixels(mask.shape[1], mask.shape[2])[None], free)
    return jnp.where(outside, 0.0, 1.0).astype(mask.dtype)


def fill_holes_within(mask: jax.Array, max_area: float = 1.0) -> jax.Array:
    """:func:`fill_holes`, per example only where the filled mask covers at most ``max_area``
    of the image; elsewhere the mask as it was (a capped mask stays within its cap even when
    it rings the image's middle: the background around a square, say)."""
    filled = fill_holes(mask)
    if max_area >= 1.0:
        return filled
    within = jnp.mean(filled, axis=(1, 2, 3), keepdims=True) <= max_area
    return jnp.where(within, filled, mask)


def soften(mask: jax.Array, allowed: jax.Array, border: float) -> jax.Array:
    """Blurs a binary mask's border by ``border`` pixels, then keeps it inside ``allowed``.

    The result is 1 well inside the mask, fades over the border, and is exactly 0 wherever
    ``allowed`` is 0 (so locked or user-excluded pixels never change).
    """
    if border > 0:
        mask = jnp.maximum(mask, gaussian_blur(mask, border))
    return jnp.clip(mask, 0.0, 1.0) * allowed


def max_pool(maps: jax.Array, factor: int) -> jax.Array:
    """(B, H, W, 1) -> (B, H/f, W/f, 1), the maximum over each f x f cell."""
    if factor == 1:
        return maps
    return jax.lax.reduce_window(maps, -jnp.inf, jax.lax.max, (1, factor, factor, 1),
                                 (1, factor, factor, 1), "VALID")


def dilate(maps: jax.Array, cells: int) -> jax.Array:
    """Grows a binary (B, h, w, 1) mask by ``cells`` in every direction (square structuring)."""
    if cells <= 0:
        return maps
    size = 2 * cells + 1
    return jax.lax.reduce_window(maps, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, 1, 1, 1), "SAME")


def latent_mask(pixel_mask: jax.Array, factor: int, dilation: int) -> jax.Array:
    """Latent cells that may move: any pixel of the cell may change, then dilated."""
    return dilate((max_pool(pixel_mask, factor) > 0).astype(pixel_mask.dtype), dilation)


def region_from_labels(label_map: np.ndarray, allowed_ids) -> np.ndarray:
    """A binary region (…, H, W, 1) float32 from a segmentation label map and allowed ids.

    ``label_map`` holds integer region ids, shape (H, W), (B, H, W) or with a trailing 1; the
    region is 1 where the id is one of ``allowed_ids`` (STEEX's region-targeted setting).
    """
    labels = np.asarray(label_map)
    if labels.shape[-1] != 1:
        labels = labels[..., None]
    ids = np.asarray(list(allowed_ids))
    if ids.size == 0:
        raise ValueError("region_from_labels: no allowed region ids given")
    return np.isin(labels, ids).astype(np.float32)
