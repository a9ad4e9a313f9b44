"""A dataset-wide explanation run: batches -> search -> 8-bit images + manifest -> report.

``explain_dataset(config, workdir)`` is what ``scripts/explain.py`` calls. The workdir's files,
how each is written and read, and the resume check are :mod:`sce_jax.workdir`'s; this module
orchestrates: check the config, the inputs and the search's memory, then record the run
(``run_config.json``, ``inputs.json``: the first write), explain batch by batch (each batch's
images, then its part file), then assemble the manifest, ``results.csv``, ``summary.json``
(:func:`sce_jax.metrics.summary.run_summary`, :mod:`sce_jax.workdir.throughput`) and the report.

One run per workdir: once the config is checked, process 0 takes the workdir's lock
(:mod:`sce_jax.workdir.lock`) for the whole run, before anything of the workdir is read or
written, so a second run on the same workdir stops with a user error.

Resume: an example is done when a part file holds its records and every file they name exists
(:mod:`sce_jax.workdir.committed_files`: otherwise it is explained again); a rerun skips those
and finishes the rest, so the manifest never holds a duplicate or a half-written record. Validity
is re-checked on the 8-bit images that are written. Every file is written to a temporary name
and renamed, and a batch's part file is written after all of its images: a process killed at
any point (even SIGKILL) leaves complete files only, plus at most some temporary ``.*.tmp``
files, which the next run of the same examples removes. An example whose images were written
but whose part file was not is simply explained again, with the same result (randomness is
keyed by example id).

SIGTERM (preemption) or SIGINT (Ctrl-C) finishes the batch in flight, writes the manifest and
returns a summary with ``complete: False`` (unless that batch was the last: then the run is
complete); ``scripts/explain.py`` then exits with its documented code.

Errors: a problem with the run's inputs (config, data source, weights, a target the classifier
does not have, channels the models do not take, a search too large for the memory, a workdir
that cannot be written, a resume with another config or input set) raises one of
:data:`USER_ERRORS` before any work and before anything is written to the workdir. A write
that fails during the run (a full disk) raises :class:`WorkdirWriteError`; batches committed
before it are kept and a rerun resumes after them.

Several processes (``sce_jax.launch.distributed``): process ``p`` of ``P`` explains the examples with
``id % P == p``; all run the same number of batches (padding with empty ones), each writes its
own examples' images and part files into the shared workdir, and process 0 assembles the
manifest after all have finished. The processes agree on the config and the input set and
run their checks together before any work; every wait for another process ends after
``peer_timeout`` seconds with :class:`~sce_jax.runs.collectives.PeerLostError` naming it.
"""


from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from typing import Any, NamedTuple

import jax
import ml_collections
from absl import logging

from sce_jax import data as data_lib
from sce_jax.data.dataset import Dataset
from sce_jax.explainer import Explainer
from sce_jax.metrics.summary import run_summary
from sce_jax.runs import engines, preflight, searches
from sce_jax.runs.collectives import Collectives, differing_keys
from sce_jax.runs.config import RunConfigError, resolve_target_class, validate_run_config
from sce_jax.runs.context import RunContext
from sce_jax.runs.errors import USER_ERRORS, RunInputError  # noqa: F401  (part of the API)
from sce_jax.runs.progress import Progress, announce
from sce_jax.runs.shards import Shard
from sce_jax.runs.signals import RunState, install_stop_handlers, restore_handlers
from sce_jax.runs.targets import RUN_TARGET_KINDS
from sce_jax.search.config import SearchConfigError, settings_from_config
from sce_jax.search.slot_scheduler import SlotScheduler
from sce_jax.workdir import committed_files
from sce_jax.workdir import inputs as run_inputs
from sce_jax.workdir import layout as workdir_files
from sce_jax.workdir import lock as workdir_lock
from sce_jax.workdir import shard_record
from sce_jax.workdir import throughput as run_throughput
from sce_jax.workdir.layout import WorkdirWriteError  # noqa: F401  (part of the API)
from sce_jax.workdir.record_names import named_fields
from sce_jax.workdir.writing import write_run_outputs

# Seconds a process waits for the others at any point of a multi-process run.
DEFAULT_PEER_TIMEOUT_S = 600.0


