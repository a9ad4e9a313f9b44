"""What a run's workdir was made from: the ordered list of its inputs, checked on resume.

A result is stored under its ``example_id``, the index of its input in the source's order
(sorted folder paths, CSV rows, npz indices). If the input set changes between two runs on
one workdir (a file added to the folder, a CSV row removed, rows reordered), the same id names
another file, and a resume would attach old results to the wrong images and skip new ones.
So the first run writes ``inputs.json`` (the name and its reading: :mod:`sce_jax.workdir.layout`)::

    {"source": "<data.source>", "num_examples": N, "sha256": "<digest>", "sources": [...]}

where ``sources`` is the ordered list of the examples' sources (file paths, ``file.npz[i]``)
and ``sha256`` the digest of ``"\\n".join(sources)``; a resume whose source lists another
input set is refused (:class:`InputSetChangedError`) with what changed. Only the list is
compared, not the files' contents (a file rewritten in place under the same name is taken as
is). Workdirs from before this record are checked against the ``source`` of their records.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Sequence

NAMED = 3  # changed inputs named in a message; the rest are counted


class InputSetChangedError(ValueError):
    """A resume on a workdir that was made from another input set (the message says what changed)."""


def digest(sources: Sequence[str]) -> str:
    """sha256 of the ordered sources, one per line."""
    return hashlib.sha256("\n".join(sources).encode("utf-8")).hexdigest()


def input_record(source: str, sources: Sequence[str]) -> dict[str, Any]:
    """The content of ``inputs.json`` for a dataset."""
    return {"source": source, "num_examples": len(sources), "sha256": digest(sources),
            "sources": list(sources)}


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(os.path.basename(s) or s for s in items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def describe_change(before: Sequence[str], after: Sequence[str]) -> str:
    """What differs between two ordered input lists, in words (empty if nothing)."""
    if list(before) == list(after):
        return ""
    old, new = set(before), set(after)
    added = [s for s in after if s not in old]
    removed = [s for s in before if s not in new]
    parts = [f"{len(after)} inputs now, {len(before)} when the workdir was made"]
    if added:
        parts.append(f"added: {_names(added)}")
    if removed:
        parts.append(f"removed: {_names(removed)}")
    if not added and not removed:
        moved = [b for a, b in zip(before, after) if a != b]
        parts.append(f"the same inputs in another order (first moved: {_names(moved)})")
    return "; ".join(parts)


def check_unchanged(workdir: str, previous: Mapping[str, Any] | None, source: str,
                    sources: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
    """Refuses to resume ``workdir`` if its results were made from other inputs.

    Compares with ``previous``, the workdir's ``inputs.json`` (None for a workdir from before
    it), and in any case checks that every committed record's ``source`` is the input its
    ``example_id`` now names.

    Raises:
      InputSetChangedError: naming what was added, removed or moved.
    """
    hint = ("resume with the inputs the workdir was made from, or choose a new --workdir "
            "for the new input set")
    if previous is not None and previous.get("sha256") != digest(sources):
        change = describe_change(previous.get("sources", []), sources)
        raise InputSetChangedError(
            f"{workdir} was made from another input set than {source} holds now ({change}); {hint}")
    for r in records:
        i = int(r["example_id"])
        if i >= len(sources) or r.get("source") != sources[i]:
            now = sources[i] if i < len(sources) else "nothing"
            raise InputSetChangedError(
                f"{workdir} holds results for another input set than {source} holds now: "
                f"example {i} was {r.get('source')}, it is now {now}; {hint}")
