"""The one write path of explained images, shared by the dataset run and ``save_explanation``.

:func:`write_counterfactuals` turns a search result into files and records: the images are
quantised to 8 bits (:func:`sce_jax.data.image_io.to_uint8`), judged again on those 8-bit
images when a classifier is given (:func:`sce_jax.workdir.records.judge_written`; success
is what the written file shows), written as PNGs (:mod:`sce_jax.workdir.example_files`) and
described by one record per (example, target, attempt) (:mod:`sce_jax.workdir.records`).
:func:`write_run_outputs` writes what a finished set of records gives: ``summary.json``,
``results.csv`` and ``report.html``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sce_jax.data import image_io
from sce_jax.workdir import layout, records, report, results_table
from sce_jax.workdir.example_files import write_example_files


def write_counterfactuals(workdir: str, result, originals: np.ndarray, *,
                          example_ids: Sequence[int], sources: Sequence[str],
                          labels: Sequence[int | None], kind: str,
                          logits_fn: Callable[[np.ndarray], Any] | None,
                          goal_probability: float, write: np.ndarray | None = None,
                          heatmaps: bool = True, masks: bool = True) -> list[layout.Record]:
    """Writes the PNGs of ``result`` and returns their records (names not yet added).

    Args:
      result: a search result in numpy (:class:`~sce_jax.search.engine.Explanation`) whose
        row ``j`` explains ``originals[j]``, example ``example_ids[j]`` read from
        ``sources[j]``, of true class ``labels[j]`` (None: unknown).
      originals: (B, H, W, C) float images in [0, 1].
      kind: the search's target kind ("class", "other" or "flip").
      logits_fn: [0, 1] images -> logits: success, p(target) and the decision are judged again
        on the 8-bit images as written; None takes the search's own (float) judgement.
      goal_probability: the search's goal, for that judgement.
      write: (B,) bool, the rows to write (default: all); every row is judged, so the
        classifier sees one batch shape whatever is written.
      heatmaps, masks: also write the difference heat maps and the edit masks.
    """
    quantised = image_io.to_uint8(result.image)
    if logits_fn is not None:
        success, prob, decision = records.judge_written(
            logits_fn, quantised, result, kind=kind, goal_probability=goal_probability)
    else:
        success, prob, decision = result.success, result.prob_after, result.prediction_after
    written, originals_written = [], set()
    for j in range(result.image.shape[0]):
        if write is not None and not write[j]:
            continue
        example_id = int(example_ids[j])
        attempt_files = write_example_files(
            workdir, example_id, originals[j], quantised[j], result.mask[j], int(result.target[j]),
            heatmaps=heatmaps, write_masks=masks,
            write_original=example_id not in originals_written)
        originals_written.add(example_id)
        for a in range(result.image.shape[1]):
            written.append(records.counterfactual_record(
                result, j, a, example_id=example_id, source=sources[j], label=labels[j],
                target_kind=kind, success8=success[j, a], prob8=prob[j, a],
                decision8=decision[j, a], original=originals[j], quantised=quantised[j, a],
                files=attempt_files[a]))
    return written


def write_run_outputs(workdir: str, manifest: Sequence[Mapping[str, Any]],
                      summary: Mapping[str, Any], *, class_names: Sequence[str] | None,
                      write_report: bool = True, report_max_examples: int = 200) -> None:
    """Writes ``summary.json``, ``results.csv`` (from ``manifest``) and, if asked, the report."""
    layout.write_summary(workdir, summary)
    results_table.write_results_csv(workdir, manifest)
    if write_report:
        report.write_report(workdir, class_names=class_names, max_examples=report_max_examples)
