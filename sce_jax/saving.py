"""Saving a result of :meth:`sce_jax.Explainer.explain` as a run's workdir: PNGs, manifest, report.

    result = explainer.explain(images, targets=["Dress", "Coat"])
    sce_jax.save_explanation(result, images, "runs/mine", classifier=classifier)

writes what ``scripts/explain.py`` writes for a dataset (same file writer,
:mod:`sce_jax.example_files`; same record fields, class names and goal in words,
:mod:`sce_jax.record_names`)::

    images/<id>/original.png, cf_t<t>_a<a>.png, diff_t<t>_a<a>.png, mask_t<t>_a<a>.png
    manifest.jsonl, results.csv, summary.json, report.html

With ``classifier`` given, success is judged as the dataset run judges it: on the 8-bit image
as written, classified again; without it, the search's own judgement on the float image is
used. ``scripts/evaluate.py`` needs a run config and does not evaluate these folders.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sce_jax import api_inputs, image_io, report, results_table
from sce_jax.classifier import Classifier
from sce_jax.example_files import write_example_files
from sce_jax.record_names import with_names
from sce_jax.search import targets as target_lib

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"


def infer_kind(result, classifier: Classifier | None) -> str:
    """The target kind of a result: "flip" for a multilabel classifier, else "other" when
    every target is the original's prediction (the default of ``explain(images)``), else "class"."""
    if classifier is not None and classifier.head == "multilabel":
        return "flip"
    return "other" if np.array_equal(np.asarray(result.target), np.asarray(result.prediction)) else "class"


def _judged_on_written(quantised: np.ndarray, result, classifier: Classifier, kind: str,
                       goal_probability: float):
    """(success (B, K), p(target) (B, K), decision (B, K)) of the 8-bit images."""
    b, k = quantised.shape[:2]
    flat = quantised.reshape((b * k,) + quantised.shape[2:]).astype(np.float32) / 255.0
    logits = jnp.asarray(classifier.logits(flat))
    target = jnp.asarray(np.repeat(np.asarray(result.target), k))
    value = jnp.asarray(np.repeat(np.asarray(result.target_value), k))
    reached = target_lib.target_reached(logits, target, value, kind=kind,
                                        goal_probability=goal_probability)
    prob = target_lib.target_probability(logits, target, value, kind=kind)
    return (np.asarray(reached).reshape(b, k), np.asarray(prob).reshape(b, k),
            np.asarray(jnp.argmax(logits, -1)).reshape(b, k))


def save_explanation(result, images, out_dir: str, *, classifier: Classifier | None = None,
                     kind: str | None = None, example_ids: Sequence[int] | None = None,
                     labels: Sequence[int] | None = None, goal_probability: float = 0.0,
                     write_report: bool = True) -> str:
    """Writes ``result`` (from ``explain(images, ...)``) into ``out_dir``; returns its path.

    Args:
      result: the :class:`~sce_jax.search.engine.Explanation` of ``images``.
      images: the float images in [0, 1] that were explained, (B, H, W, C).
      out_dir: the folder to write (created; files of the same names are replaced).
      classifier: the classifier explained: success re-checked on the written 8-bit images,
        and its class names in the records and the report.
      kind: "class", "other" or "flip" as passed to ``explain`` (default: :func:`infer_kind`).
      example_ids, labels: per image, as passed to ``explain`` / the true classes (optional).
      goal_probability: the search config's ``goal_probability`` (for the 8-bit re-check).
      write_report: also write ``report.html``.
    """
    images = api_inputs.checked_images(images)
    result = jax.tree.map(np.asarray, result)
    b, k = result.image.shape[:2]
    if images.shape[0] != b:
        raise ValueError(f"images has {images.shape[0]} image(s), the result {b}")
    ids = np.arange(b) if example_ids is None else api_inputs.checked_example_ids(example_ids, b)
    labels = [None] * b if labels is None else [int(v) for v in api_inputs._per_example("labels", labels, b, np.int64)]
    kind = kind or infer_kind(result, classifier)
    names = classifier.class_names if classifier is not None else None
    quantised = image_io.to_uint8(result.image)
    if classifier is not None:
        success, prob_after, decision_after = _judged_on_written(quantised, result, classifier, kind,
                                                                 goal_probability)
    else:
        success, prob_after, decision_after = result.success, result.prob_after, result.prediction_after
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    records = []
    for i in range(b):
        attempt_files = write_example_files(out_dir, int(ids[i]), images[i], quantised[i],
                                            result.mask[i], int(result.target[i]))
        for a in range(k):
            change = np.abs(quantised[i, a].astype(np.float32) / 255.0 - images[i]).max(-1)
            records.append(with_names({
                "example_id": int(ids[i]), "source": f"images[{i}]", "label": labels[i],
                "status": "ok", "reason": None,
                "prediction": int(result.prediction[i]),
                "prob_prediction": float(result.prob_prediction[i]),
                "target": int(result.target[i]), "target_kind": kind,
                "target_value": int(result.target_value[i]) if kind == "flip" else None,
                "attempt": a,
                "success": bool(success[i, a] and not result.nonfinite[i, a]),
                "success_float": bool(result.success[i, a]),
                "nonfinite": bool(result.nonfinite[i, a]), "steps": int(result.steps[i, a]),
                "prob_target_before": float(result.prob_before[i]),
                "prob_target_after": float(prob_after[i, a]),
                "prediction_after": int(decision_after[i, a]),
                "latent_l1": float(result.latent_l1[i, a]), "latent_l2": float(result.latent_l2[i, a]),
                "pixel_l1": float(result.pixel_l1[i, a]), "pixel_l2": float(result.pixel_l2[i, a]),
                "changed_fraction": float(np.mean(change > 2.0 / 255.0)),
                "files": attempt_files[a],
            }, names))
    _write_text(os.path.join(out_dir, MANIFEST),
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    _write_text(os.path.join(out_dir, SUMMARY), json.dumps(_summary(records), indent=2, sort_keys=True))
    results_table.write_results_csv(out_dir, records)
    if write_report:
        report.write_report(out_dir, class_names=names)
    return out_dir


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    from sce_jax.run import summarise  # the dataset run's summary, without its throughput

    summary = summarise(records, elapsed=0.0, new_counterfactuals=0)
    for key in ("counterfactuals_per_second", "elapsed_seconds"):
        summary.pop(key, None)
    summary["complete"] = True
    return summary


def _write_text(path: str, text: str) -> None:
    with image_io.atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
