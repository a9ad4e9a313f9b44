"""One data batch of a run: its searches, and the files and records of their results.

:func:`batch_searches` turns a data batch into the searches it asks for (one per image, or
one per other class with ``targets.kind = "all_others"``) and the records of the examples that
are skipped (undecodable, or without a target); :func:`write_results` writes what the searches
found through the shared write path (:mod:`sce_jax.workdir.writing`). The batch engine runs
both around one search call (:func:`explain_batch`); the slot engine runs the searches as
slots free up (:mod:`sce_jax.runs.engines`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sce_jax import parallel
from sce_jax.runs.context import RunContext
from sce_jax.runs.targets import RUN_TARGET_KINDS, TargetChoice
from sce_jax.search.engine import Batch as SearchBatch
from sce_jax.workdir import records
from sce_jax.workdir.layout import Record
from sce_jax.workdir.writing import write_counterfactuals


class BatchSearches(NamedTuple):
    """The searches of one data batch: search row ``j`` explains image ``rows[j]``."""

    arrays: SearchBatch       # prepared (padded, placed) for the search
    size: int                 # searches (rows of ``arrays`` before padding)
    rows: np.ndarray          # (size,) the batch row of each search
    images: np.ndarray        # the batch's images, float32
    valid: np.ndarray         # (batch rows,) bool: the image is searched


def label(value) -> int | None:
    """A label of a batch (-1: unknown) as a record holds it (None: unknown)."""
    return None if value is None or int(value) < 0 else int(value)


def batch_searches(batch, run: RunContext) -> tuple[list[dict[str, Any]], BatchSearches | None]:
    """The skip records of a data batch and its searches (None when it has none to run)."""
    config, classifier = run.config, run.classifier
    labels_by_id = dict(zip(np.asarray(batch.example_ids).tolist(), np.asarray(batch.labels).tolist()))
    skipped = [records.skip_record(s.example_id, s.source, s.reason,
                                   label(labels_by_id.get(int(s.example_id), -1)))
               for s in batch.skipped]
    valid = np.asarray(batch.valid, bool)
    if not valid.any() and jax.process_count() == 1:  # with several processes all take part
        return skipped, None
    images = np.asarray(batch.images, np.float32)
    ids = np.asarray(batch.example_ids)
    regions = np.asarray(batch.regions, np.float32)
    chosen = RUN_TARGET_KINDS[config.targets.kind].choose(TargetChoice(
        np.asarray(batch.targets, np.int32), valid, int(config.targets.class_index),
        classifier.num_outputs, lambda: np.asarray(jnp.argmax(run.logits(images), -1))))
    for i in chosen.no_target:
        skipped.append(records.skip_record(int(ids[i]), batch.sources[i], chosen.no_target_reason))
    rows, targets, valid = chosen.rows, chosen.targets, chosen.valid
    arrays, size = run.explainer.prepare_batch(
        images[rows], targets, kind=run.kind, example_ids=ids[rows], regions=regions[rows],
        valid=valid[rows], context=run.prior_context)
    return skipped, BatchSearches(arrays, size, rows, images, valid)


def write_results(result, searches: BatchSearches, batch, run: RunContext) -> list[Record]:
    """Writes the images of the searched examples in ``result`` (numpy; row ``j`` is search
    ``searches.rows[j]``) and returns their records; success is judged on the 8-bit files."""
    rows = np.asarray(searches.rows)
    output = run.config.output
    return write_counterfactuals(
        run.workdir, result, searches.images[rows],
        example_ids=np.asarray(batch.example_ids)[rows],
        sources=[batch.sources[i] for i in rows], labels=[label(batch.labels[i]) for i in rows],
        kind=run.kind, logits_fn=run.logits,
        goal_probability=run.explainer.settings.goal_probability, write=searches.valid[rows],
        heatmaps=bool(output.heatmaps), masks=bool(output.masks))


def explain_batch(batch, run: RunContext) -> list[Record]:
    """Searches one data batch and writes its images; returns its manifest records."""
    skipped, searches = batch_searches(batch, run)
    if searches is None:
        return skipped
    result = run.explainer.explain_arrays(searches.arrays, kind=run.kind)
    result = jax.tree.map(lambda a: parallel.local_rows(a)[:searches.size], result)
    return skipped + write_results(result, searches, batch, run)
