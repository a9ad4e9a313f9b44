"""``results.csv``: the manifest's main columns as a table a spreadsheet opens (no HTML needed).

Written with every run beside ``manifest.jsonl`` (one row per record: image x target x
attempt, skipped inputs included with their reason). Columns: :data:`COLUMNS`; the class
names and the goal in words come from :mod:`sce_jax.workdir.record_names`.

RFC 4180 CSV in UTF-8: rows end in ``\r\n`` and a field is quoted when it holds a comma, a
quote (doubled inside), ``\r`` or ``\n`` (``csv.QUOTE_MINIMAL`` quotes the characters of the
line terminator; with ``\n`` alone a ``\r`` in a file name would stay bare and split its row
for every reader). The bytes are written as they are, with no newline translation, so any CSV
reader (``csv`` with ``newline=""``, pandas, a spreadsheet) reads back one row per record with
the values written.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Mapping, Sequence

from sce_jax.data import image_io
from sce_jax.workdir import layout as workdir_files

COLUMNS = ("example_id", "source", "status", "reason", "label", "label_name", "prediction",
           "prediction_name", "prob_prediction", "goal", "target", "target_kind", "target_name",
           "attempt", "success", "prob_target_before", "prob_target_after", "prediction_after",
           "prediction_after_name", "steps", "pixel_l1", "pixel_l2", "latent_l1", "latent_l2",
           "changed_fraction", "counterfactual", "difference", "mask")
FILE_COLUMNS = ("counterfactual", "difference", "mask")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def results_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per record with exactly :data:`COLUMNS` (missing values empty)."""
    rows = []
    for r in records:
        files = r.get("files") or {}
        row = {c: _cell(files.get(c) if c in FILE_COLUMNS else r.get(c)) for c in COLUMNS}
        rows.append(row)
    return rows


def write_results_csv(workdir: str, records: Sequence[Mapping[str, Any]]) -> str:
    """Writes ``workdir/results.csv`` atomically (see the module docstring); returns its path."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\r\n",
                            quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(results_rows(records))
    path = os.path.join(workdir, workdir_files.RESULTS_CSV)
    with image_io.atomic_write(path, "wb", fsync=True) as f:  # bytes: no newline translation
        f.write(text.getvalue().encode("utf-8"))
    return path
