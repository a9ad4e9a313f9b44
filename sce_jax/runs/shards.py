"""Shards: a dataset run cut into N independent tasks (a job array, a Kubernetes Indexed Job).

Shard ``I`` of ``N`` explains the examples with ``example_id % N == I`` (ids are the data
source's order, the same on every machine) into its own workdir, alone: no process waits for
another, a killed shard is rerun alone and resumes, and ``scripts/merge.py`` joins the N
workdirs into one (:mod:`sce_jax.workdir.merge`). A shard searches in the shapes of the
one-process run (the same batch size, the same slots), so its records are those the
one-process run writes for its examples.

The index and count come from ``--shard=I/N``, or from a scheduler's environment with
``--shard=auto``:

=====================  =============================================  ==========================
scheduler              index                                          count
=====================  =============================================  ==========================
SLURM job array        ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN``  ``SLURM_ARRAY_TASK_COUNT``
Kubernetes Indexed Job ``JOB_COMPLETION_INDEX``                       ``--shard=auto/N``
Cloud Run / Batch      ``CLOUD_RUN_TASK_INDEX`` (``BATCH_TASK_INDEX``) ``CLOUD_RUN_TASK_COUNT``
                                                                      (``BATCH_TASK_COUNT``)
=====================  =============================================  ==========================

(``--shard=auto/N`` gives the count for any of them; where the environment has one too, the
two must agree.)
"""

from __future__ import annotations

import os
import re
from typing import Mapping, NamedTuple


class ShardError(ValueError):
    """A ``--shard`` value or a scheduler environment that does not name one shard."""


class Shard(NamedTuple):
    """Shard ``index`` of ``count``: the examples with ``example_id % count == index``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def as_record(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


# (index variable, count variable, offset variable or None), in the order they are tried.
SCHEDULERS = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    ("JOB_COMPLETION_INDEX", None, None),
    ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT", None),
    ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT", None),
)


def checked_shard(index: int, count: int, where: str) -> Shard:
    if count < 1:
        raise ShardError(f"{where}: the shard count must be >= 1, got {count}")
    if not 0 <= index < count:
        raise ShardError(f"{where}: shard index {index} is not in 0..{count - 1}")
    return Shard(index, count)


def _integer(value: str, name: str) -> int:
    if not re.fullmatch(r"\s*-?\d+\s*", value or ""):
        raise ShardError(f"{name}={value!r} is not an integer")
    return int(value)


def from_environment(environ: Mapping[str, str], count: int | None = None) -> Shard:
    """The shard a job array's task is (see the module docstring); ``count`` from
    ``--shard=auto/N``."""
    for index_name, count_name, offset_name in SCHEDULERS:
        if index_name not in environ:
            continue
        index = _integer(environ[index_name], index_name)
        if offset_name and offset_name in environ:
            index -= _integer(environ[offset_name], offset_name)
        found = _integer(environ[count_name], count_name) if count_name in environ else None
        if found is not None and count is not None and found != count:
            raise ShardError(f"--shard=auto/{count} but {count_name}={found}")
        total = count if count is not None else found
        if total is None:
            raise ShardError(f"{index_name} is set but no count: give it as --shard=auto/N")
        return checked_shard(index, total, f"--shard=auto ({index_name}={environ[index_name]})")
    names = ", ".join(s[0] for s in SCHEDULERS)
    raise ShardError(f"--shard=auto: none of {names} is set; give the shard as --shard=I/N")


def parse(value: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard``'s value: ``""``/None (no shard), ``I/N``, ``auto`` or ``auto/N``."""
    if not value:
        return None
    environ = os.environ if environ is None else environ
    match = re.fullmatch(r"(auto|\d+)(?:/(\d+))?", value.strip())
    if not match:
        raise ShardError(f"--shard={value!r}: give I/N (shard I of N, from 0), auto or auto/N")
    index, count = match.group(1), match.group(2)
    if index == "auto":
        return from_environment(environ, None if count is None else int(count))
    if count is None:
        raise ShardError(f"--shard={value!r}: give the count too, as {index}/N")
    return checked_shard(int(index), int(count), f"--shard={value}")
