"""Sparsity: how few pixels a counterfactual changes, and how concentrated the change is.

Changed fraction (share of pixels visibly changed), for ``d = x' - x`` of shape (H, W, C):

    changed = (1 / (H W)) * #{p : max_c |d_{p,c}| > tau}

with ``tau = 2/255`` by default (a change of more than two grey levels in any channel; the
value the run manifest's ``changed_fraction`` uses).

Hoyer sparsity (Hoyer, "Non-negative matrix factorization with sparseness constraints",
JMLR 2004) of a vector ``v`` with ``n >= 2`` entries:

    H(v) = (sqrt(n) - ||v||_1 / ||v||_2) / (sqrt(n) - 1)

1 when a single entry is non-zero, 0 when all entries have the same magnitude. By default
``v`` is the per-pixel change magnitude ``v_p = ||d_p||_2`` over channels (n = H W), so a pixel
that changes in all its channels counts as one changed pixel; ``per_pixel=False`` uses the
raw change ``d`` (n = H W C). For ``d = 0`` the ratio is undefined and ``H`` is NaN (nothing
changed, nothing to be sparse about); the run summary skips NaNs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

DEFAULT_THRESHOLD = 2.0 / 255.0


def _difference(original: Any, counterfactual: Any) -> jax.Array:
    x = jnp.asarray(original, jnp.float32)
    x_cf = jnp.asarray(counterfactual, jnp.float32)
    if x.ndim < 3 or x_cf.ndim < 3:
        raise ValueError(f"expected images (..., H, W, C), got shapes {x.shape} and {x_cf.shape}")
    return x_cf - x


def changed_fraction(original: Any, counterfactual: Any, *,
                     threshold: float = DEFAULT_THRESHOLD) -> jax.Array:
    """Share of pixels with ``max_c |x' - x| > threshold``; shape: the leading dimensions."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    d = _difference(original, counterfactual)
    changed = jnp.max(jnp.abs(d), axis=-1) > threshold
    return jnp.mean(changed.astype(jnp.float32), axis=(-2, -1))


@jax.jit
def _hoyer(v):
    # v: (..., n) flattened magnitudes.
    n = v.shape[-1]
    l1 = jnp.sum(jnp.abs(v), axis=-1)
    l2 = jnp.sqrt(jnp.sum(v * v, axis=-1))
    safe = jnp.where(l2 > 0, l2, 1.0)
    root_n = jnp.sqrt(jnp.float32(n))
    value = (root_n - l1 / safe) / (root_n - 1.0)
    return jnp.where(l2 > 0, value, jnp.nan)


def hoyer_sparsity(original: Any, counterfactual: Any, *, per_pixel: bool = True) -> jax.Array:
    """Hoyer sparsity of the change ``x' - x``; shape: the leading dimensions (NaN if d = 0)."""
    d = _difference(original, counterfactual)
    if per_pixel:
        v = jnp.sqrt(jnp.sum(d * d, axis=-1))
        v = v.reshape(v.shape[:-2] + (-1,))
    else:
        v = d.reshape(d.shape[:-3] + (-1,))
    if v.shape[-1] < 2:
        raise ValueError(f"Hoyer sparsity needs at least 2 entries per image, got {v.shape[-1]}")
    return _hoyer(v)


def sparsity(original: Any, counterfactual: Any, *,
             threshold: float = DEFAULT_THRESHOLD) -> dict[str, jax.Array]:
    """``{"changed_fraction", "hoyer"}`` per counterfactual (leading dimensions kept)."""
    return {"changed_fraction": changed_fraction(original, counterfactual, threshold=threshold),
            "hoyer": hoyer_sparsity(original, counterfactual)}
