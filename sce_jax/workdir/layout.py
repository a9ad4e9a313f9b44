"""The workdir format: every file name of a run's folder, how each is written and read back.

A workdir (``scripts/explain.py``, :func:`sce_jax.save_explanation`) holds::

    run_config.json          RUN_CONFIG: the config the run started with (a resume must use
                             the same)
    inputs.json              INPUTS: the ordered inputs it was made from (a resume must see the
                             same; the format and its check: sce_jax.workdir.inputs)
    images/<id:07d>/         IMAGES: original.png and, per (target t, attempt a),
                             cf_t<t>_a<a>.png (the 8-bit counterfactual), diff_t<t>_a<a>.png
                             (heat map), mask_t<t>_a<a>.png (edit mask): image_file()
    parts/p<process:03d>-<first id:09d>.jsonl
                             PARTS: the records of one batch, written after its images (the
                             commit point of the batch)
    manifest.jsonl           MANIFEST: every record, one JSON object per line, sorted by
                             (example, target, attempt), rebuilt from parts/
    results.csv              RESULTS_CSV: the manifest's main columns (sce_jax.workdir.results_table)
    summary.json             SUMMARY: run-level figures (sce_jax.metrics.summary.run_summary)
                             and throughput (sce_jax.workdir.throughput)
    report.html              REPORT: the page a person reads (sce_jax.workdir.report)
    run.lock                 LOCK: the run using the workdir, while it runs (sce_jax.workdir.lock)
    evaluation/              EVALUATION: scripts/evaluate.py's metrics.json (EVALUATION_METRICS),
                             counterfactuals.jsonl (EVALUATION_RECORDS) and PNG plots

A record (:class:`Record`) is what :mod:`sce_jax.workdir.records` builds: one per (example, target,
attempt) with status ``"ok"``, or one per skipped input (status ``"skipped"``, target and
attempt -1, no files).

Writing: every file is written to a temporary name beside it and renamed
(:func:`sce_jax.data.image_io.atomic_write`), so a reader, or a run killed at any moment, sees the
old file or the complete new one; :func:`remove_stale_temporaries` clears what a killed run
left. Reading: :func:`read_manifest` and :func:`read_summary` refuse a file that is not what
this module writes, naming the file and line (:class:`WorkdirReadError`).

Resume: an example is done when a part file holds its records (:func:`read_part_records`);
:func:`check_resume` refuses a workdir made with another result-defining config or from
another input set.
"""

from __future__ import annotations

import copy
import errno
import json
import os
from typing import Any, Iterable, Literal, Mapping, NotRequired, Sequence, TypedDict

from sce_jax.data import image_io
from sce_jax.workdir import inputs as run_inputs

RUN_CONFIG = "run_config.json"
INPUTS = "inputs.json"
IMAGES = "images"
PARTS = "parts"
MANIFEST = "manifest.jsonl"
RESULTS_CSV = "results.csv"
SUMMARY = "summary.json"
REPORT = "report.html"
LOCK = "run.lock"  # the running run's owner while it runs (sce_jax.workdir.lock)
EVALUATION = "evaluation"
EVALUATION_METRICS = "metrics.json"  # inside evaluation/, as the two below
EVALUATION_RECORDS = "counterfactuals.jsonl"
ORIGINAL_PNG = "original.png"
# The PNG of each file kind of an attempt: <prefix>_t<target>_a<attempt>.png.
ATTEMPT_PNG_PREFIXES = {"counterfactual": "cf", "difference": "diff", "mask": "mask"}
# Config sections that change results: a resume with other values would mix two runs.
RESULT_DEFINING = ("data", "generator", "classifier", "targets", "search")


class Files(TypedDict, total=False):
    """A record's PNGs, relative to the workdir (difference and mask may be switched off)."""

    original: str
    counterfactual: str
    difference: str
    mask: str


