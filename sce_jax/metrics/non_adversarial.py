"""Non-adversarial rate: do valid counterfactuals also convince an independent classifier?

A counterfactual that flips the explained classifier ``f`` but not a surrogate ``g`` trained
independently on the same task (other seed, other architecture) probably exploits a blind
spot of ``f`` (an adversarial perturbation) rather than changing what the image shows. Over
the counterfactuals ``V`` that are valid for ``f``:

    non-adversarial rate = #{i in V : g gives the target decision on x'_i} / #V

``g``'s decision uses the same rule as validity (:func:`sce_jax.metrics.validity.reaches_target`),
with the same target: reach class ``t``; for ``"other"``, any class but ``t`` (the class ``f``
originally gave, not necessarily the class ``g`` gave); for ``"flip"``, attribute ``t`` takes
``value``. The rate is NaN when no counterfactual is valid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sce_jax.metrics.validity import reaches_target


def surrogate_flips(surrogate_logits: Any, target: Any, value: Any = None, *, kind: str,
                    goal_probability: float = 0.0) -> np.ndarray:
    """``(N,)`` bool: whether the surrogate gives the target decision on each counterfactual.

    ``surrogate_logits`` are ``(N, K)`` logits of the surrogate on the (8-bit) counterfactuals;
    the other arguments as in :func:`sce_jax.metrics.validity.reaches_target`.
    """
    return reaches_target(surrogate_logits, target, value, kind=kind,
                          goal_probability=goal_probability)


def non_adversarial_rate(valid: Any, surrogate_flipped: Any) -> float:
    """``#(valid & surrogate_flipped) / #valid``; NaN when nothing is valid."""
    valid = np.asarray(valid, bool)
    flipped = np.asarray(surrogate_flipped, bool)
    if valid.shape != flipped.shape:
        raise ValueError(f"valid and surrogate_flipped must have the same shape, got "
                         f"{valid.shape} and {flipped.shape}")
    count = int(valid.sum())
    if count == 0:
        return float("nan")
    return float((valid & flipped).sum() / count)
