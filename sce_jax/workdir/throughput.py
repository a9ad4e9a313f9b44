"""Throughput figures of a run that may have been resumed or rerun.

A rerun of a finished workdir does no work; its own figures (0 counterfactuals in a fraction
of a second) must not replace those of the runs that did the work. :func:`carry_over` keeps,
in ``summary.json``, one entry per invocation that explained something::

    runs: [{"counterfactuals": n_i, "found": f_i, "elapsed_seconds": t_i,
            "counterfactuals_per_second": n_i / t_i, "found_per_second": f_i / t_i}, ...]

and sets the run-level figures over all of them: ``elapsed_seconds = sum t_i``,
``counterfactuals_per_second = sum n_i / sum t_i`` (attempts, whatever their outcome) and
``found_per_second = sum f_i / sum t_i`` (records whose outcome is ``found``: what a user gets),
each None when no invocation did any work; ``found_per_second`` is also None when an entry
was written before found counterfactuals were counted.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def _previous_runs(previous: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not previous:
        return []
    if isinstance(previous.get("runs"), list):
        return [dict(r) for r in previous["runs"] if isinstance(r, Mapping)]
    rate, elapsed = previous.get("counterfactuals_per_second"), previous.get("elapsed_seconds")
    if rate and elapsed:  # a summary written before runs were listed: one run that did work
        return [_entry(round(rate * elapsed), None, elapsed)]
    return []


def per_second(count: int | None, elapsed: float) -> float | None:
    """``count / elapsed``; None for no count or no time."""
    return count / elapsed if count is not None and elapsed > 0 else None


def _entry(counterfactuals: int, found: int | None, elapsed: float) -> dict[str, Any]:
    return {"counterfactuals": int(counterfactuals),
            "found": None if found is None else int(found), "elapsed_seconds": float(elapsed),
            "counterfactuals_per_second": per_second(counterfactuals, elapsed),
            "found_per_second": per_second(found, elapsed)}


def carry_over(previous: Mapping[str, Any] | None, summary: Mapping[str, Any],
               produced: int, found: int) -> dict[str, Any]:
    """``summary`` with the throughput of every invocation that did work (see module doc).

    ``previous`` is the workdir's previous ``summary.json`` (None for a new run); ``produced``
    (counterfactuals), ``found`` and ``summary["elapsed_seconds"]`` are this invocation's own.
    """
    runs = _previous_runs(previous)
    if produced > 0:
        runs.append(_entry(produced, found, float(summary["elapsed_seconds"])))
    totals = _totals(runs)
    return {**summary, **totals,
            "elapsed_seconds": totals["elapsed_seconds"] if runs else summary["elapsed_seconds"]}


def _totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``runs`` and the figures over all of them: summed time, counterfactuals per second."""
    total_cf = sum(r["counterfactuals"] for r in runs)
    found = [r.get("found") for r in runs]
    total_found = None if any(f is None for f in found) else sum(found)
    total_s = sum(r["elapsed_seconds"] for r in runs)
    return {"runs": runs, "elapsed_seconds": total_s,
            "counterfactuals_per_second": per_second(total_cf, total_s),
            "found_per_second": per_second(total_found, total_s)}


def combine(summaries: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The throughput of several workdirs' runs as one (the shards of a merged run): every
    invocation of each, and the run-level figures over all of them (see the module doc).
    ``elapsed_seconds`` is then the time the shards took together, not the wall-clock time."""
    return _totals([r for s in summaries for r in _previous_runs(s)])
