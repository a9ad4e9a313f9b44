"""A CSV list of images as a data source: ``path,target[,region][,label]`` rows.

``path`` is an image (relative paths are relative to the CSV's folder), ``target`` an int class
index, a class name of the classifier's ``class_names`` or empty (no target), ``region`` an
optional mask image of the same size whose nonzero pixels may change, ``label`` an optional
int true class. One example per row, in row order.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from sce_jax.class_names import ClassNameError, class_index, needs_names
from sce_jax.data.dataset import (
    NO_LABEL,
    DataError,
    Dataset,
    check_source_file,
    read_file_image,
    read_region,
)

CSV_REQUIRED_COLUMNS = ("path", "target")
CSV_OPTIONAL_COLUMNS = ("region", "label")


class CsvDataset(Dataset):
    """Examples listed in a CSV file: ``path,target[,region][,label]`` (see the module doc)."""

    @staticmethod
    def matches(source: str) -> bool:
        return source.lower().endswith(".csv")

    @classmethod
    def open(cls, source, *, limit, class_names, options, **geometry):
        return cls(source, class_names=class_names, **options, **geometry)

    def __init__(self, path: str, *, class_names: Sequence[str] | None = None, **options):
        rows = _read_csv_rows(path, class_names)
        folder = os.path.dirname(path)
        self._regions = [None if not r["region"] else os.path.join(folder, r["region"]) for r in rows]
        sources = [os.path.join(folder, r["path"]) for r in rows]
        super().__init__(path, sources, [r["label"] for r in rows], [r["target"] for r in rows],
                         **options)

    def _read(self, example_id):
        image = read_file_image(self.sources[example_id])
        region_path = self._regions[example_id]
        region = None if region_path is None else read_region(region_path, image.shape[:2])
        return image, region


def _csv_int(value: str, column: str, line: int, path: str) -> int:
    value = value.strip()
    if not value:
        return NO_LABEL
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} {value!r} is not an integer class index "
                        "(or empty for none)") from None
    if number < 0:
        raise DataError(f"{path} line {line}: {column} {number} is negative")
    return number


def _csv_target(value: str, line: int, path: str, class_names: Sequence[str] | None) -> int:
    """A CSV target: an index, empty (none) or a class name (see :mod:`sce_jax.class_names`)."""
    if not needs_names([value.strip()]):
        return _csv_int(value, "target", line, path)
    try:
        return class_index(value, class_names, what=f"{path} line {line}: target")
    except ClassNameError as e:
        raise DataError(str(e)) from None


def _read_csv_rows(path: str, class_names: Sequence[str] | None = None) -> list[dict]:
    check_source_file(path, "CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV file {path}: {e}") from e
    expected = "path,target[,region][,label]"
    if not table:
        raise DataError(f"{path} is empty; expected a header {expected}")
    header = [h.strip().lower() for h in table[0]]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in header]
    unknown = [h for h in header if h not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    if missing or unknown:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
        raise DataError(f"{path}: {'; '.join(parts)} (header: {','.join(table[0])}); expected "
                        f"the header {expected}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: repeated column in the header {','.join(table[0])}")
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            raise DataError(f"{path} line {line}: {len(cells)} fields, the header has {len(header)}")
        row = dict(zip(header, cells))
        if not row["path"].strip():
            raise DataError(f"{path} line {line}: empty path")
        rows.append({"path": row["path"].strip(),
                     "target": _csv_target(row["target"], line, path, class_names),
                     "region": row.get("region", "").strip(),
                     "label": _csv_int(row.get("label", ""), "label", line, path)})
    if not rows:
        raise DataError(f"{path} lists no images (only a header)")
    return rows
