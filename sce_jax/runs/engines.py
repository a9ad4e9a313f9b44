"""The dataset run's search engines: what turns data batches into committed records.

``ENGINES`` maps the run config's ``engine`` to a generator of commits (lists of manifest
records that ``run.py`` writes as one part file):

- ``"batch"``: one commit per data batch; the batch's ``lax.while_loop`` runs until its
  slowest search is done (every process runs the same batches: several processes work).
- ``"slots"``: continuous batching (:mod:`sce_jax.search.slot_scheduler`): ``slots`` searches in
  flight, each slot refilled when its attempt is over; one commit per chunk of steps in which
  examples finished, holding exactly those examples (all targets and attempts of each), plus
  the skip records of the batches read so far. One process only.
- ``"auto"``: ``"slots"`` in a single-process run, else ``"batch"``.

Resume is unchanged: an example is done when a part file holds its records, and the slot
engine commits an example only when all its attempts are over, so a kill loses at most the
partial searches in the slots, which the next run redoes (randomness is keyed on the example,
the target and the attempt: the redone search gives the same result).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

ENGINE_NAMES = ("auto", "slots", "batch")


def resolve_engine(name: str, process_count: int) -> str:
    """The engine a run uses: ``"auto"`` is ``"slots"`` for one process, else ``"batch"``."""
    if name == "auto":
        return "slots" if process_count == 1 else "batch"
    if name == "slots" and process_count > 1:
        raise ValueError(f"engine='slots' runs in one process, this run has {process_count}: "
                         "use engine='batch' (or 'auto')")
    return name


def batch_commits(batches: Iterable, explain_batch: Callable[[Any], list[dict]]
                  ) -> Iterator[list[dict]]:
    """One commit per data batch: ``explain_batch(batch)`` searches it and writes its images."""
    for batch in batches:
        yield explain_batch(batch)


def slot_commits(batches: Iterable, scheduler, *, searches_of: Callable, write_results: Callable
                 ) -> Iterator[list[dict]]:
    """Commits of the slot engine.

    Args:
      batches: the data batches to explain.
      scheduler: a :class:`sce_jax.search.slot_scheduler.SlotScheduler`.
      searches_of: ``batch -> (skip records, searches or None)``; ``searches`` has ``arrays``
        (the prepared search batch), ``size``, ``rows`` (image row of each search), ``valid``.
      write_results: ``(explanation, searches, batch) -> records`` for the searches given
        (``searches.rows`` narrowed to the explanation's rows).
    """
    skipped: list[dict] = []
    owners: dict[int, tuple[Any, Any, list[int]]] = {}   # example id -> its batch and searches

    def blocks():
        for batch in batches:
            skips, searches = searches_of(batch)
            skipped.extend(skips)
            if searches is None:
                continue
            ids = np.asarray(batch.example_ids)
            groups = []
            for j in range(searches.size):
                i = searches.rows[j]
                example_id = int(ids[i])
                groups.append(example_id)
                if searches.valid[i]:
                    owners.setdefault(example_id, (batch, searches, []))[2].append(j)
            yield searches.arrays, groups

    for finished in scheduler.run_chunks(blocks()):
        records, skipped[:] = list(skipped), []
        for example_id, explanation in finished:
            batch, searches, js = owners.pop(example_id)
            records += write_results(explanation, searches._replace(rows=searches.rows[js]), batch)
        yield records
    if skipped:
        yield list(skipped)
