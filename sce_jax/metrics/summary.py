"""The run summary: per-counterfactual records (manifest rows) reduced to run-level numbers.

One function per figure, one name per figure, for the run's ``summary.json``
(:func:`run_summary`), :func:`sce_jax.save_explanation` and the evaluation's ``metrics.json``
(:func:`summarise_records`).

A record is a dict as in ``manifest.jsonl`` (:class:`sce_jax.workdir.layout.Record`): ``example_id``,
``status`` (``"ok"`` or a skip), ``attempt``, ``success`` (the target decision on the 8-bit
image), ``near_boundary``, ``no_second_reason`` and any numeric metric fields (``pixel_l1``,
``latent_l2``, ``changed_fraction``, ``hoyer``, ``cout``, ...). Records whose status is not
``"ok"`` are counted and otherwise left out.

Counts: ``num_images`` (distinct example ids), ``num_skipped`` (images without any
counterfactual: every record of theirs is a skip), ``num_counterfactuals`` (``"ok"`` records),
``num_valid``, ``num_near_boundary`` (images whose original was within the search's boundary
margin), ``num_no_second_reason``, ``num_stalled`` (attempts the stall rule ended early without
a counterfactual). Rates (over the ``"ok"`` records; None when there are none):

    flip_rate                  = mean(success)                              (metrics.flip_rate)
    flip_rate_first_attempt    = mean(success | attempt = 0)
    found_rate                 = mean(found | not near_boundary),   found = success and not
                                 near_boundary and not no_second_reason (the record's
                                 outcome "found")
    found_rate_first_attempt   = mean(found | not near_boundary, attempt = 0)
    images_with_valid          = share of images with at least one successful counterfactual
    non_adversarial_rate       = mean(surrogate_success | success)   (if the field is present)
    steps_share_not_found      = sum(steps | not found) / sum(steps)   (search steps spent on
                                 attempts that found nothing: the run's wasted work)

Each other numeric field is summarised over the successful counterfactuals (``over="ok"``:
all of them) by :func:`summarise_values`: mean, median, standard deviation, min, max, the
count of finite values and the count of non-finite or missing ones (NaN, inf, None), which
are skipped. Boolean fields get their rate over the same records.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from sce_jax.metrics.validity import flip_rate

# Fields that identify or describe a record rather than measure it.
NOT_METRICS = frozenset({
    "example_id", "attempt", "target", "label", "prediction", "prediction_after", "source",
    "status", "reason", "files", "target_kind", "success", "surrogate_success",
    "near_boundary", "no_second_reason", "outcome", "target_value", "stalled",
})
OVER = ("successful", "ok")
# summary.json's means: key -> (record field, over which records).
RUN_MEANS = {
    "mean_latent_l1": ("latent_l1", "successful"),
    "mean_pixel_l1": ("pixel_l1", "successful"),
    "mean_pixel_l2": ("pixel_l2", "successful"),
    "mean_changed_fraction": ("changed_fraction", "successful"),
    "mean_steps": ("steps", "ok"),
}
# The keys of summarise_records that summary.json keeps.
RUN_FIGURES = ("num_images", "num_skipped", "num_counterfactuals", "flip_rate",
               "flip_rate_first_attempt", "num_near_boundary", "found_rate",
               "found_rate_first_attempt", "num_no_second_reason", "num_stalled",
               "steps_share_not_found")


def summarise_values(values: Iterable[Any]) -> dict[str, float | int | None]:
    """Mean, median, std, min, max of the finite values; counts of finite and skipped ones."""
    finite, skipped = [], 0
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            skipped += 1
        elif not math.isfinite(float(v)):
            skipped += 1
        else:
            finite.append(float(v))
    if not finite:
        return {"mean": None, "median": None, "std": None, "min": None, "max": None,
                "count": 0, "num_nonfinite": skipped}
    a = np.asarray(finite)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "count": int(a.size),
            "num_nonfinite": skipped}


def _rate(flags: list[bool]) -> float | None:
    """:func:`sce_jax.metrics.flip_rate` of ``flags``, None (JSON null) when there are none."""
    return flip_rate(flags) if flags else None


def _success(record: Mapping[str, Any]) -> bool:
    if "success" not in record or not isinstance(record["success"], (bool, np.bool_)):
        raise ValueError(f"record for example {record.get('example_id')!r}, attempt "
                         f"{record.get('attempt')!r} has status 'ok' but no boolean 'success' "
                         f"(got {record.get('success')!r})")
    return bool(record["success"])


def summarise_records(records: Iterable[Mapping[str, Any]], *, over: str = "successful",
                      fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Run-level summary of per-counterfactual records (see the module docstring).

    Args:
      records: manifest rows.
      over: ``"successful"`` (default): metric fields over the valid counterfactuals only;
        ``"ok"``: over every counterfactual that was produced.
      fields: the metric fields to summarise (default: every numeric or boolean field found
        in the ``"ok"`` records, identifiers excluded).

    Returns:
      A JSON-serialisable dict: counts, rates (None when undefined) and ``"metrics"``:
      ``{field: summarise_values(...)}`` for numeric fields, ``{field: {"rate", "count"}}``
      for boolean ones.
    """
    if over not in OVER:
        raise ValueError(f"over must be one of {OVER}, got {over!r}")
    records = list(records)
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or "example_id" not in r:
            raise ValueError(f"record {i} is not a dict with an 'example_id': {r!r}")
    ok = [r for r in records if r.get("status") == "ok"]
    success = [_success(r) for r in ok]
    selected = ok if over == "ok" else [r for r, s in zip(ok, success) if s]
    near = [bool(r.get("near_boundary")) for r in ok]
    spot = [bool(r.get("no_second_reason")) for r in ok]
    first = [r.get("attempt") == 0 for r in ok]
    found = [s and not n and not p for s, n, p in zip(success, near, spot)]
    steps = [float(r.get("steps") or 0) for r in ok]
    steps_lost = sum(t for t, f in zip(steps, found) if not f)

    by_image: dict[Any, bool] = {}
    for r, s in zip(ok, success):
        by_image[r["example_id"]] = by_image.get(r["example_id"], False) or s
    images = {r["example_id"] for r in records}
    skipped_images = images - set(by_image)

    surrogate = [bool(r["surrogate_success"]) for r, s in zip(ok, success)
                 if s and isinstance(r.get("surrogate_success"), (bool, np.bool_))]

    if fields is None:
        names = sorted({k for r in ok for k, v in r.items() if k not in NOT_METRICS
                        and (v is None or isinstance(v, (bool, int, float, np.number, np.bool_)))})
    else:
        names = list(fields)
    metrics: dict[str, Any] = {}
    for name in names:
        values = [r.get(name) for r in selected]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, (bool, np.bool_)) for v in present):
            metrics[name] = {"rate": _rate([bool(v) for v in present]), "count": len(present)}
        else:
            metrics[name] = summarise_values(values)

    return {
        "num_records": len(records),
        "num_counterfactuals": len(ok),
        "num_skipped_records": len(records) - len(ok),
        "num_images": len(images),
        "num_skipped": len(skipped_images),
        "num_valid": int(sum(success)),
        "num_near_boundary": len({r["example_id"] for r, n in zip(ok, near) if n}),
        "num_no_second_reason": int(sum(spot)),
        "num_stalled": int(sum(bool(r.get("stalled")) for r in ok)),
        "steps_share_not_found": steps_lost / sum(steps) if sum(steps) > 0 else None,
        "flip_rate": _rate(success),
        "flip_rate_first_attempt": _rate([s for s, f in zip(success, first) if f]),
        "found_rate": _rate([x for x, n in zip(found, near) if not n]),
        "found_rate_first_attempt": _rate([x for x, n, f in zip(found, near, first)
                                           if f and not n]),
        "images_with_valid": _rate(list(by_image.values())),
        "non_adversarial_rate": _rate(surrogate),
        "metrics_over": over,
        "metrics": metrics,
    }


def run_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The figures of a run's ``summary.json`` (throughput aside: :mod:`sce_jax.workdir.throughput`).

    :data:`RUN_FIGURES` of :func:`summarise_records`, and the means :data:`RUN_MEANS`
    (distances over the successful counterfactuals, steps over all; None when there are none).
    """
    records = list(records)
    summary = summarise_records(records, fields=())
    figures = {key: summary[key] for key in RUN_FIGURES}
    ok = [r for r in records if r.get("status") == "ok"]
    for key, (field, over) in RUN_MEANS.items():
        rows = ok if over == "ok" else [r for r in ok if _success(r)]
        figures[key] = summarise_values(r.get(field) for r in rows)["mean"]
    return figures
