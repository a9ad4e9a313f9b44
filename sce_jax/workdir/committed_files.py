"""What a resume relies on: every file a committed record names still exists.

A part file commits its examples (:mod:`sce_jax.workdir.layout`), and a resume skips them. If
files were deleted since (an example's folder, one PNG), skipping would leave a manifest that
links files that are not there. :func:`redo_incomplete` therefore checks, before a resume
reads its finished examples, that every file named in a committed record's ``files`` exists,
with one ``os.listdir`` per example folder (no PNG is opened). An example with a missing file
is explained again: its records are dropped from the part files (:func:`drop_examples`), the
manifest is rebuilt without them, and the log names the missing files.

A part file is named by the smallest example id it holds (``p<process>-<first id>.jsonl``).
One that loses records is written again under the name its remaining records give, and only
then is the old one removed; the examples explained again commit under names of their own ids,
so no commit replaces another's part file. A run killed between the two steps leaves the same
records twice (identical; :func:`~sce_jax.workdir.layout.sorted_records` keeps one) and the
old part with the example whose files are missing, which the next run drops again.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from absl import logging

from sce_jax.workdir import layout

_PART_NAME = re.compile(r"^p(\d+)-\d+\.jsonl$")
_LOGGED_EXAMPLES = 20  # examples named one line each in the log; the rest are counted


def missing_files(workdir: str, records: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """Example id -> the files (workdir-relative, sorted) its records name that do not exist."""
    wanted: dict[int, set[str]] = collections.defaultdict(set)
    for record in records:
        for name in (record.get("files") or {}).values():
            wanted[int(record["example_id"])].add(name)
    missing = {}
    for example_id, names in wanted.items():
        folder = layout.example_folder(example_id)
        try:
            present = set(os.listdir(os.path.join(workdir, folder)))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        gone = sorted(n for n in names if not (
            os.path.basename(n) in present if os.path.dirname(n) == folder
            else os.path.exists(os.path.join(workdir, n))))
        if gone:
            missing[example_id] = gone
    return missing


def _read_part(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def drop_examples(workdir: str, example_ids: Iterable[int]) -> int:
    """Removes the records of ``example_ids`` from the part files; returns how many.

    A part file left with records is written again (under the name of its smallest id, then
    the old name is removed); one left empty is removed.
    """
    drop = {int(i) for i in example_ids}
    folder = os.path.join(workdir, layout.PARTS)
    if not drop or not os.path.isdir(folder):
        return 0
    dropped = 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jsonl"):
            continue
        path = os.path.join(folder, name)
        records = _read_part(path)
        keep = [r for r in records if int(r["example_id"]) not in drop]
        if len(keep) == len(records):
            continue
        dropped += len(records) - len(keep)
        numbered = _PART_NAME.match(name)
        if not keep:
            os.remove(path)
        elif numbered:
            process_index = int(numbered.group(1))
            layout.write_part(workdir, process_index, keep)  # first, then the old one goes
            first = min(int(r["example_id"]) for r in keep)
            if os.path.join(workdir, layout.part_file(process_index, first)) != path:
                os.remove(path)
        else:  # a part not named by this package: rewritten in place
            layout.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    return dropped


def _log_missing(missing: Mapping[int, Sequence[str]]) -> None:
    for example_id in sorted(missing)[:_LOGGED_EXAMPLES]:
        files = missing[example_id]
        logging.warning("example %d: %d committed file(s) missing (%s); explaining it again",
                        example_id, len(files), ", ".join(files))
    if len(missing) > _LOGGED_EXAMPLES:
        logging.warning("%d more examples with missing files are explained again",
                        len(missing) - _LOGGED_EXAMPLES)


def redo_incomplete(workdir: str) -> dict[int, list[str]]:
    """Drops the committed records of every example with a missing file, so that the run
    explains it again; rebuilds an existing manifest without them. Returns example id ->
    missing files (empty when every file is there).

    Raises:
      WorkdirWriteError: a part file or the manifest cannot be written.
    """
    missing = missing_files(workdir, layout.read_part_records(workdir))
    if not missing:
        return {}
    _log_missing(missing)
    try:
        drop_examples(workdir, missing)
        if os.path.exists(os.path.join(workdir, layout.MANIFEST)):
            layout.assemble_manifest(workdir)
    except OSError as e:
        raise layout.write_failed(e, workdir, 0) from e
    return missing
