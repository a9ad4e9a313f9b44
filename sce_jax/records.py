"""The manifest record of one counterfactual, and validity judged on the written 8-bit image.

Both the dataset run (:mod:`sce_jax.run`) and :func:`sce_jax.save_explanation` write their
records through :func:`counterfactual_record`, so a manifest means the same whoever wrote it.
A record's ``success`` is the target decision at the goal probability on the image as saved
(``round(255 x) / 255``), not on the float image the search ended with; ``outcome`` says what
a reader should make of it (:func:`outcome`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from sce_jax.search import targets as target_lib

OUTCOMES = ("found", "not_found", "near_boundary", "no_second_reason")
CHANGED_LEVEL = 2.0 / 255.0  # a pixel counts as changed above this (any channel)


def outcome(success: bool, near_boundary: bool, no_second_reason: bool) -> str:
    """``near_boundary``: the original was already within the search's boundary margin, so
    whatever flipped it is no explanation; ``no_second_reason``: a later attempt could only
    flip the decision with a spot in empty background; else ``found`` / ``not_found``."""
    if near_boundary:
        return "near_boundary"
    if no_second_reason:
        return "no_second_reason"
    return "found" if success else "not_found"


def judge_written(logits_fn: Callable[[np.ndarray], Any], quantised: np.ndarray, result, *,
                  kind: str, goal_probability: float):
    """``(success, p(target), decision)``, each (B, K), of the 8-bit counterfactuals.

    ``quantised``: (B, K, H, W, C) uint8; ``logits_fn``: images in [0, 1] -> logits.
    """
    b, k = quantised.shape[:2]
    flat = quantised.reshape((b * k,) + quantised.shape[2:]).astype(np.float32) / 255.0
    logits = jnp.asarray(logits_fn(flat))
    target = jnp.asarray(np.repeat(np.asarray(result.target), k))
    value = jnp.asarray(np.repeat(np.asarray(result.target_value), k))
    reached = target_lib.target_reached(logits, target, value, kind=kind,
                                        goal_probability=goal_probability)
    prob = target_lib.target_probability(logits, target, value, kind=kind)
    return (np.asarray(reached).reshape(b, k), np.asarray(prob).reshape(b, k),
            np.asarray(jnp.argmax(logits, -1)).reshape(b, k))


def counterfactual_record(result, row: int, attempt: int, *, example_id: int, source: str,
                          label: int | None, target_kind: str, success8: bool, prob8: float,
                          decision8: int, original: np.ndarray, quantised: np.ndarray,
                          files: dict[str, str]) -> dict[str, Any]:
    """The record of attempt ``attempt`` of row ``row`` of an Explanation (numpy arrays)."""
    j, a = row, attempt
    success = bool(success8 and not result.nonfinite[j, a])
    near = bool(result.near_boundary[j])
    spot = bool(result.no_second_reason[j, a])
    change = np.abs(quantised.astype(np.float32) / 255.0 - original).max(-1)
    return {
        "example_id": int(example_id), "source": source, "label": label,
        "status": "ok", "reason": None,
        "prediction": int(result.prediction[j]),
        "prob_prediction": float(result.prob_prediction[j]),
        "target": int(result.target[j]), "target_kind": target_kind,
        "target_value": int(result.target_value[j]) if target_kind == "flip" else None,
        "attempt": int(a),
        "success": success,
        "success_float": bool(result.success[j, a]),
        "nonfinite": bool(result.nonfinite[j, a]),
        "steps": int(result.steps[j, a]),
        "prob_target_before": float(result.prob_before[j]),
        "prob_target_after": float(prob8),
        "prediction_after": int(decision8),
        "near_boundary": near,
        "no_second_reason": spot,
        "outcome": outcome(success, near, spot),
        "latent_l1": float(result.latent_l1[j, a]), "latent_l2": float(result.latent_l2[j, a]),
        "pixel_l1": float(result.pixel_l1[j, a]), "pixel_l2": float(result.pixel_l2[j, a]),
        "changed_fraction": float(np.mean(change > CHANGED_LEVEL)),
        "files": files,
    }
