"""Is a counterfactual a spot painted into empty background? (not a second reason)

Once attempt 1 has locked the object's decisive part, a later attempt can often flip the
decision only by painting a spot into the empty background: a blob beside a trouser leg, a
hole in a black border. That changes no property of the object; it is not a second reason.
This module recognises it, for any image, without knowing where the object is:

    flat(p)   = std of x over the 5x5 window at p (all channels) < FLAT_STD
    seeds     = border pixels that are flat and within SEED_DISTANCE of the border's median colour
    empty     = the pixels reached from the seeds through flat pixels (4-neighbours)
    d(p)      = sum_c |x_cf - x|,      changed(p) = d(p) > CHANGED
    share     = sum_empty d / sum d                       (energy of the change in empty background)
    coverage  = |changed & empty| / |empty|               (how much of the background changed)
    spot      = share > SPOT_SHARE  and  coverage < MAX_COVERAGE

A change of the whole background (a recoloured backdrop: a classifier that reads the
background, which an audit must see) covers most of it and is not a spot; a change on the
object puts its energy outside ``empty``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sce_jax.search import masks

FLAT_STD = 0.03        # [0, 1] units: below this a 5x5 window is flat
SEED_DISTANCE = 0.1    # max |x - median border colour| (per channel) of a background seed
CHANGED = 0.05         # sum_c |x_cf - x| above this counts as changed
SPOT_SHARE = 0.5       # more than half of the change in empty background ...
MAX_COVERAGE = 0.5     # ... on less than half of it: a spot
WINDOW = 5


def _window_counts(size: int) -> np.ndarray:
    """How many of the WINDOW positions centred on each index fall inside ``size``."""
    r = WINDOW // 2
    i = np.arange(size)
    return (np.minimum(i + r, size - 1) - np.maximum(i - r, 0) + 1).astype(np.float32)


def _box_mean(maps: jax.Array) -> jax.Array:
    """Mean over the WINDOW x WINDOW neighbourhood inside the image (a constant count map)."""
    total = jax.lax.reduce_window(maps, 0.0, jax.lax.add, (1, WINDOW, WINDOW, 1), (1, 1, 1, 1), "SAME")
    count = np.outer(_window_counts(maps.shape[1]), _window_counts(maps.shape[2]))
    return total / count[None, :, :, None]


def empty_background(x: jax.Array) -> jax.Array:
    """(B, H, W, 1) float mask of the flat background joined to the border (see above)."""
    mean = _box_mean(x)
    var = jnp.mean(_box_mean(x * x) - mean * mean, axis=-1, keepdims=True)
    flat = jnp.sqrt(jnp.maximum(var, 0.0)) < FLAT_STD
    border = masks.border_pixels(x.shape[1], x.shape[2])
    edge_colours = x[:, border[:, :, 0]]                                  # (B, n, C)
    median = jnp.median(edge_colours, axis=1)[:, None, None, :]           # (B, 1, 1, C)
    near = jnp.all(jnp.abs(x - median) < SEED_DISTANCE, axis=-1, keepdims=True)
    seeds = flat & near & border[None]
    return masks.flood(seeds, flat).astype(x.dtype)


def is_background_spot(x: jax.Array, x_cf: jax.Array, empty: jax.Array | None = None) -> jax.Array:
    """(B,) bool: the change ``x_cf - x`` is a spot in empty background (module docstring).

    ``empty``: :func:`empty_background` of ``x``, when the caller has it already (it depends on
    the original only, so a search computes it once for all its attempts).
    """
    if empty is None:
        empty = empty_background(x)
    d = masks.change_map(x_cf, x)
    total = jnp.sum(d, axis=(1, 2, 3))
    share = jnp.sum(d * empty, axis=(1, 2, 3)) / jnp.maximum(total, 1e-12)
    coverage = (jnp.sum((d > CHANGED) * empty, axis=(1, 2, 3))
                / jnp.maximum(jnp.sum(empty, axis=(1, 2, 3)), 1.0))
    return (total > 0) & (share > SPOT_SHARE) & (coverage < MAX_COVERAGE)
