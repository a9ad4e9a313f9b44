"""The manifest records (:class:`sce_jax.workdir.layout.Record`); validity judged on the 8-bit image.

Both the dataset run (:mod:`sce_jax.runs.loop`) and :func:`sce_jax.save_explanation` write their
records through :func:`counterfactual_record` (and :func:`skip_record` for an input that could
not be explained), so a manifest means the same whoever wrote it. A record's ``success`` is
the target decision at the goal probability on the image as saved (``round(255 x) / 255``),
judged by :func:`sce_jax.metrics.reaches_target` as the evaluation judges it, not on the float
image the search ended with; ``outcome`` says what a reader should make of it
(:func:`outcome`); ``changed_fraction`` is :func:`sce_jax.metrics.changed_fraction`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from sce_jax.metrics.sparsity import changed_fraction
from sce_jax.metrics.validity import reaches_target
from sce_jax.search import targets as target_lib
from sce_jax.workdir.layout import Files, Record

OUTCOMES = ("found", "not_found", "stalled", "near_boundary", "no_second_reason")


def outcome(success: bool, near_boundary: bool, no_second_reason: bool, stalled: bool = False) -> str:
    """``near_boundary``: the original was already within the search's boundary margin, so
    whatever flipped it is no explanation; ``no_second_reason``: a later attempt could only
    flip the decision with a spot in empty background; ``stalled``: no counterfactual, and the
    search ended before its budget: no progress, or too slow for the goal (``steps`` says when);
    else ``found`` / ``not_found`` (the whole budget spent)."""
    if near_boundary:
        return "near_boundary"
    if no_second_reason:
        return "no_second_reason"
    if success:
        return "found"
    return "stalled" if stalled else "not_found"


def judge_written(logits_fn: Callable[[np.ndarray], Any], quantised: np.ndarray, result, *,
                  kind: str, goal_probability: float):
    """``(success, p(target), decision)``, each (B, K), of the 8-bit counterfactuals.

    ``quantised``: (B, K, H, W, C) uint8; ``logits_fn``: images in [0, 1] -> logits.
    """
    b, k = quantised.shape[:2]
    flat = quantised.reshape((b * k,) + quantised.shape[2:]).astype(np.float32) / 255.0
    logits = np.asarray(logits_fn(flat), np.float32)
    target = np.repeat(np.asarray(result.target, np.int32), k)
    value = np.repeat(np.asarray(result.target_value, np.float32), k)
    reached = reaches_target(logits, target, value if kind == "flip" else None, kind=kind,
                             goal_probability=goal_probability)
    prob = target_lib.target_probability(jnp.asarray(logits), jnp.asarray(target),
                                         jnp.asarray(value), kind=kind)
    return (reached.reshape(b, k), np.asarray(prob).reshape(b, k),
            np.argmax(logits, -1).reshape(b, k))


def counterfactual_record(result, row: int, attempt: int, *, example_id: int, source: str,
                          label: int | None, target_kind: str, success8: bool, prob8: float,
                          decision8: int, original: np.ndarray, quantised: np.ndarray,
                          files: Files) -> Record:
    """The record of attempt ``attempt`` of row ``row`` of an Explanation (numpy arrays)."""
    j, a = row, attempt
    success = bool(success8 and not result.nonfinite[j, a])
    near = bool(result.near_boundary[j])
    spot = bool(result.no_second_reason[j, a])
    stalled = bool(result.stalled[j, a])
    changed = changed_fraction(original, quantised.astype(np.float32) / 255.0)
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
        "stalled": stalled,
        "outcome": outcome(success, near, spot, stalled),
        "latent_l1": float(result.latent_l1[j, a]), "latent_l2": float(result.latent_l2[j, a]),
        "pixel_l1": float(result.pixel_l1[j, a]), "pixel_l2": float(result.pixel_l2[j, a]),
        "changed_fraction": float(changed),
        "files": files,
    }


def skip_record(example_id: int, source: str, reason: str, label: int | None = None) -> Record:
    """The record of an input that was not explained, and why (status ``"skipped"``)."""
    return {"example_id": int(example_id), "source": source, "label": label,
            "status": "skipped", "reason": reason, "target": -1, "attempt": -1, "files": {}}
