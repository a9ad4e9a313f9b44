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

Resume: an example is done when a part file holds its records. The batch engine commits
whole batches, so a resumed run's batches are the uninterrupted run's. The slot engine commits
examples as they finish; a resumed run reads the same data batches as the first (the done
examples included) and replays the done searches' schedule from their records' steps without
computing them (:meth:`sce_jax.search.slot_scheduler.SlotScheduler.run_chunks`), so the
searches it redoes run as they would have without the interruption: the same results, to
the bit.
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


def slot_commits(batches: Iterable, scheduler, *, searches_of: Callable, write_results: Callable,
                 replay: dict[int, list[list[int]]] | None = None) -> Iterator[list[dict]]:
    """Commits of the slot engine.

    Args:
      batches: the data batches to explain (on resume: all of them, the done examples too).
      scheduler: a :class:`sce_jax.search.slot_scheduler.SlotScheduler`.
      searches_of: ``batch -> (skip records, searches or None)``; ``searches`` has ``arrays``
        (the prepared search batch), ``size``, ``rows`` (image row of each search), ``valid``.
      write_results: ``(explanation, searches, batch) -> records`` for the searches given
        (``searches.rows`` narrowed to the explanation's rows).
      replay: the done examples: example id -> per search (in row order), the steps each
        attempt used (:func:`replay_steps`; every done example is a key, a skipped one with
        no searches). They are replayed, not computed or written.
    """
    replay = replay or {}
    skipped: list[dict] = []
    owners: dict[int, tuple[Any, Any, list[int]]] = {}   # example id -> its batch and searches

    def blocks():
        for batch in batches:
            skips, searches = searches_of(batch)
            skipped.extend(r for r in skips if int(r["example_id"]) not in replay)
            if searches is None:
                continue
            ids = np.asarray(batch.example_ids)
            groups, replays, seen = [], [], {}
            for j in range(searches.size):
                i = searches.rows[j]
                example_id = int(ids[i])
                groups.append(example_id)
                done = replay.get(example_id)
                n = seen[example_id] = seen.get(example_id, -1) + 1
                replays.append(None if done is None else tuple(done[n]) if n < len(done) else ())
                if searches.valid[i] and done is None:
                    owners.setdefault(example_id, (batch, searches, []))[2].append(j)
            yield searches.arrays, groups, replays

    for finished in scheduler.run_chunks(blocks()):
        records, skipped[:] = list(skipped), []
        for example_id, explanation in finished:
            batch, searches, js = owners.pop(example_id)
            records += write_results(explanation, searches._replace(rows=searches.rows[js]), batch)
        yield records
    if skipped:
        yield list(skipped)


def replay_steps(records: Iterable[dict]) -> dict[int, list[list[int]]]:
    """The done examples' schedule from their records: example id -> per search (targets in
    the order their records come), the steps of attempts 0, 1, ... (a skipped example: [])."""
    steps: dict[int, dict[int, dict[int, int]]] = {}
    for r in records:
        steps.setdefault(int(r["example_id"]), {})
        if r.get("status") == "ok":
            per_target = steps.setdefault(int(r["example_id"]), {})
            per_target.setdefault(int(r["target"]), {})[int(r["attempt"])] = int(r["steps"])
    return {example_id: [[attempts[k] for k in sorted(attempts)] for attempts in targets.values()]
            for example_id, targets in steps.items()}
