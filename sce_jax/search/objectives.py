"""The image the classifier judges, and the proximity terms of the search objective.

Output image, with ``m`` the soft edit mask and ``x0 = D(z0)``::

    residual:  x_cf = clip(x + m * (D(z) - x0), 0, 1)     keeps what the autoencoder cannot
    blend:     x_cf = clip(x + m * (D(z) - x), 0, 1)
    decoded:   x_cf = clip(D(z), 0, 1)

Objective, per example::

    L(z) = cls(f(x_cf(z)) / T, t) + l1 * mean|z - z0| + l2 * ||z - z0||_2 + pixel_l1 * mean|x_cf - x|
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Added under the square root of the L2 proximity so its gradient is finite at z = z0.
L2_EPS = 1e-12


def compose_output(x, decoded, decoded0, mask, *, mode: str):
    """The returned (and classified) counterfactual image, (B, H, W, C) in [0, 1]."""
    if mode == "residual":
        out = x + mask * (decoded - decoded0)
    elif mode == "blend":
        out = x + mask * (decoded - x)
    elif mode == "decoded":
        out = decoded
    else:
        raise ValueError(f"unknown output mode {mode!r}")
    return jnp.clip(out, 0.0, 1.0)


_READ_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255.0)  # image_io's k / 255


def judged_image(x_cf, *, judge_8bit: bool):
    """The image success is judged on: ``round(255 x) / 255`` (as written to 8-bit files, halves
    to even like ``image_io.to_uint8``) when ``judge_8bit``, else ``x_cf`` itself.

    Only the check sees the rounding; gradients are taken on the float image. The levels are
    the very floats a written file reads back as (``k / 255`` in float32, a table: XLA's
    ``x / 255`` may differ from it in the last bit).
    """
    if not judge_8bit:
        return x_cf
    levels = jnp.round(jnp.clip(x_cf, 0.0, 1.0) * 255.0).astype(jnp.int32)
    return jnp.take(jnp.asarray(_READ_LEVELS), levels).astype(x_cf.dtype)


def _per_example_mean(a):
    return jnp.mean(a.reshape(a.shape[0], -1), axis=-1)


def latent_proximity(z, z0, *, l1: float, l2: float):
    """``l1 * mean|z - z0| + l2 * sqrt(||z - z0||^2 + eps)`` per example (B,)."""
    d = (z - z0).reshape(z.shape[0], -1)
    out = jnp.zeros(z.shape[0], z.dtype)
    if l1:
        out = out + l1 * jnp.mean(jnp.abs(d), axis=-1)
    if l2:
        out = out + l2 * jnp.sqrt(jnp.sum(d * d, axis=-1) + L2_EPS)
    return out


def pixel_proximity(x_cf, x, *, pixel_l1: float):
    """``pixel_l1 * mean|x_cf - x|`` per example (B,)."""
    if not pixel_l1:
        return jnp.zeros(x.shape[0], x_cf.dtype)
    return pixel_l1 * _per_example_mean(jnp.abs(x_cf - x))


def distances(z, z0, x_cf, x):
    """Latent and pixel distances reported with each counterfactual (each (B,))."""
    dz = (z - z0).reshape(z.shape[0], -1)
    dx = (x_cf - x).reshape(x.shape[0], -1)
    return {
        "latent_l1": jnp.mean(jnp.abs(dz), axis=-1),
        "latent_l2": jnp.sqrt(jnp.sum(dz * dz, axis=-1)),
        "pixel_l1": jnp.mean(jnp.abs(dx), axis=-1),
        "pixel_l2": jnp.sqrt(jnp.sum(dx * dx, axis=-1)),
    }


def all_finite(*arrays):
    """Per-example (B,) flag: every entry of every array is finite."""
    flags = [jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=-1) for a in arrays]
    out = flags[0]
    for f in flags[1:]:
        out = out & f
    return out


def tree_select(keep, new, old):
    """Per-example select over pytrees: ``new`` where ``keep`` (B,), else ``old``.

    Leaves without a batch axis (an optimizer's step count, shared by all examples that are
    still running) take ``new``.
    """
    def pick(n, o):
        if n.ndim == 0:
            return n
        k = keep.reshape(keep.shape + (1,) * (n.ndim - 1))
        return jnp.where(k, n, o)
    return jax.tree.map(pick, new, old)