def explain_dataset(config: ml_collections.ConfigDict, workdir: str, *,
                    state: RunState | None = None,
                    peer_timeout: float = DEFAULT_PEER_TIMEOUT_S,
                    shard: Shard | None = None) -> dict[str, Any]:
    """Explains every example of ``config.data.source``; resumable. Returns the summary.

    With a ``shard`` (one process only), only that shard's examples, into a workdir of its own
    (:mod:`sce_jax.runs.shards`); its summary is ``complete`` once they all have records.

    The summary's ``complete`` is False when the run stopped on request (SIGTERM, SIGINT)
    before every example had a record; rerunning with the same config and workdir finishes it.
    With several processes, every wait for the others ends after ``peer_timeout`` seconds
    (:mod:`sce_jax.runs.collectives`).

    Raises:
      RunConfigError, SearchConfigError, RunInputError, WorkdirWriteError, ...: see
        :data:`USER_ERRORS` (before any work, except a write that fails mid-run).
      PeerLostError: another process is missing, dead or stuck (several processes only).
    """
    workdir = os.path.abspath(workdir)
    state = state or RunState()
    previous = install_stop_handlers(state)  # from here on SIGTERM never loses work
    locks = []  # the workdir's lock, held by process 0 for all processes
    try:
        peers = Collectives(peer_timeout)
        if shard is not None and peers.process_count > 1:
            raise RunConfigError(f"--shard={shard} runs as one process, this run has "
                                 f"{peers.process_count}: a shard is an independent task")
        given = json.loads(config.to_json_best_effort())
        peers.agree("config", json.dumps(given, sort_keys=True), lambda a, b: "differs in: " +
                    ", ".join(differing_keys(json.loads(a), json.loads(b))))
        validate_run_config(config)
        config = resolve_target_class(config)  # a class name becomes its index, as recorded
        settings = settings_from_config(config.search)  # search config errors before any work
        # One run per workdir: taken before anything of the workdir is read or written.
        peers.together("the lock of the workdir", lambda: peers.process_index == 0 and
                       locks.append(workdir_lock.acquire(workdir)), USER_ERRORS)
        run, dataset, resumed = _open_run(config, workdir, settings, peers, shard)
        plan = _plan(run, dataset, peers, shard)
        # Every check has passed (the memory check included): the run's first write.
        _record_run(run, dataset, resumed, peers, shard)
        plan = _read_resume_state(run, dataset, plan, peers)
        return _explain(run, dataset, plan, state, peers)
    finally:
        for held in locks:
            held.release()
        restore_handlers(previous)


def _open_run(config, workdir: str, settings, peers: Collectives,
              shard: Shard | None) -> tuple[RunContext, Dataset, bool]:
    """Checks the workdir and the inputs on every process, writing nothing; returns the run,
    its data and whether the workdir holds records already (a resume).

    A problem on any process stops all of them, each with one message, before any work.
    (Loading the models is itself collective with several processes: all or none load.)
    """
    current = json.loads(config.to_json_best_effort())
    peers.together("the check of the workdir",
                   lambda: peers.process_index == 0 and workdir_files.check_writable(workdir),
                   USER_ERRORS)
    announce("loading the models and the data ...")

    def check_inputs():  # read-only: every process checks, none writes
        try:
            generator, classifier, prior, context, dataset = preflight.open_inputs(config)
        except (RunConfigError, SearchConfigError):
            raise
        except (ValueError, OSError) as e:  # the inputs' own errors name the file and the problem
            raise RunInputError(str(e)) from e
        records = workdir_files.read_part_records(workdir)
        if records:
            workdir_files.check_resume(workdir, current, dataset.source, dataset.sources, records)
            shard_record.check_same_shard(workdir, shard and shard.as_record())
        return generator, classifier, prior, context, dataset, bool(records)

    generator, classifier, prior, context, dataset, resumed = peers.together(
        "the checks of the inputs", check_inputs, USER_ERRORS)
    peers.agree("input set", f"{dataset.num_examples} {run_inputs.digest(dataset.sources)}",
                lambda a, b: f"it sees {b.split()[0]} inputs or another list, process 0 sees "
                             f"{a.split()[0]}; the workdir and data must be on a shared file system")

    run = RunContext(config=config, workdir=workdir,
                     explainer=Explainer(generator, classifier, settings, prior=prior),
                     kind=RUN_TARGET_KINDS[config.targets.kind].search_kind,
                     logits_jit=jax.jit(classifier.logits_fn), prior_context=context)
    return run, dataset, resumed


def _record_run(run: RunContext, dataset: Dataset, resumed: bool, peers: Collectives,
                shard: Shard | None) -> None:
    """Writes ``run_config.json`` and ``inputs.json`` (process 0), once every check passed:
    the workdir is created here, so a run stopped by a check leaves nothing behind."""
    workdir = run.workdir
    current = json.loads(run.config.to_json_best_effort())

    def record_run():
        workdir_files.check_writable(workdir, keep=True)
        try:
            workdir_files.write_run_record(workdir, current, dataset.source, dataset.sources,
                                           resumed=resumed)
            shard_record.write_shard_record(workdir, shard and shard.as_record())
        except OSError as e:
            raise workdir_files.write_failed(e, workdir, 0) from e

    peers.together("recording the run", lambda: peers.process_index == 0 and record_run(),
                   USER_ERRORS)