class Record(TypedDict):
    """One line of ``manifest.jsonl`` (and of a part file).

    Skip records hold only the first eight keys (``status`` ``"skipped"``, ``reason`` why,
    ``target`` and ``attempt`` -1, ``files`` empty) and the names; the others are
    :func:`sce_jax.workdir.records.counterfactual_record`'s. ``success`` is the target decision at the
    goal probability on the written 8-bit image; ``*_name`` and ``goal`` are
    :mod:`sce_jax.workdir.record_names`'s.
    """

    example_id: int
    source: str
    label: int | None
    status: Literal["ok", "skipped"]
    reason: str | None
    target: int
    attempt: int
    files: Files
    prediction: NotRequired[int]
    prob_prediction: NotRequired[float]
    target_kind: NotRequired[Literal["class", "other", "flip"]]
    target_value: NotRequired[int | None]
    success: NotRequired[bool]
    success_float: NotRequired[bool]
    nonfinite: NotRequired[bool]
    steps: NotRequired[int]
    prob_target_before: NotRequired[float]
    prob_target_after: NotRequired[float]
    prediction_after: NotRequired[int]
    near_boundary: NotRequired[bool]
    no_second_reason: NotRequired[bool]
    stalled: NotRequired[bool]
    outcome: NotRequired[Literal["found", "not_found", "stalled", "near_boundary", "no_second_reason"]]
    latent_l1: NotRequired[float]
    latent_l2: NotRequired[float]
    pixel_l1: NotRequired[float]
    pixel_l2: NotRequired[float]
    changed_fraction: NotRequired[float]
    label_name: NotRequired[str | None]
    prediction_name: NotRequired[str | None]
    target_name: NotRequired[str | None]
    prediction_after_name: NotRequired[str | None]
    goal: NotRequired[str | None]


class WorkdirReadError(ValueError):
    """A workdir file that is missing or not in this format; the message names file and line."""


class ResumeConfigError(ValueError):
    """The workdir holds a run made with another result-defining config."""


class WorkdirWriteError(OSError):
    """The workdir cannot be written (read-only, full disk, no permission); says what to do.

    ``errno`` is the failed write's error number; ``str()`` is the message alone.
    ``alone`` is True for a write that failed during the batches: only this process knows
    of it (the others learn it when it does not arrive at their next exchange).
    """

    def __init__(self, code: int | None, message: str):
        super().__init__(message)
        self.errno = code
        self.alone = False


# ----------------------------------------------------------------------------- names


def example_folder(example_id: int) -> str:
    """The folder of one example's PNGs, relative to the workdir."""
    return os.path.join(IMAGES, f"{int(example_id):07d}")


def image_file(example_id: int, kind: str, target: int | None = None,
               attempt: int | None = None) -> str:
    """A PNG of one example, relative to the workdir: ``kind`` ``"original"`` or one of
    :data:`ATTEMPT_PNG_PREFIXES` (with the ``target`` and ``attempt`` it belongs to)."""
    if kind == "original":
        return os.path.join(example_folder(example_id), ORIGINAL_PNG)
    if kind not in ATTEMPT_PNG_PREFIXES:
        raise ValueError(f"unknown image kind {kind!r}; one of original, "
                         f"{', '.join(ATTEMPT_PNG_PREFIXES)}")
    name = f"{ATTEMPT_PNG_PREFIXES[kind]}_t{int(target)}_a{int(attempt)}.png"
    return os.path.join(example_folder(example_id), name)


def part_file(process_index: int, first_id: int) -> str:
    """The part file of a batch whose smallest example id is ``first_id``, workdir-relative."""
    return os.path.join(PARTS, f"p{int(process_index):03d}-{int(first_id):09d}.jsonl")


# ----------------------------------------------------------------------------- writing


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically (temporary name, fsync, rename)."""
    with image_io.atomic_write(path, "w", fsync=True, encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, value: Any) -> None:
    """Writes ``value`` as indented JSON with sorted keys, atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True))


def _jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def make_output_folders(workdir: str) -> None:
    """Creates ``parts/`` and ``images/``."""
    os.makedirs(os.path.join(workdir, PARTS), exist_ok=True)
    os.makedirs(os.path.join(workdir, IMAGES), exist_ok=True)


