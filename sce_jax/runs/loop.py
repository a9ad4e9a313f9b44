"""A dataset-wide explanation run: batches -> search -> 8-bit images + manifest -> report.

``explain_dataset(config, workdir)`` is what ``scripts/explain.py`` calls. The workdir's files,
how each is written and read, and the resume check are :mod:`sce_jax.workdir.layout`'s; this module
orchestrates: check the inputs, record the run, explain batch by batch (each batch's images,
then its part file), then assemble the manifest, ``results.csv``, ``summary.json``
(:func:`sce_jax.metrics.summary.run_summary`, :mod:`sce_jax.workdir.throughput`) and the report.

Resume: an example is done when a part file holds its records; a rerun skips those and
finishes the rest, so the manifest never holds a duplicate or a half-written record. Validity
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
:data:`USER_ERRORS` before any work. A write that fails during the run (a full disk) raises :class:`WorkdirWriteError`;
batches committed before it are kept and a rerun resumes after them.

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
import signal
import threading
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from sce_jax import data as data_lib
from sce_jax import parallel
from sce_jax.classifier import HEADS
from sce_jax.data import image_io
from sce_jax.explainer import Explainer
from sce_jax.metrics.summary import run_summary
from sce_jax.runs import engines as run_slots
from sce_jax.runs import memory_check
from sce_jax.runs.collectives import Collectives, PeerFailedError, differing_keys
from sce_jax.runs.config import RunConfigError, resolve_target_class, validate_run_config
from sce_jax.runs.loaders import (
    check_prior_inputs,
    load_classifier,
    load_generator,
    load_prior,
    load_prior_context,
)
from sce_jax.runs.progress import Progress, announce
from sce_jax.runs.targets import RUN_TARGET_KINDS, TargetChoice
from sce_jax.search.config import SearchConfigError, settings_from_config
from sce_jax.search.engine import Batch as SearchBatch
from sce_jax.search.slot_scheduler import SlotScheduler
from sce_jax.workdir import inputs as run_inputs
from sce_jax.workdir import layout as workdir_files
from sce_jax.workdir import records as records_lib
from sce_jax.workdir import report, results_table
from sce_jax.workdir import throughput as run_throughput
from sce_jax.workdir.example_files import write_example_files
from sce_jax.workdir.layout import ResumeConfigError, WorkdirReadError, WorkdirWriteError
from sce_jax.workdir.record_names import named_fields


class RunInputError(ValueError):
    """An input of the run (data, weights, targets, sizes) that cannot work; raised before any work."""


# The errors a user fixes by changing the command, the inputs or the disk: scripts/explain.py
# reports them as one line (``error: ...``) without a traceback.
USER_ERRORS = (RunConfigError, SearchConfigError, RunInputError, WorkdirWriteError,
               WorkdirReadError, ResumeConfigError, run_inputs.InputSetChangedError,
               PeerFailedError, memory_check.MemoryLimitError)
# Seconds a process waits for the others at any point of a multi-process run.
DEFAULT_PEER_TIMEOUT_S = 600.0


@dataclasses.dataclass
class RunState:
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # preemption, Ctrl-C: both finish the batch


def _install_stop_handlers(state: RunState):
    previous = {}

    def handler(signum, frame):
        logging.warning("%s: finishing the current batch, then stopping",
                        signal.Signals(signum).name)
        state.stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_handlers(previous):
    for sig, old in previous.items():
        signal.signal(sig, old)


def _open_inputs(config: ml_collections.ConfigDict):
    """Loads the models and opens the data, checking everything a run needs (no work yet)."""
    generator = load_generator(config.generator)
    classifier = load_classifier(config.classifier)
    prior = load_prior(config.prior) if config.search.prior.enabled else None
    context = load_prior_context(config.prior, prior)
    if RUN_TARGET_KINDS[config.targets.kind].takes_class and config.targets.class_index >= 0:
        classifier.check_target(config.targets.class_index)
    dataset = data_lib.open_configured(
        config.data, num_classes=(classifier.num_outputs
                                  if HEADS[classifier.head].labels_index_outputs else None),
        class_names=classifier.class_names)
    latent_shape = generator.latent_shape(tuple(config.data.image_size))  # not fitting: now
    _check_channels(config, generator, classifier)
    if prior is not None:
        check_prior_inputs(prior, latent_shape, context)
    return generator, classifier, prior, context, dataset


def _model_name(section: ml_collections.ConfigDict, model) -> str:
    return f"{section.get('checkpoint') or section.get('diffusers')} ({model.name})"


def _check_channels(config, generator, classifier) -> None:
    """The data's channels must be what the autoencoder makes and the classifier takes.

    Checked on shapes alone (``jax.eval_shape``: nothing is computed), so a grey dataset with
    an RGB autoencoder stops here, not in the first batch.
    """
    size, channels = tuple(int(v) for v in config.data.image_size), int(config.data.channels)
    latent = jax.ShapeDtypeStruct((1,) + generator.latent_shape(size), jnp.float32)
    made = jax.eval_shape(generator.decode_fn, generator.params, latent).shape[-1]
    if made != channels:
        raise RunInputError(
            f"the generator {_model_name(config.generator, generator)} makes {made}-channel "
            f"images but data.channels={channels}; set data.channels={made} (the data is "
            "converted: grey <-> RGB)")
    image = jax.ShapeDtypeStruct((1,) + size + (channels,), jnp.float32)
    try:
        jax.eval_shape(classifier.logits_fn, classifier.params, image)
    except Exception as e:  # noqa: BLE001 - a shape error deep inside the network
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunInputError(
            f"the classifier {_model_name(config.classifier, classifier)} cannot take "
            f"{channels}-channel {size[0]}x{size[1]} images ({first_line}); set "
            "classifier.channels (and classifier.input_size) to what it was trained on") from None


def _batch_rows(config, dataset: data_lib.Dataset, process_count: int) -> int:
    """``batch_size``, but never more than a process's share of the data (no batch of padding)."""
    share = -(-dataset.num_examples // process_count)
    rows = min(int(config.batch_size), max(1, share))
    if rows < int(config.batch_size):
        logging.info("batch_size=%d is more than the %d examples per process: batches of %d",
                     int(config.batch_size), share, rows)
    return rows


def _check_search_memory(config, explainer: Explainer, kind: str, rows: int,
                         context: Any = None, scheduler: SlotScheduler | None = None) -> None:
    """Compiles the search for the run's batch shape and refuses it if it cannot fit in memory.

    The first batch reuses this compilation. ``rows`` per process; ``all_others`` searches
    every other class of each image at once (``rows * (classes - 1)`` searches). ``context``:
    the prior's conditioning (one row, given to every image), part of the batch's shapes.
    With a ``scheduler`` (the slot engine) its chunk of steps is compiled and checked instead.
    """
    size, channels = tuple(int(v) for v in config.data.image_size), int(config.data.channels)
    rows *= RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        explainer.classifier.num_outputs)
    mesh = explainer.mesh
    local = parallel.padded_size(rows, mesh)
    total = local * (jax.process_count() if mesh is not None else 1)
    sharding = parallel.batch_sharding(mesh) if mesh is not None else None

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct((total,) + shape, dtype, sharding=sharding)

    batch = SearchBatch(images=spec(size + (channels,), jnp.float32), targets=spec((), jnp.int32),
                        example_ids=spec((), jnp.int32), regions=spec(size + (1,), jnp.float32),
                        valid=spec((), jnp.bool_),
                        context=None if context is None else jax.tree.map(
                            lambda a: spec(tuple(a.shape[1:]), a.dtype), context))
    if scheduler is not None:
        compiled = scheduler.compile(batch)
        what = f"{scheduler.slots} search slots of {size[0]}x{size[1]}x{channels} images"
    else:
        compiled = explainer.compile(batch, kind=kind)
        what = f"batches of {rows} images of {size[0]}x{size[1]}x{channels}"
    memory_check.check_fits(
        memory_check.compiled_bytes(compiled), max_memory_gb=float(config.max_memory_gb),
        what=what)