@dataclasses.dataclass
class _Counts:
    """What this invocation has committed so far (kept when a write fails mid-run)."""

    commits: int = 0           # part files written
    counterfactuals: int = 0   # records with status "ok" in them
    found: int = 0             # records whose outcome is "found"


class _Plan(NamedTuple):
    """How the run's remaining work is cut: what is done, the batches, the engine."""

    done: set[int]                    # example ids with records already
    batch_size: int                   # data rows per batch and process
    num_batches: int                  # batches every process runs (padding with empty ones)
    scheduler: SlotScheduler | None   # the slot engine's, or None for the batch engine
    split: tuple[int, int]            # (index, count): this task's examples, id % count == index


def _plan(run: RunContext, dataset: Dataset, peers: Collectives, shard: Shard | None) -> _Plan:
    """Sizes the batches, chooses the engine and compiles the search, writing nothing (too
    large a search stops here, before the run is recorded).

    The examples left to do are read from the workdir as the resume will find them (the
    committed ones whose files are all there): with none left, nothing is compiled. A shard
    searches in the one-process run's shapes (its batch size, its slots), so that its records
    are that run's.
    """
    config = run.config
    try:
        engine = engines.resolve_engine(config.engine, peers.process_count)
    except ValueError as e:
        raise RunConfigError(str(e)) from None
    records = workdir_files.read_part_records(run.workdir)
    done = ({int(r["example_id"]) for r in records}
            - set(committed_files.missing_files(run.workdir, records)))
    batch_size = preflight.batch_rows(config, dataset, peers.process_count)
    split = tuple(shard) if shard is not None else (peers.process_index, peers.process_count)
    num_batches = _num_batches(dataset, batch_size, split, done)
    searches_per_batch = batch_size * RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        run.classifier.num_outputs)
    scheduler = (run.explainer.slot_scheduler(run.kind, slots=int(config.slots) or searches_per_batch,
                                              chunk_steps=int(config.chunk_steps) or None)
                 if engine == "slots" else None)
    if num_batches:
        announce(f"compiling the search for {scheduler.slots} slots ..." if scheduler else
                 f"compiling the search for batches of {batch_size} ...")
        peers.together("the memory check", lambda: preflight.check_search_memory(
            config, run.explainer, run.kind, batch_size, run.prior_context, scheduler),
            USER_ERRORS)
    return _Plan(done, batch_size, num_batches, scheduler, split)


def _num_batches(dataset: Dataset, batch_size: int, split: tuple[int, int], done) -> int:
    """The batches every process runs: the most of any process, for processes in lockstep;
    a shard's own."""
    if split[1] > 1 and jax.process_count() == 1:  # a shard: no one to keep pace with
        return data_lib.num_batches(dataset, batch_size, process_index=split[0],
                                    process_count=split[1], skip_ids=done)
    return data_lib.max_num_batches(dataset, batch_size, process_count=split[1], skip_ids=done)


def _read_resume_state(run: RunContext, dataset: Dataset, plan: _Plan,
                       peers: Collectives) -> _Plan:
    """``plan`` with the finished examples and the batch count the resume works from, once an
    example whose committed files are not all there any more is dropped (explained again)."""
    peers.together("the check of the committed files", lambda: peers.process_index == 0 and
                   committed_files.redo_incomplete(run.workdir), USER_ERRORS)
    done = workdir_files.finished_ids(run.workdir)
    # Every process must see the same finished examples (they fix the batch count), so none
    # may commit a batch before all have read them.
    peers.barrier("resume state read")
    return plan._replace(done=done, num_batches=_num_batches(dataset, plan.batch_size, plan.split, done))


