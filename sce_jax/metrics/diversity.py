"""Diversity: how different the K attempts for one image are from one another.

For one image ``x`` with attempts ``x'_1 .. x'_K`` and change vectors ``d_k = x'_k - x``
(flattened over H, W, C; ``n`` entries), over the pairs ``P`` of distinct attempts ``i < j``
that are included:

    cosine diversity   = mean_{(i,j) in P} (1 - |cos(d_i, d_j)|),
                         cos(a, b) = <a, b> / (||a||_2 ||b||_2)
    pairwise L1        = mean_{(i,j) in P} (1 / n) * sum |x'_i - x'_j|
    pairwise L2        = mean_{(i,j) in P} ||x'_i - x'_j||_2

``1 - |cos|`` is 1 for changes in orthogonal directions (e.g. disjoint regions) and 0 for
changes along the same line, whatever their sign and size.

Which attempts are included: by default only the successful ones (an attempt that did not
reach the target is not an explanation, so its difference from the others says nothing about
the diversity of explanations); ``only_successful=False`` includes every attempt. An attempt
that changed nothing (``d = 0``) has no direction: pairs with it are left out of the cosine
mean (they still count for the distances). With fewer than two included attempts (or no pair
with a direction) the value is NaN, which the run summary skips.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sce_jax.metrics import _arrays


@jax.jit
def _diversity(x, x_cf, included):
    # x: (N, H, W, C); x_cf: (N, K, H, W, C); included: (N, K) bool.
    n_img, k = x_cf.shape[:2]
    d = (x_cf - x[:, None]).reshape(n_img, k, -1)
    entries = d.shape[-1]
    gram = jnp.einsum("nie,nje->nij", d, d)
    norms = jnp.sqrt(jnp.diagonal(gram, axis1=1, axis2=2))
    upper = jnp.triu(jnp.ones((k, k), bool), 1)
    pairs = upper[None] & included[:, :, None] & included[:, None, :]
    directed = pairs & (norms[:, :, None] > 0) & (norms[:, None, :] > 0)
    denom = norms[:, :, None] * norms[:, None, :]
    cos = gram / jnp.where(denom > 0, denom, 1.0)
    between = d[:, :, None, :] - d[:, None, :, :]
    l1 = jnp.sum(jnp.abs(between), axis=-1) / entries
    l2 = jnp.sqrt(jnp.sum(between * between, axis=-1))

    def pair_mean(values, mask):
        count = jnp.sum(mask, axis=(1, 2))
        total = jnp.sum(jnp.where(mask, values, 0.0), axis=(1, 2))
        return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)

    return {"diversity_cosine": pair_mean(1.0 - jnp.abs(cos), directed),
            "pairwise_l1": pair_mean(l1, pairs),
            "pairwise_l2": pair_mean(l2, pairs),
            "num_attempts_used": jnp.sum(included, axis=1)}


def diversity(original: Any, counterfactuals: Any, success: Any = None, *,
              only_successful: bool = True) -> dict[str, jax.Array]:
    """Diversity of the attempts of each image.

    Args:
      original: ``(N, H, W, C)`` images.
      counterfactuals: ``(N, K, H, W, C)``, the K attempts per image.
      success: ``(N, K)`` bool, whether each attempt is valid; required when
        ``only_successful`` (the default).
      only_successful: include only successful attempts (see the module docstring).

    Returns:
      ``{"diversity_cosine", "pairwise_l1", "pairwise_l2"}`` of shape ``(N,)`` (NaN where
      fewer than two attempts qualify) and ``"num_attempts_used"`` ``(N,)``.
    """
    n, h, w, c = _arrays.require_rank("original", original, 4, "N, H, W, C")
    shape = _arrays.require_rank("counterfactuals", counterfactuals, 5, "N, K, H, W, C")
    if shape[:1] + shape[2:] != (n, h, w, c):
        raise ValueError(f"counterfactuals {shape} do not match the originals {(n, h, w, c)}: "
                         f"expected ({n}, K, {h}, {w}, {c})")
    k = shape[1]
    if success is None:
        if only_successful:
            raise ValueError("only_successful=True needs success (N, K); pass "
                             "only_successful=False to use every attempt")
        included = jnp.ones((n, k), bool)
    else:
        if _arrays.shape_of(success) != (n, k):
            raise ValueError(f"success must have shape {(n, k)} (images, attempts), got "
                             f"{_arrays.shape_of(success)}")
        included = jnp.asarray(success, bool) if only_successful else jnp.ones((n, k), bool)
    return _diversity(jnp.asarray(original, jnp.float32),
                      jnp.asarray(counterfactuals, jnp.float32), included)
