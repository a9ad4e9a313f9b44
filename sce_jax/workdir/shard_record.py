"""``shard.json``: which shard of a sharded run a workdir holds (:mod:`sce_jax.runs.shards`).

``{"index": I, "count": N}``; absent in the workdir of a whole run. A resume must be the same
shard (another one would mix two example sets in one workdir), and ``scripts/merge.py`` reads
it to check that the shards it joins are each other's complement.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from sce_jax.workdir.layout import ResumeConfigError, WorkdirReadError, write_json

SHARD = "shard.json"


def write_shard_record(workdir: str, shard: Mapping[str, int] | None) -> None:
    """Records ``shard`` (``{"index", "count"}``); a whole run removes a stale record."""
    path = os.path.join(workdir, SHARD)
    if shard is None:
        if os.path.exists(path):
            os.remove(path)
        return
    write_json(path, {"index": int(shard["index"]), "count": int(shard["count"])})


def read_shard_record(workdir: str) -> dict[str, int] | None:
    """The recorded shard, or None (a whole run)."""
    path = os.path.join(workdir, SHARD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
        return {"index": int(value["index"]), "count": int(value["count"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkdirReadError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def _describe(shard: Mapping[str, Any] | None) -> str:
    return "the whole run" if shard is None else f"shard {shard['index']}/{shard['count']}"


def check_same_shard(workdir: str, shard: Mapping[str, int] | None) -> None:
    """Refuses to resume ``workdir`` as another shard than the one it holds."""
    recorded = read_shard_record(workdir)
    if recorded != (None if shard is None else dict(shard)):
        raise ResumeConfigError(
            f"{workdir} holds {_describe(recorded)}, this run is {_describe(shard)}; resume "
            "with the same --shard or choose a new --workdir")
