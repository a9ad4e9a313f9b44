"""Joins the workdirs of a sharded run (``scripts/explain.py --shard=I/N``) into one.

:func:`merge_shards` checks that the workdirs belong together, then writes one workdir that
reads as a one-process run's (``scripts/evaluate.py`` and a resume treat it so):

- **together**: every workdir holds a shard (``shard.json``) of the same count ``N``, the same
  run config in every result-defining section, the same input set (``inputs.json``'s digest);
  no index twice; every index ``0..N-1`` present and every shard finished (``summary.json``
  ``complete``), unless ``allow_incomplete`` (then the merged run is ``complete: false`` and a
  later merge, once the shards are finished, completes it);
- **written**: ``run_config.json`` and ``inputs.json`` (the first shard's), the shards' part
  files (their names carry the shard index, so they never collide), the images the records
  name (hard links, or copies across file systems or with ``images="copy"``), then the
  manifest, ``summary.json``, ``results.csv`` and ``report.html`` as a run writes them. The
  summary's throughput lists every shard's invocations (:func:`sce_jax.workdir.throughput.combine`).

Merging is idempotent: the output's parts and images are replaced, so merging twice, or again
after a shard was rerun, gives the same workdir.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Any, Mapping, Sequence

from sce_jax.metrics.summary import run_summary
from sce_jax.workdir import layout, shard_record, throughput
from sce_jax.workdir.writing import write_run_outputs

IMAGE_MODES = ("link", "copy")


class MergeError(ValueError):
    """Workdirs that cannot be merged (named, with what is wrong)."""


def expand_workdirs(spec: str | Sequence[str]) -> list[str]:
    """``A,B,...`` (or a list), each a folder or a glob (``/shared/shard*``), sorted per glob."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    found: list[str] = []
    for item in items:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise MergeError(f"--workdirs: {item!r} matches no folder")
        found += [os.path.abspath(m) for m in matches if m not in found]
    if not found:
        raise MergeError("--workdirs: no workdir given")
    return list(dict.fromkeys(found))


def _read_shard(workdir: str) -> dict[str, Any]:
    if not os.path.isdir(workdir):
        raise MergeError(f"{workdir}: no such folder")
    shard = shard_record.read_shard_record(workdir)
    if shard is None:
        raise MergeError(f"{workdir}: not a shard's workdir (no {shard_record.SHARD}; it was not "
                         "made with scripts/explain.py --shard=I/N)")
    config, inputs = layout.read_run_config(workdir), layout.read_input_record(workdir)
    if config is None or inputs is None:
        raise MergeError(f"{workdir}: shard {shard['index']}/{shard['count']} has no "
                         f"{layout.RUN_CONFIG} or {layout.INPUTS}: it never started; run it")
    return {"workdir": workdir, "shard": shard, "config": layout.upgrade_recorded_config(config),
            "inputs": inputs, "summary": layout.read_summary(workdir),
            "records": layout.read_part_records(workdir)}


def _check_together(shards: list[dict[str, Any]], allow_incomplete: bool) -> int:
    """The shard count, once the shards are shown to belong together (else MergeError)."""
    first = shards[0]
    count = first["shard"]["count"]
    by_index: dict[int, str] = {}
    for s in shards:
        where, index = s["workdir"], s["shard"]["index"]
        if s["shard"]["count"] != count:
            raise MergeError(f"{where} is shard {index}/{s['shard']['count']}, {first['workdir']} "
                             f"is one of {count}: shards of different splits")
        changed = [k for k in layout.RESULT_DEFINING if s["config"].get(k) != first["config"].get(k)]
        if changed:
            raise MergeError(f"{where} was made with another config than {first['workdir']} "
                             f"(differs in: {', '.join(changed)}): not shards of one run")
        if s["inputs"].get("sha256") != first["inputs"].get("sha256"):
            raise MergeError(f"{where} explains another input set than {first['workdir']} "
                             f"({s['inputs'].get('num_examples')} inputs vs "
                             f"{first['inputs'].get('num_examples')}, or another list)")
        if index in by_index:
            raise MergeError(f"shard {index}/{count} given twice: {by_index[index]} and {where}")
        by_index[index] = where
        foreign = sorted({int(r["example_id"]) for r in s["records"]
                          if int(r["example_id"]) % count != index})
        if foreign:
            raise MergeError(f"{where} (shard {index}/{count}) holds records of examples of other "
                             f"shards (ids {foreign[:5]}): not written by a shard run")
    problems = [f"shard {i}/{count} is missing" for i in range(count) if i not in by_index]
    problems += [f"shard {s['shard']['index']}/{count} ({s['workdir']}) is unfinished: rerun "
                 "it with the same command to finish it" for s in shards
                 if not (s["summary"] or {}).get("complete")]
    if problems and not allow_incomplete:
        raise MergeError("; ".join(problems) + "; merge what is there with --allow_incomplete")
    return count


