"""The comparison table of several evaluated runs: one row per workdir, one column per metric.

Written twice, side by side: ``<name>.md`` (Markdown, numbers to 4 significant digits, rates
as percentages, ``n/a`` where a metric does not apply) and ``<name>.csv`` (full precision,
empty where it does not apply). Columns are :data:`COLUMNS` in that order, then any other
key the rows hold (ground-truth columns of the runs that have known factors), sorted.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Mapping, Sequence

from sce_jax.data import image_io

# (key, Markdown header, format): the desiderata in their usual order.
COLUMNS = (
    ("run", "run", "text"),
    ("num_images", "images", "int"),
    ("num_counterfactuals", "counterfactuals", "int"),
    ("flip_rate", "flip rate", "percent"),
    ("flip_rate_first_attempt", "flip rate, attempt 0", "percent"),
    ("images_with_valid", "images with a valid CF", "percent"),
    ("pixel_l1", "pixel L1", "number"),
    ("pixel_l2", "pixel L2", "number"),
    ("latent_l1", "latent L1", "number"),
    ("latent_l2", "latent L2", "number"),
    ("search_latent_l1", "search latent L1", "number"),
    ("search_latent_l2", "search latent L2", "number"),
    ("changed_fraction", "changed", "percent"),
    ("hoyer", "Hoyer", "number"),
    ("diversity_cosine", "diversity 1 - abs(cos)", "number"),
    ("pairwise_l1", "pairwise L1", "number"),
    ("pairwise_l2", "pairwise L2", "number"),
    ("fid", "FID (clf features)", "number"),
    ("kid", "KID (clf features)", "number"),
    ("non_adversarial_rate", "non-adversarial", "percent"),
    ("found_rate_first_attempt", "explanations found, attempt 0 (not near the boundary)", "percent"),
    ("near_boundary_images", "originals near the boundary", "percent"),
    ("later_background_share", "later attempts: share of change in empty background", "number"),
    ("later_spot_rate", "later attempts: background spots", "percent"),
    ("no_second_reason_rate", "later attempts: no second reason", "percent"),
)


# Ground-truth columns (sce_jax.evaluation.factors): key prefix -> header prefix.
GROUND_TRUTH_HEADERS = (("gt_dominant_", "GT changed most: "), ("gt_found_", "GT found: "),
                        ("gt_all_found", "GT all factors found"))


def _header(key: str) -> str:
    for prefix, header in GROUND_TRUTH_HEADERS:
        if key.startswith(prefix):
            factor = key[len(prefix):].removesuffix("_rate").replace("_", " ")
            return header + factor
    return key


def columns_for(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """:data:`COLUMNS`, then the other keys found in ``rows`` (sorted; rates by their name)."""
    known = {key for key, _, _ in COLUMNS}
    extra = sorted({k for row in rows for k in row} - known)
    return list(COLUMNS) + [(k, _header(k), "percent" if k.endswith("_rate") else "number")
                            for k in extra]


def _markdown_cell(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "text":
        return str(value).replace("|", "\\|")
    if kind == "int":
        return str(int(value))
    if kind == "percent":
        return f"{100.0 * value:.1f}%"
    return f"{value:.4g}"


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table (a header, a rule, one line per row)."""
    columns = columns_for(rows)
    lines = ["| " + " | ".join(_markdown_cell(header, "text") for _, header, _ in columns) + " |",
             "|" + "|".join("---" if kind == "text" else "---:" for _, _, kind in columns) + "|"]
    lines += ["| " + " | ".join(_markdown_cell(row.get(key), kind) for key, _, kind in columns)
              + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV table: a header of metric keys, then one line per row (empty: not applicable)."""
    columns = columns_for(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key for key, _, _ in columns])
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row.get(key) for key, _, _ in columns])
    return out.getvalue()


def write_tables(out_dir: str, rows: Sequence[Mapping[str, Any]], name: str = "evaluation"
                 ) -> tuple[str, str]:
    """Writes ``<out_dir>/<name>.md`` and ``<out_dir>/<name>.csv``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = (os.path.join(out_dir, f"{name}.md"), os.path.join(out_dir, f"{name}.csv"))
    for path, text in zip(paths, (markdown(rows), csv_text(rows))):
        with image_io.atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
    return paths