def explain_dataset(config: ml_collections.ConfigDict, workdir: str, *,
                    state: RunState | None = None,
                    peer_timeout: float = DEFAULT_PEER_TIMEOUT_S) -> dict[str, Any]:
    """Explains every example of ``config.data.source``; resumable. Returns the summary.

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
    previous = _install_stop_handlers(state)  # from here on SIGTERM never loses work
    try:
        peers = Collectives(peer_timeout)
        given = json.loads(config.to_json_best_effort())
        peers.agree("config", json.dumps(given, sort_keys=True), lambda a, b: "differs in: " +
                    ", ".join(differing_keys(json.loads(a), json.loads(b))))
        validate_run_config(config)
        config = resolve_target_class(config)  # a class name becomes its index, as recorded
        current = json.loads(config.to_json_best_effort())
        settings = settings_from_config(config.search)  # search config errors before any work
        return _explain_dataset(config, current, workdir, state, settings, peers)
    finally:
        _restore_handlers(previous)


def _explain_dataset(config, current: dict[str, Any], workdir: str, state: RunState, settings,
                     peers: Collectives) -> dict[str, Any]:
    process_index, process_count = peers.process_index, peers.process_count

    # A problem on any process stops all of them, each with one message, before any work.
    # (Loading the models is itself collective with several processes: all or none load.)
    peers.together("the check of the workdir",
                   lambda: process_index == 0 and workdir_files.check_writable(workdir),
                   USER_ERRORS)
    announce("loading the models and the data ...")

    def check_inputs():  # read-only: every process checks, none writes
        try:
            generator, classifier, prior, context, dataset = _open_inputs(config)
        except (RunConfigError, SearchConfigError):
            raise
        except (ValueError, OSError) as e:  # the inputs' own errors name the file and the problem
            raise RunInputError(str(e)) from e
        records = workdir_files.read_part_records(workdir)
        if records:
            workdir_files.check_resume(workdir, current, dataset.source, dataset.sources, records)
        return generator, classifier, prior, context, dataset, bool(records)

    generator, classifier, prior, context, dataset, resumed = peers.together(
        "the checks of the inputs", check_inputs, USER_ERRORS)
    peers.agree("input set", f"{dataset.num_examples} {run_inputs.digest(dataset.sources)}",
                lambda a, b: f"it sees {b.split()[0]} inputs or another list, process 0 sees "
                             f"{a.split()[0]}; the workdir and data must be on a shared file system")

    def record_run():  # the inputs are usable: now the workdir may be created
        workdir_files.check_writable(workdir, keep=True)
        try:
            workdir_files.write_run_record(workdir, current, dataset.source, dataset.sources,
                                           resumed=resumed)
        except OSError as e:
            raise workdir_files.write_failed(e, workdir, 0) from e

    peers.together("recording the run", lambda: process_index == 0 and record_run(), USER_ERRORS)

    explainer = Explainer(generator, classifier, settings, prior=prior)
    kind = RUN_TARGET_KINDS[config.targets.kind].search_kind
    logits_jit = jax.jit(classifier.logits_fn)
    try:
        engine = run_slots.resolve_engine(config.engine, process_count)
    except ValueError as e:
        raise RunConfigError(str(e)) from None

    done = workdir_files.finished_ids(workdir)
    # Every process must see the same finished examples (they fix the batch count), so none
    # may commit a batch before all have read them.
    peers.barrier("resume state read")
    batch_size = _batch_rows(config, dataset, process_count)
    # Every process runs the same number of (collective) batches, padding with empty ones.
    num_batches = data_lib.max_num_batches(dataset, batch_size, process_count=process_count,
                                           skip_ids=done)
    searches_per_batch = batch_size * RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        classifier.num_outputs)
    scheduler = (explainer.slot_scheduler(kind, slots=int(config.slots) or searches_per_batch,
                                          chunk_steps=int(config.chunk_steps) or None)
                 if engine == "slots" else None)
    if num_batches:  # compiles the search now: too large a search stops before any work
        announce(f"compiling the search for {scheduler.slots} slots ..." if scheduler else
                 f"compiling the search for batches of {batch_size} ...")
        peers.together("the memory check", lambda: _check_search_memory(
            config, explainer, kind, batch_size, context, scheduler), USER_ERRORS)
    remaining = dataset.shard_ids(process_index, process_count, done)
    todo = int(remaining.size)
    per_image = RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        classifier.num_outputs) * settings.attempts
    logging.info("%s: %d examples, %d already done, %d to explain on process %d/%d",
                 config.data.source, dataset.num_examples, len(done), todo, process_index, process_count)
    committed = 0
    in_batches = False  # between the first batch and the end of all (the processes apart)
    try:
        removed = workdir_files.remove_stale_temporaries(workdir, remaining,
                                                         process_index=process_index)
        if removed:
            logging.info("removed %d temporary file(s) left by an interrupted run", removed)
        workdir_files.make_output_folders(workdir)
        progress = Progress(todo * per_image, unit="counterfactuals")
        start = time.monotonic()
        produced = 0
        in_batches = True
        batches = data_lib.iterate_batches(
            dataset, batch_size, skip_ids=done, process_index=process_index,
            process_count=process_count, pad_to_num_batches=num_batches)
        if scheduler is not None:  # commits as examples finish (sce_jax/runs/engines.py)
            commits = run_slots.slot_commits(
                batches, scheduler,
                searches_of=lambda b: _batch_searches(b, config, explainer, classifier, logits_jit,
                                                      kind, context),
                write_results=lambda result, searches, b: _write_results(
                    result, searches, b, config, explainer, classifier, logits_jit, kind, workdir))
        else:
            commits = run_slots.batch_commits(batches, lambda b: _explain_batch(
                b, config, explainer, classifier, logits_jit, kind, workdir, context))
        try:  # the generators are closed here, in this thread (their decode pool joins)
            for index in itertools.count():
                try:
                    records = next(commits, None)
                except Exception as e:  # noqa: BLE001 - only a failed exchange between processes
                    if process_count > 1 and _is_collective_failure(e):
                        raise peers.lost(f"batch {index + 1}", e) from None
                    raise
                if records is None:
                    break
                records = [{**r, **named_fields(r, classifier.class_names)} for r in records]
                workdir_files.write_part(workdir, process_index, records)  # the commit point
                committed += 1
                n_cf = sum(1 for r in records if r["status"] == "ok")
                produced += n_cf
                progress.update(n_cf)
                # After the batch: a stop asked for during it (even during the first compile)
                # costs nothing that was computed. After the last one there is nothing to stop.
                # (The slot engine's commits are not batches: its searches in flight are redone.)
                if (scheduler is not None or index + 1 < num_batches) and peers.any(
                        f"stop after batch {index + 1}", state.stop.is_set()):
                    state.stop.set()
                    logging.warning("stopped on request after %d complete batch(es); rerun to resume",
                                    committed)
                    break
        finally:
            commits.close()
            batches.close()
        elapsed = time.monotonic() - start
        # all parts written before anyone assembles (shared workdir)
        peers.barrier("all batches written")
        in_batches = False
        records = (workdir_files.read_part_records(workdir) if process_index != 0
                   else workdir_files.assemble_manifest(workdir))
        explained = {r["example_id"] for r in records}
        summary = {**run_summary(records), "elapsed_seconds": elapsed,
                   "counterfactuals_per_second": produced / elapsed if elapsed > 0 else None,
                   "complete": explained >= set(range(dataset.num_examples))}
        if process_index != 0:
            return summary
        summary = run_throughput.carry_over(_previous_summary(workdir), summary, produced)
        workdir_files.write_summary(workdir, summary)
        results_table.write_results_csv(workdir, records)
        if config.output.report:
            report.write_report(workdir, class_names=tuple(config.classifier.class_names) or None,
                                max_examples=int(config.output.report_max_examples))
    except OSError as e:
        error = workdir_files.write_failed(e, workdir, committed)
        error.alone = in_batches
        raise error from e
    return summary


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


class _BatchSearches(NamedTuple):
    """The searches of one data batch: search row ``j`` explains image ``rows[j]``."""
    arrays: SearchBatch       # prepared (padded, placed) for the search
    size: int                 # searches (rows of ``arrays`` before padding)
    rows: np.ndarray          # (size,) the batch row of each search
    images: np.ndarray        # the batch's images, float32
    valid: np.ndarray         # (batch rows,) bool: the image is searched


def _batch_searches(batch, config, explainer: Explainer, classifier, logits_jit, kind: str,
                    context: Any = None) -> tuple[list[dict[str, Any]], _BatchSearches | None]:
    """The skip records of a data batch and its searches (None when it has none to run)
    (``context``: the prior's conditioning, one row for every image)."""
    labels_by_id = dict(zip(np.asarray(batch.example_ids).tolist(), np.asarray(batch.labels).tolist()))
    records = [records_lib.skip_record(s.example_id, s.source, s.reason,
                                       _label(labels_by_id.get(int(s.example_id), -1)))
               for s in batch.skipped]
    valid = np.asarray(batch.valid, bool)
    if not valid.any() and jax.process_count() == 1:  # with several processes all take part
        return records, None
    images = np.asarray(batch.images, np.float32)
    ids = np.asarray(batch.example_ids)
    regions = np.asarray(batch.regions, np.float32)
    chosen = RUN_TARGET_KINDS[config.targets.kind].choose(TargetChoice(
        np.asarray(batch.targets, np.int32), valid, int(config.targets.class_index),
        classifier.num_outputs,
        lambda: np.asarray(jnp.argmax(logits_jit(classifier.params, images), -1))))
    for i in chosen.no_target:
        records.append(records_lib.skip_record(int(ids[i]), batch.sources[i], chosen.no_target_reason))
    rows, targets, valid = chosen.rows, chosen.targets, chosen.valid
    batch_arrays, size = explainer.prepare_batch(
        images[rows], targets, kind=kind, example_ids=ids[rows], regions=regions[rows],
        valid=valid[rows], context=context)
    return records, _BatchSearches(batch_arrays, size, rows, images, valid)


def _write_results(result, searches: _BatchSearches, batch, config, explainer: Explainer,
                   classifier, logits_jit, kind: str, workdir: str) -> list[workdir_files.Record]:
    """Writes the images of the searched examples in ``result`` (numpy; row ``j`` is search
    ``searches.rows[j]``) and returns their records."""
    # Validity on what is written: quantise to 8 bits and classify again.
    quantised = image_io.to_uint8(result.image)
    success8, prob8, decision8 = records_lib.judge_written(
        lambda x: logits_jit(classifier.params, x), quantised, result, kind=kind,
        goal_probability=explainer.settings.goal_probability)
    images, ids, valid = searches.images, np.asarray(batch.example_ids), searches.valid
    records = []
    written_originals = set()
    for j in range(result.image.shape[0]):
        i = searches.rows[j]
        if not valid[i]:
            continue
        example_id = int(ids[i])
        attempt_files = write_example_files(
            workdir, example_id, images[i], quantised[j], result.mask[j],
            int(result.target[j]), heatmaps=bool(config.output.heatmaps),
            write_masks=bool(config.output.masks), write_original=example_id not in written_originals)
        written_originals.add(example_id)
        for a in range(result.image.shape[1]):
            records.append(records_lib.counterfactual_record(
                result, j, a, example_id=example_id, source=batch.sources[i],
                label=_label(batch.labels[i]), target_kind=kind, success8=success8[j, a],
                prob8=prob8[j, a], decision8=decision8[j, a], original=images[i],
                quantised=quantised[j, a], files=attempt_files[a]))
    return records


def _explain_batch(batch, config, explainer: Explainer, classifier, logits_jit, kind: str,
                   workdir: str, context: Any = None) -> list[workdir_files.Record]:
    """Searches one data batch and writes its images; returns its manifest records
    (``context``: the prior's conditioning, one row for every image)."""
    records, searches = _batch_searches(batch, config, explainer, classifier, logits_jit, kind,
                                        context)
    if searches is None:
        return records
    result = explainer.explain_arrays(searches.arrays, kind=kind)
    result = jax.tree.map(lambda a: parallel.local_rows(a)[:searches.size], result)
    return records + _write_results(result, searches, batch, config, explainer, classifier,
                                    logits_jit, kind, workdir)


def _label(value) -> int | None:
    return None if value is None or int(value) < 0 else int(value)