def _check_output(out: str, shards: list[dict[str, Any]]) -> None:
    """``out`` is new, empty, or an earlier merge of these shards (never one of them)."""
    if any(os.path.realpath(out) == os.path.realpath(s["workdir"]) for s in shards):
        raise MergeError(f"--workdir={out} is one of the shards: give a new folder")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    previous = layout.read_run_config(out)
    if previous is None or shard_record.read_shard_record(out) is not None:
        raise MergeError(f"--workdir={out} holds other files: give a new or empty folder, or the "
                         "output of an earlier merge of these shards")
    previous = layout.upgrade_recorded_config(previous)
    first = shards[0]["config"]
    inputs = layout.read_input_record(out) or {}
    if ([k for k in layout.RESULT_DEFINING if previous.get(k) != first.get(k)]
            or inputs.get("sha256") != shards[0]["inputs"].get("sha256")):
        raise MergeError(f"--workdir={out} holds another run: give a new or empty folder")


def _place(source: str, target: str, images: str) -> None:
    """``target`` becomes a hard link to (or a copy of) ``source``, replacing what was there."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if images == "link" and os.path.exists(target) and os.path.samefile(source, target):
        return  # linked by an earlier merge (or by another record of the same example)
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.merge.tmp")
    if os.path.lexists(temporary):
        os.remove(temporary)
    try:
        if images != "link":
            raise OSError("copy asked for")
        os.link(source, temporary)
    except OSError:  # another file system, or copies asked for
        shutil.copy2(source, temporary)
    os.replace(temporary, target)


def _copy_shard_files(shard: Mapping[str, Any], out: str, images: str) -> None:
    workdir = shard["workdir"]
    parts = os.path.join(workdir, layout.PARTS)
    for name in sorted(os.listdir(parts) if os.path.isdir(parts) else []):
        if name.endswith(".jsonl") and not name.startswith("."):
            _place(os.path.join(workdir, layout.PARTS, name),
                   os.path.join(out, layout.PARTS, name), "copy")
    for record in shard["records"]:
        for relative in (record.get("files") or {}).values():
            source = os.path.join(workdir, relative)
            if os.path.exists(source):
                _place(source, os.path.join(out, relative), images)


def merge_shards(workdirs: Sequence[str], out: str, *, allow_incomplete: bool = False,
                 images: str = "link") -> dict[str, Any]:
    """Merges the shard workdirs into ``out`` (see the module docstring); returns its summary.

    Raises:
      MergeError: workdirs that are not shards of one run, a missing or unfinished shard
        (without ``allow_incomplete``), or an ``out`` that holds something else.
    """
    if images not in IMAGE_MODES:
        raise MergeError(f"images={images!r}: one of {', '.join(IMAGE_MODES)}")
    out = os.path.abspath(out)
    shards = sorted((_read_shard(w) for w in workdirs), key=lambda s: s["shard"]["index"])
    count = _check_together(shards, allow_incomplete)
    _check_output(out, shards)
    first = shards[0]
    layout.check_writable(out, keep=True)
    for name in (layout.RUN_CONFIG, layout.INPUTS):
        _place(os.path.join(first["workdir"], name), os.path.join(out, name), "copy")
    shutil.rmtree(os.path.join(out, layout.PARTS), ignore_errors=True)  # a shard may be rerun
    layout.make_output_folders(out)
    for shard in shards:
        _copy_shard_files(shard, out, images)
    records = layout.assemble_manifest(out)
    every = set(range(int(first["inputs"]["num_examples"])))
    complete = ({int(r["example_id"]) for r in records} >= every and len(shards) == count
                and all((s["summary"] or {}).get("complete") for s in shards))
    summary = {**run_summary(records), **throughput.combine([s["summary"] for s in shards]),
               "complete": complete, "merged_shards": count}
    output = first["config"].get("output") or {}
    names = (first["config"].get("classifier") or {}).get("class_names") or None
    write_run_outputs(out, records, summary, class_names=tuple(names) if names else None,
                      write_report=bool(output.get("report", True)),
                      report_max_examples=int(output.get("report_max_examples", 200)))
    return summary