def write_part(workdir: str, process_index: int, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes one batch's records as its part file: the batch's commit point (nothing for none)."""
    if records:
        first = min(int(r["example_id"]) for r in records)
        write_text(os.path.join(workdir, part_file(process_index, first)), _jsonl(records))


def sorted_records(records: Iterable[Mapping[str, Any]]) -> list[Record]:
    """One record per (example, target, attempt), the last one given winning, sorted."""
    unique = {}
    for r in records:
        unique[(r["example_id"], r.get("target", -1), r.get("attempt", -1))] = r
    return [unique[k] for k in sorted(unique)]


def write_manifest(workdir: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes ``manifest.jsonl``: ``records`` in the order given, one JSON object per line."""
    write_text(os.path.join(workdir, MANIFEST), _jsonl(records))


def assemble_manifest(workdir: str) -> list[Record]:
    """Rebuilds ``manifest.jsonl`` from the part files (:func:`sorted_records`); returns them."""
    records = sorted_records(read_part_records(workdir))
    write_manifest(workdir, records)
    return records


def write_summary(workdir: str, summary: Mapping[str, Any]) -> None:
    write_json(os.path.join(workdir, SUMMARY), summary)


def write_run_record(workdir: str, config: Mapping[str, Any], source: str,
                     sources: Sequence[str], *, resumed: bool) -> None:
    """Writes what the run is made from: ``run_config.json`` (``config``, the run config as
    JSON) and ``inputs.json`` (new runs; a resumed workdir from before ``inputs.json`` gets one,
    once :func:`check_resume` has checked its records)."""
    if not resumed:
        write_json(os.path.join(workdir, RUN_CONFIG), dict(config))
    if not resumed or read_input_record(workdir) is None:
        write_text(os.path.join(workdir, INPUTS),
                   json.dumps(run_inputs.input_record(source, sources), indent=1))


def _is_temporary(name: str) -> bool:
    """Names :func:`sce_jax.data.image_io.atomic_write` gives files before their final rename."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temporaries(workdir: str, example_ids, *, process_index: int) -> int:
    """Removes temporary files left by a killed run; returns how many.

    Only files this process would write again are touched: the image folders of
    ``example_ids`` (this process's remaining examples), its own ``parts/p<index>-*`` files and,
    on process 0, the run-level files (manifest, summary, report, config). So processes
    sharing a workdir never remove each other's files in flight.
    """
    folders = [os.path.join(workdir, example_folder(i)) for i in example_ids]
    prefixes = {os.path.join(workdir, PARTS): f".p{process_index:03d}-"}
    if process_index == 0:
        prefixes[workdir] = "."
    removed = 0
    candidates = [(f, ".") for f in folders] + list(prefixes.items())
    for folder, prefix in candidates:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if _is_temporary(name) and name.startswith(prefix):
                try:
                    os.remove(os.path.join(folder, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def check_writable(workdir: str, *, keep: bool = False) -> None:
    """Writes a probe file into ``workdir``, so a read-only disk fails before any work.

    Folders the probe had to create are removed again unless ``keep``: a run that stops on a
    bad input leaves no empty workdir behind (the run creates it once its inputs are checked).

    Raises:
      WorkdirWriteError: naming the workdir and the reason.
    """
    created = []
    folder = workdir
    while folder and not os.path.exists(folder) and folder != os.path.dirname(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(workdir, exist_ok=True)
        with image_io.atomic_write(os.path.join(workdir, ".write_probe"), "w") as f:
            f.write("probe")
        os.remove(os.path.join(workdir, ".write_probe"))
    except OSError as e:
        keep = False
        raise WorkdirWriteError(
            e.errno, f"the workdir {workdir} cannot be written ({e.strerror or e}"
            f"{': ' + str(e.filename) if e.filename else ''}); choose a writable --workdir") from e
    finally:
        for new_folder in created if not keep else ():
            try:
                os.rmdir(new_folder)
            except OSError:
                pass


def write_failed(e: OSError, workdir: str, committed: int) -> WorkdirWriteError:
    """The error for a write that failed mid-run, saying what was kept and how to go on."""
    hint = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the disk is read-only",
            errno.EACCES: "no permission to write"}.get(e.errno, "a write failed")
    where = f" ({e.filename})" if e.filename else ""
    if not committed:
        return WorkdirWriteError(
            e.errno, f"{hint}: {e.strerror or e}{where}. Nothing was explained by this run; fix "
            "the problem and rerun the same command")
    return WorkdirWriteError(
        e.errno, f"{hint}: {e.strerror or e}{where}. The {committed} batch(es) this run "
        f"completed are kept in {workdir}; fix the problem and rerun the same command to resume")


# ----------------------------------------------------------------------------- reading


def _read_jsonl(path: str) -> list[Record]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkdirReadError(f"{path} line {number}: not valid JSON ({e})") from None
            if not isinstance(record, dict) or "example_id" not in record:
                raise WorkdirReadError(f"{path} line {number}: expected a JSON object with an "
                                       "'example_id'")
            records.append(record)
    return records


def read_part_records(workdir: str) -> list[Record]:
    """All records of the committed part files (a half-written part never exists: atomic)."""
    folder = os.path.join(workdir, PARTS)
    if not os.path.isdir(folder):
        return []
    records = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl") and not _is_temporary(name):
            records.extend(_read_jsonl(os.path.join(folder, name)))
    return records


def finished_ids(workdir: str) -> set[int]:
    """The examples that have their records (explained or skipped): a resume leaves them out."""
    return {int(r["example_id"]) for r in read_part_records(workdir)}


def read_manifest(workdir: str) -> list[Record]:
    """The records of ``workdir/manifest.jsonl`` (blank lines ignored).

    Raises:
      WorkdirReadError: the manifest is missing, or a line is not a JSON object with an
        ``example_id`` (the message names the line).
    """
    path = os.path.join(workdir, MANIFEST)
    if not os.path.isfile(path):
        raise WorkdirReadError(f"{path} does not exist: no manifest to read")
    return _read_jsonl(path)


def _read_object(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkdirReadError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(value, dict):
        raise WorkdirReadError(f"{path}: expected a JSON object")
    return value


def read_summary(workdir: str) -> dict[str, Any] | None:
    """``summary.json`` as a dict; None when there is none. Raises WorkdirReadError if broken."""
    return _read_object(os.path.join(workdir, SUMMARY))


def read_run_config(workdir: str) -> dict[str, Any] | None:
    """``run_config.json`` as a dict; None when there is none. Raises WorkdirReadError if broken."""
    return _read_object(os.path.join(workdir, RUN_CONFIG))


def read_input_record(workdir: str) -> dict[str, Any] | None:
    """``inputs.json`` (:func:`sce_jax.workdir.inputs.input_record`); None when there is none."""
    return _read_object(os.path.join(workdir, INPUTS))


def read_evaluation_metrics(workdir: str) -> dict[str, Any] | None:
    """``evaluation/metrics.json`` of an evaluated run; None when absent or unreadable."""
    try:
        return _read_object(os.path.join(workdir, EVALUATION, EVALUATION_METRICS))
    except WorkdirReadError:
        return None


# ----------------------------------------------------------------------------- resume


def upgrade_recorded_config(recorded: dict) -> dict:
    """A ``run_config.json`` written by an earlier release, in today's keys (so that resuming
    its workdir with the same settings is not refused): ``targets.class_name`` added (empty),
    ``data.npz_images_key`` / ``npz_labels_key`` moved to ``data.npz.images_key`` /
    ``labels_key`` and ``data.format`` added (empty: picked by the source)."""
    recorded = copy.deepcopy(recorded)
    if isinstance(recorded.get("targets"), dict):
        recorded["targets"].setdefault("class_name", "")
    data = recorded.get("data")
    if isinstance(data, dict) and "npz_images_key" in data:
        data["npz"] = {"images_key": data.pop("npz_images_key"),
                       "labels_key": data.pop("npz_labels_key", "labels")}
        data.setdefault("format", "")
    return recorded



def check_resume(workdir: str, config: Mapping[str, Any], source: str, sources: Sequence[str],
                 records: Sequence[Mapping[str, Any]]) -> None:
    """Refuses to resume ``workdir`` (which holds ``records``) with another run.

    ``config``: the run config as JSON; it must equal ``run_config.json`` in every
    :data:`RESULT_DEFINING` section. ``source``, ``sources``: the data source and its ordered
    inputs now (:func:`sce_jax.workdir.inputs.check_unchanged`).

    Raises:
      ResumeConfigError: another config (naming the sections that differ).
      InputSetChangedError: another input set (naming what was added, removed or moved).
    """
    previous = read_run_config(workdir)
    if previous is not None:
        previous = upgrade_recorded_config(previous)  # recorded by an earlier release
        changed = [k for k in RESULT_DEFINING if previous.get(k) != config.get(k)]
        if changed:
            raise ResumeConfigError(
                f"{workdir} holds a run made with another config (differs in: "
                f"{', '.join(changed)}); resume with the same config or choose a new --workdir")
    run_inputs.check_unchanged(workdir, read_input_record(workdir), source, sources, records)
