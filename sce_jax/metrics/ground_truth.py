"""Ground-truth fidelity on synthetic data with known factors.

On a dataset whose generative factors live in known image regions (the "squares" benchmark:
the square's colour decides the class, the background colour is a confounder), a
counterfactual is faithful when it changes the factor the classifier actually uses. With the
change energy per pixel ``e_p = sum_c (x'_{p,c} - x_{p,c})^2`` and the binary region mask
``m_f`` of each factor ``f``:

    share_f     = sum_p e_p m_{f,p} / sum_p e_p
                  (share of the change energy inside the factor's region; NaN if nothing
                  changed; shares sum to 1 when the regions partition the image)
    intensity_f = sqrt(sum_p e_p m_{f,p} / sum_p m_{f,p})
                  (root-mean-square change per pixel of the region: how far the factor's
                  value moved, independent of the region's area; NaN for an empty region)
    dominant    = argmax_f intensity_f    (-1 when nothing changed)

The dominant factor is decided by intensity, not share: a colour factor that fills a large
background gets a large energy share from a small colour drift, while the factor's value
(the colour) is what the classifier reads.

Over the K attempts of one image, factor ``f`` is found when some successful attempt has it
as its dominant factor; the attempts together found the classifier's factors when every
factor it uses (given as a boolean vector) was found. This is the diversification check: a
classifier relying on both square and background colour needs two different explanations.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sce_jax.metrics import _arrays


@jax.jit
def _factor_changes(x, x_cf, masks):
    # x, x_cf: (..., H, W, C); masks: (..., F, H, W) float.
    energy = jnp.sum((x_cf - x) ** 2, axis=-1)[..., None, :, :]
    inside = jnp.sum(energy * masks, axis=(-2, -1))
    total = jnp.sum(energy, axis=(-3, -2, -1))[..., None]
    area = jnp.sum(masks, axis=(-2, -1))
    share = jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), jnp.nan)
    intensity = jnp.where(area > 0, jnp.sqrt(inside / jnp.where(area > 0, area, 1.0)), jnp.nan)
    ranked = jnp.where(jnp.isnan(intensity), -jnp.inf, intensity)
    dominant = jnp.where(total[..., 0] > 0, jnp.argmax(ranked, axis=-1), -1)
    return {"share": share, "intensity": intensity, "dominant": dominant}


def factor_changes(original: Any, counterfactual: Any, factor_masks: Any) -> dict[str, jax.Array]:
    """Per-factor change shares and intensities, and the dominant factor.

    Args:
      original: ``(..., H, W, C)`` images.
      counterfactual: same shape (or broadcastable, e.g. ``(N, K, H, W, C)`` against
        ``original[:, None]``).
      factor_masks: ``(..., F, H, W)`` region of each factor (1 inside), broadcast against the
        images' leading dimensions (``(F, H, W)`` for regions shared by all images).

    Returns:
      ``{"share": (..., F), "intensity": (..., F), "dominant": (...) int (-1: no change)}``.
    """
    x = jnp.asarray(original, jnp.float32)
    x_cf = jnp.asarray(counterfactual, jnp.float32)
    masks = jnp.asarray(factor_masks, jnp.float32)
    if x.ndim < 3 or x_cf.ndim < 3:
        raise ValueError(f"expected images (..., H, W, C), got shapes {x.shape} and {x_cf.shape}")
    if masks.ndim < 3 or masks.shape[-2:] != x_cf.shape[-3:-1]:
        raise ValueError(f"factor_masks must be (..., F, H, W) with (H, W) = "
                         f"{tuple(x_cf.shape[-3:-1])}, got shape {masks.shape}")
    if bool(jnp.any((masks != 0) & (masks != 1))):
        raise ValueError("factor_masks must be binary (0 or 1)")
    return _factor_changes(x, x_cf, masks)


def factors_found(dominant: Any, success: Any, num_factors: int,
                  used_factors: Any = None) -> dict[str, np.ndarray]:
    """Which factors the successful attempts of each image found.

    Args:
      dominant: ``(N, K)`` dominant factor of each attempt (from :func:`factor_changes`).
      success: ``(N, K)`` bool, whether each attempt is valid.
      num_factors: F.
      used_factors: ``(F,)`` bool, the factors the classifier uses (default: all).

    Returns:
      ``{"found": (N, F) bool, "all_found": (N,) bool}``; ``all_found`` is whether every
      used factor was found by some successful attempt.
    """
    dominant = np.asarray(dominant)
    success = np.asarray(success, bool)
    _arrays.require_rank("dominant", dominant, 2, "images, attempts")
    _arrays.require_same_shape("dominant", dominant, "success", success)
    if used_factors is None:
        used = np.ones(num_factors, bool)
    else:
        used = np.asarray(used_factors, bool)
        if used.shape != (num_factors,):
            raise ValueError(f"used_factors must have shape ({num_factors},), got {used.shape}")
    if np.any((dominant < -1) | (dominant >= num_factors)):
        raise ValueError(f"dominant factors must be in -1..{num_factors - 1}, got "
                         f"{sorted(set(dominant.ravel().tolist()))}")
    hits = (dominant[:, :, None] == np.arange(num_factors)) & success[:, :, None]
    found = hits.any(axis=1)
    return {"found": found, "all_found": np.all(found | ~used, axis=1)}
