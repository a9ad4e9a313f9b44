"""The generative prior's clean prediction of a latent (rectified flow, SD3/FLUX convention).

With a velocity model ``v(z_t, t, c) ~ eps - z`` (see :class:`sce_jax.prior.Prior`), the clean
prediction of a latent ``z`` at edit strength ``s`` is (SDEdit for flows)::

    u_i  = s (1 - i / n),           i = 0..n             (n = denoise_steps)
    t_i  = shift u_i / (1 + (shift - 1) u_i)             SD3's shifted schedule
    z_{t_0} = (1 - t_0) z + t_0 eps
    z_{t_{i+1}} = z_{t_i} + (t_{i+1} - t_i) v(z_{t_i}, t_i, c)          Euler, down to t_n = 0
    P(z) = z_{t_n}

Where a latent mask ``m`` is given, cells outside it are replaced after every step by the
re-noised original (as inpainting with flows does)::

    z_{t_i} <- m z_{t_i} + (1 - m) ((1 - t_i) z_ref + t_i eps)

so the prior sees an image whose unchanged part is the original's, and ``P(z) = z_ref`` there.
``s = 0`` gives ``P(z) = z`` exactly. Nothing here is differentiated: the search uses ``P``
under ``stop_gradient`` (a straight-through estimate, see :mod:`sce_jax.search.loop`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def shifted_time(u, shift: float):
    """``shift u / (1 + (shift - 1) u)``: more steps at high noise for ``shift > 1``."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def time_grid(strength: float, steps: int, shift: float) -> jax.Array:
    """The ``n + 1`` times ``t_0 = shifted(s) > ... > t_n = 0`` of the integration."""
    u = strength * (1.0 - jnp.arange(steps + 1, dtype=jnp.float32) / steps)
    return shifted_time(u, shift)


def clean_prediction(velocity: VelocityFn, z: jax.Array, eps: jax.Array, *, strength: float,
                     steps: int, shift: float, context: Any = None,
                     keep: jax.Array | None = None, reference: jax.Array | None = None) -> jax.Array:
    """``P(z)`` of the module docstring, for a batch (B, h, w, c); no gradient flows through it.

    Args:
      velocity: ``(z_t, t (B,), context) -> v``, parameters bound.
      z: latents; eps: noise of the same shape (keyed per example by the caller).
      strength, steps, shift: ``s``, ``n`` and the schedule's shift (static).
      context: per-example conditioning passed through to ``velocity``.
      keep: optional (B, h, w, 1) latent mask; outside it ``reference`` (re-noised) is kept.
    """
    if strength <= 0:
        return z
    times = time_grid(strength, steps, shift)
    batch = z.shape[0]

    def renoise(z_t, t):
        if keep is None:
            return z_t
        return keep * z_t + (1.0 - keep) * ((1.0 - t) * reference + t * eps)

    def euler(i, z_t):
        t, t_next = times[i], times[i + 1]
        v = velocity(z_t, jnp.full((batch,), t, jnp.float32), context)
        return renoise(z_t + (t_next - t) * v.astype(z_t.dtype), t_next)

    z_t = renoise((1.0 - times[0]) * z + times[0] * eps, times[0])
    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, euler, z_t))


def sample(velocity: VelocityFn, eps: jax.Array, *, steps: int, shift: float,
           context: Any = None) -> jax.Array:
    """A sample of the prior from pure noise: ``P`` at strength 1 (Euler from ``t = 1``)."""
    return clean_prediction(velocity, jnp.zeros_like(eps), eps, strength=1.0, steps=steps,
                            shift=shift, context=context)
