"""Validity: whether the classifier gives the target decision on the written counterfactual.

A counterfactual is judged as it is stored: quantised to 8 bits,
``q(x) = round(255 * clip(x, 0, 1)) / 255``, then classified again. A search that only reaches
the target in float precision (a change smaller than one grey level) is not valid.

The decision rule per target kind is the search's own (:mod:`sce_jax.search.targets`):

``"class"``  ``argmax l(q(x')) = t``                     (multiclass, reach class t)
``"other"``  ``argmax l(q(x')) != t``                    (multiclass, t = the original class)
``"flip"``   ``sigmoid(l_t(q(x'))) > 1/2`` iff ``value = 1`` (sigmoid/attribute head: attribute
             ``t`` must take the decision ``value``, i.e. the opposite of the original one)

and, with ``goal_probability > 0``, the target probability must also reach it.

The flip rate of a run is the mean of the per-counterfactual validity (:func:`flip_rate`; the
run's records judge their ``success`` with :func:`reaches_target` too, in
:func:`sce_jax.workdir.records.judge_written`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from sce_jax.data import image_io
from sce_jax.metrics import _arrays
from sce_jax.metrics.batching import map_in_batches
from sce_jax.search import targets as target_lib

KINDS = target_lib.KINDS


def quantise_8bit(images: Any) -> jnp.ndarray:
    """``round(255 * clip(x, 0, 1)) / 255``: the image a PNG file stores, back in [0, 1]
    (:func:`sce_jax.data.image_io.to_uint8`, the quantisation every written PNG goes through)."""
    return jnp.asarray(image_io.to_uint8(np.asarray(images, np.float32)), jnp.float32) / 255.0


def _check_kind(kind: str) -> None:
    KINDS.get(kind)  # an unknown kind raises a ValueError naming the known ones


def reaches_target(logits: Any, target: Any, value: Any = None, *, kind: str,
                   goal_probability: float = 0.0) -> np.ndarray:
    """Per-counterfactual validity from the classifier's logits on the counterfactuals.

    Args:
      logits: ``(N, K)`` logits of the (quantised) counterfactuals.
      target: ``(N,)`` class or attribute index (for ``"other"``: the class to leave).
      value: ``(N,)`` desired decision in {0, 1}; required for ``"flip"``, ignored otherwise.
      kind: ``"class"``, ``"other"`` or ``"flip"``.
      goal_probability: the target probability must also be >= this.

    Returns:
      ``(N,)`` bool numpy array.
    """
    _check_kind(kind)
    n, k = _arrays.require_rank("logits", logits, 2, "counterfactuals, outputs")
    target = np.asarray(target)
    _arrays.require_rank("target", target, 1, "one index per counterfactual")
    if target.shape[0] != n:
        raise ValueError(f"{target.shape[0]} targets for {n} rows of logits")
    bad = (target < 0) | (target >= k)
    if np.any(bad):
        raise ValueError(f"target index {int(target[np.argmax(bad)])} is out of range for {k} "
                         f"outputs (0..{k - 1})")
    if kind == "flip":
        if value is None:
            raise ValueError("kind 'flip' needs value: the decision (0 or 1) attribute t must take")
        value = np.asarray(value, np.float32)
        _arrays.require_same_shape("value", value, "target", target)
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"value must be 0 or 1, got {sorted(set(value.tolist()))}")
    else:
        value = np.zeros(n, np.float32)
    reached = target_lib.target_reached(jnp.asarray(logits, jnp.float32),
                                        jnp.asarray(target, jnp.int32), jnp.asarray(value),
                                        kind=kind, goal_probability=goal_probability)
    return np.asarray(reached, bool)


def validity(logits_fn: Callable[[Any], Any], counterfactuals: Any, target: Any,
             value: Any = None, *, kind: str, goal_probability: float = 0.0,
             quantise: bool = True, batch_size: int = 64) -> np.ndarray:
    """Classifies the (8-bit) counterfactuals and applies :func:`reaches_target`.

    Args:
      logits_fn: ``images (B, H, W, C) in [0, 1] -> logits (B, K)``.
      counterfactuals: ``(N, H, W, C)`` in [0, 1].
      target, value, kind, goal_probability: as in :func:`reaches_target`.
      quantise: judge ``q(x')`` (default) rather than ``x'``.
      batch_size: images per classifier call.

    Returns:
      ``(N,)`` bool numpy array.
    """
    _check_kind(kind)
    _arrays.require_rank("counterfactuals", counterfactuals, 4, "N, H, W, C")
    images = quantise_8bit(counterfactuals) if quantise else jnp.asarray(counterfactuals)
    logits = map_in_batches(logits_fn, images, batch_size)
    return reaches_target(logits, target, value, kind=kind, goal_probability=goal_probability)


def flip_rate(valid: Any) -> float:
    """Share of valid counterfactuals, ``mean(valid)``; NaN when there are none."""
    valid = np.asarray(valid, bool).reshape(-1)
    return float(np.mean(valid)) if valid.size else float("nan")
