"""Saving a result of :meth:`sce_jax.Explainer.explain` as a run's workdir: PNGs, manifest, report.

    result = explainer.explain(images, targets=["Dress", "Coat"])
    sce_jax.save_explanation(result, images, "runs/mine", classifier=classifier)

writes what ``scripts/explain.py`` writes for a dataset, through the same write path
(:mod:`sce_jax.workdir.writing`: the same files, record fields, class names and goal in
words)::

    images/<id>/original.png, cf_t<t>_a<a>.png, diff_t<t>_a<a>.png, mask_t<t>_a<a>.png
    manifest.jsonl, results.csv, summary.json, report.html

With ``classifier`` given, success is judged as the dataset run judges it: on the 8-bit image
as written, classified again; without it, the search's own judgement on the float image is
used. ``scripts/evaluate.py`` needs a run config and does not evaluate these folders.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np

from sce_jax import api_inputs
from sce_jax.classifier import Classifier
from sce_jax.metrics.summary import run_summary
from sce_jax.workdir import layout
from sce_jax.workdir.record_names import with_names
from sce_jax.workdir.writing import write_counterfactuals, write_run_outputs


def infer_kind(result, classifier: Classifier | None) -> str:
    """The target kind of a result: "flip" for a multilabel classifier, else "other" when
    every target is the original's prediction (the default of ``explain(images)``), else "class"."""
    if classifier is not None and classifier.head == "multilabel":
        return "flip"
    return "other" if np.array_equal(np.asarray(result.target), np.asarray(result.prediction)) else "class"


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
    b = result.image.shape[0]
    if images.shape[0] != b:
        raise ValueError(f"images has {images.shape[0]} image(s), the result {b}")
    ids = np.arange(b) if example_ids is None else api_inputs.checked_example_ids(example_ids, b)
    labels = ([None] * b if labels is None else
              [int(v) for v in api_inputs.per_example("labels", labels, b, np.int64)])
    names = classifier.class_names if classifier is not None else None
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = write_counterfactuals(
        out_dir, result, images, example_ids=ids, sources=[f"images[{i}]" for i in range(b)],
        labels=labels, kind=kind or infer_kind(result, classifier),
        logits_fn=classifier.logits if classifier is not None else None,
        goal_probability=goal_probability)
    written = [with_names(r, names) for r in written]
    layout.write_manifest(out_dir, written)
    write_run_outputs(out_dir, written, {**run_summary(written), "complete": True},
                      class_names=names, write_report=write_report)
    return out_dir
