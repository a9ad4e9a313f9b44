"""Proximity: how far a counterfactual is from its original, in pixels and in latents.

For a change ``d = x' - x`` over the ``n`` entries of one image (H * W * C) or one latent
(h * w * c):

    L1 = (1 / n) * sum_i |d_i|          (mean absolute change per entry)
    L2 = sqrt(sum_i d_i ** 2)           (Euclidean norm of the change)

These are the definitions the search reports (``pixel_l1``, ``pixel_l2``, ``latent_l1``,
``latent_l2`` in the manifest), so values computed here and there agree. Leading dimensions
(examples, attempts) are kept and broadcast: ``(N, H, W, C)`` originals against
``(N, K, H, W, C)`` counterfactuals need ``original[:, None]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# Images and latents are (..., H, W, C): the last three axes are one example.
EVENT_AXES = (-3, -2, -1)


def _difference(a: Any, b: Any) -> jax.Array:
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.ndim < 3 or b.ndim < 3:
        raise ValueError(f"expected arrays (..., H, W, C), got shapes {a.shape} and {b.shape}")
    try:
        return b - a
    except (TypeError, ValueError) as e:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not broadcast") from e


@jax.jit
def _l1(d):
    return jnp.mean(jnp.abs(d), axis=EVENT_AXES)


@jax.jit
def _l2(d):
    return jnp.sqrt(jnp.sum(d * d, axis=EVENT_AXES))


def l1_distance(a: Any, b: Any) -> jax.Array:
    """``mean |b - a|`` over the last three axes (H, W, C): shape ``(...)``."""
    return _l1(_difference(a, b))


def l2_distance(a: Any, b: Any) -> jax.Array:
    """``||b - a||_2`` over the last three axes (H, W, C): shape ``(...)``."""
    return _l2(_difference(a, b))


def proximity(original: Any, counterfactual: Any, latent_original: Any = None,
              latent_counterfactual: Any = None) -> dict[str, jax.Array]:
    """Pixel (and, when both latents are given, latent) L1 and L2 distances.

    Returns:
      ``{"pixel_l1", "pixel_l2"}`` and, with latents, ``{"latent_l1", "latent_l2"}``; each of
      the broadcast leading shape.
    """
    out = {"pixel_l1": l1_distance(original, counterfactual),
           "pixel_l2": l2_distance(original, counterfactual)}
    if (latent_original is None) != (latent_counterfactual is None):
        raise ValueError("give both latent_original and latent_counterfactual, or neither")
    if latent_original is not None:
        out["latent_l1"] = l1_distance(latent_original, latent_counterfactual)
        out["latent_l2"] = l2_distance(latent_original, latent_counterfactual)
    return out
