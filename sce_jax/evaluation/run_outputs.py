"""A finished run's outputs, read back for evaluation: records, config and the 8-bit images.

A run workdir (``scripts/explain.py``, :mod:`sce_jax.runs.loop`; the format: :mod:`sce_jax.workdir.layout`)
holds ``manifest.jsonl``, ``run_config.json`` and ``images/<id>/`` with ``original.png`` and
one ``cf_t<t>_a<a>.png`` per counterfactual. :func:`read_run` returns them as arrays in
[0, 1], one row per produced counterfactual (manifest status ``"ok"``), in manifest order
(example id, target, attempt);
``originals[i]`` is the written original of ``records[i]``. The images are the written files,
so every metric judges what a user gets, not the search's float images.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from sce_jax.data import image_io
from sce_jax.workdir import layout as workdir_files
from sce_jax.workdir.layout import MANIFEST, RUN_CONFIG, Record


class EvaluationError(ValueError):
    """A workdir that cannot be evaluated; the message names the workdir and the problem."""


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What evaluation reads from one workdir.

    Attributes:
      workdir: absolute path of the run's folder.
      records: every manifest record (skips included).
      config: the run config the run started with (``run_config.json``).
      produced: the records with status ``"ok"`` (one per counterfactual), in manifest order.
      originals: ``(N, H, W, C)`` float32 in [0, 1], the written original of each produced record.
      counterfactuals: ``(N, H, W, C)`` float32 in [0, 1], the written counterfactuals.
    """

    workdir: str
    records: list[Record]
    config: ml_collections.ConfigDict
    produced: list[Record]
    originals: np.ndarray
    counterfactuals: np.ndarray

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.workdir))


def check_workdir(workdir: str) -> str | None:
    """The problem that stops ``workdir`` from being evaluated, or None when it can be."""
    if not os.path.isdir(workdir):
        return f"{workdir}: no such folder"
    for name, what in ((MANIFEST, "no manifest"), (RUN_CONFIG, "no run config")):
        if not os.path.isfile(os.path.join(workdir, name)):
            return (f"{workdir}: {what} ({name} is missing); expected the workdir of a run of "
                    "scripts/explain.py that completed at least one batch")
    return None


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """``run_config.json`` as a ConfigDict (tuples come back as lists)."""
    path = os.path.join(workdir, RUN_CONFIG)
    try:
        values = workdir_files.read_run_config(workdir)
    except workdir_files.WorkdirReadError as e:
        raise EvaluationError(str(e)) from None
    if values is None:
        raise EvaluationError(f"{path} does not exist: no run config to evaluate with")
    for key in ("data", "generator", "classifier", "search"):
        if not isinstance(values.get(key), dict):
            raise EvaluationError(f"{path}: has no {key!r} section; not a run config of "
                                  "scripts/explain.py")
    return ml_collections.ConfigDict(values)


def _read_image(workdir: str, record: Record, kind: str) -> np.ndarray:
    relative = (record.get("files") or {}).get(kind)
    if not relative:
        raise EvaluationError(f"{workdir}: the record of example {record['example_id']}, target "
                              f"{record.get('target')}, attempt {record.get('attempt')} names no "
                              f"{kind} image")
    path = os.path.join(workdir, relative)
    try:
        return image_io.read_png(path).astype(np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{path}: cannot be read ({e})") from None


def read_run(workdir: str) -> RunOutputs:
    """Reads one workdir (see the module docstring).

    Raises:
      EvaluationError: the workdir, its manifest, its config or an image cannot be read.
    """
    workdir = os.path.abspath(workdir)
    problem = check_workdir(workdir)
    if problem:
        raise EvaluationError(problem)
    try:
        records = workdir_files.read_manifest(workdir)
    except workdir_files.WorkdirReadError as e:
        raise EvaluationError(str(e)) from None
    config = read_run_config(workdir)
    produced = [r for r in records if r.get("status") == "ok"]
    originals, counterfactuals, cache = [], [], {}
    for r in produced:
        key = (r.get("files") or {}).get("original")
        if key not in cache:
            cache[key] = _read_image(workdir, r, "original")
        originals.append(cache[key])
        counterfactuals.append(_read_image(workdir, r, "counterfactual"))
        if counterfactuals[-1].shape != originals[-1].shape:
            raise EvaluationError(
                f"{workdir}: counterfactual {r['files']['counterfactual']} has shape "
                f"{counterfactuals[-1].shape}, its original {originals[-1].shape}")
    shape = (0,) + tuple(originals[0].shape if originals else (0, 0, 0))
    stack = (lambda a: np.stack(a) if a else np.zeros(shape, np.float32))
    return RunOutputs(workdir, records, config, produced, stack(originals), stack(counterfactuals))


def attempt_groups(produced: list[Record]) -> list[list[int]]:
    """Row indices of the K attempts of each (example, target), attempts in order."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, r in enumerate(produced):
        groups.setdefault((r["example_id"], r.get("target", -1)), []).append((r.get("attempt", 0), i))
    return [[i for _, i in sorted(rows)] for _, rows in sorted(groups.items())]