def _explain(run: RunContext, dataset: Dataset, plan: _Plan, state: RunState,
             peers: Collectives) -> dict[str, Any]:
    """Explains the remaining examples, commit by commit, then writes the run's outputs."""
    config, workdir = run.config, run.workdir
    process_index, process_count = plan.split  # a process's or a shard's share
    remaining = dataset.shard_ids(process_index, process_count, plan.done)
    todo = int(remaining.size)
    per_image = RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        run.classifier.num_outputs) * run.explainer.settings.attempts
    logging.info("%s: %d examples, %d already done, %d to explain on process %d/%d",
                 config.data.source, dataset.num_examples, len(plan.done), todo, process_index,
                 process_count)
    counts = _Counts()
    in_batches = False  # between the first batch and the end of all (the processes apart)
    try:
        removed = workdir_files.remove_stale_temporaries(workdir, remaining,
                                                         process_index=process_index)
        if removed:
            logging.info("removed %d temporary file(s) left by an interrupted run", removed)
        workdir_files.make_output_folders(workdir)
        progress = Progress(todo * per_image, unit="counterfactuals")
        start = time.monotonic()
        in_batches = True
        if plan.scheduler is not None:  # commits as examples finish (sce_jax/runs/engines.py)
            # The batches of the first run, the done examples replayed (an exact resume).
            batches = data_lib.iterate_batches(dataset, plan.batch_size,
                                               process_index=process_index,
                                               process_count=process_count,
                                               skip_ids=plan.done if not todo else frozenset())
            done = [r for r in workdir_files.read_part_records(workdir)
                    if int(r["example_id"]) in plan.done]
            commits = engines.slot_commits(
                batches, plan.scheduler, searches_of=lambda b: searches.batch_searches(b, run),
                write_results=lambda result, s, b: searches.write_results(result, s, b, run),
                replay=engines.replay_steps(done))
        else:
            batches = data_lib.iterate_batches(
                dataset, plan.batch_size, skip_ids=plan.done, process_index=process_index,
                process_count=process_count, pad_to_num_batches=plan.num_batches)
            commits = engines.batch_commits(batches, lambda b: searches.explain_batch(b, run))
        try:  # the generators are closed here, in this thread (their decode pool joins)
            _commit_all(commits, run, plan, state, peers, progress, counts)
        finally:
            commits.close()
            batches.close()
        elapsed = time.monotonic() - start
        # all parts written before anyone assembles (shared workdir)
        peers.barrier("all batches written")
        in_batches = False
        return _finish(run, dataset, plan, elapsed, counts, peers.process_index)
    except OSError as e:
        error = workdir_files.write_failed(e, workdir, counts.commits)
        error.alone = in_batches
        raise error from e


def _commit_all(commits, run: RunContext, plan: _Plan, state: RunState, peers: Collectives,
                progress: Progress, counts: _Counts) -> None:
    """Writes each commit's part file (its commit point) until the commits end or a stop is
    asked for, counting them in ``counts``."""
    for index in itertools.count():
        try:
            records = next(commits, None)
        except Exception as e:  # noqa: BLE001 - only a failed exchange between processes
            if peers.process_count > 1 and _is_collective_failure(e):
                raise peers.lost(f"batch {index + 1}", e) from None
            raise
        if records is None:
            break
        records = [{**r, **named_fields(r, run.classifier.class_names)} for r in records]
        workdir_files.write_part(run.workdir, plan.split[0], records)  # the commit point
        counts.commits += 1
        n_cf = sum(1 for r in records if r["status"] == "ok")
        counts.counterfactuals += n_cf
        counts.found += sum(1 for r in records if r.get("outcome") == "found")
        progress.update(n_cf, found=counts.found)
        # After the batch: a stop asked for during it (even during the first compile)
        # costs nothing that was computed. After the last one there is nothing to stop.
        # (The slot engine's commits are not batches: its searches in flight are redone.)
        if (plan.scheduler is not None or index + 1 < plan.num_batches) and peers.any(
                f"stop after batch {index + 1}", state.stop.is_set()):
            state.stop.set()
            logging.warning("stopped on request after %d complete batch(es); rerun to resume",
                            counts.commits)
            break


def _finish(run: RunContext, dataset: Dataset, plan: _Plan, elapsed: float, counts: _Counts,
            process_index: int) -> dict[str, Any]:
    """The run's summary; process 0 also assembles the manifest and writes the outputs."""
    workdir = run.workdir
    records = (workdir_files.read_part_records(workdir) if process_index != 0
               else workdir_files.assemble_manifest(workdir))
    explained = {r["example_id"] for r in records}
    summary = {**run_summary(records), "elapsed_seconds": elapsed,
               "counterfactuals_per_second": run_throughput.per_second(counts.counterfactuals, elapsed),
               "found_per_second": run_throughput.per_second(counts.found, elapsed),
               "complete": explained >= set(_whole_share(dataset, plan).tolist())}
    if process_index != 0:
        return summary
    summary = run_throughput.carry_over(_previous_summary(workdir), summary,
                                        counts.counterfactuals, counts.found)
    output = run.config.output
    write_run_outputs(workdir, records, summary,
                      class_names=tuple(run.config.classifier.class_names) or None,
                      write_report=bool(output.report),
                      report_max_examples=int(output.report_max_examples))
    return summary


def _whole_share(dataset: Dataset, plan: _Plan):
    """The example ids a complete workdir holds: all, or a shard's (several processes write
    one workdir together)."""
    return dataset.shard_ids(*plan.split) if jax.process_count() == 1 else dataset.shard_ids()


def _previous_summary(workdir: str) -> dict[str, Any] | None:
    """The workdir's ``summary.json`` before this invocation; None for a new or unreadable one."""
    try:
        return workdir_files.read_summary(workdir)
    except workdir_files.WorkdirReadError as e:
        logging.warning("%s; the throughput of earlier invocations is not carried over", e)
        return None


def _is_collective_failure(error: Exception) -> bool:
    """A search that failed because a peer's gloo connection broke (it died mid-batch)."""
    return "gloo" in str(error).lower()
