"""The evaluation protocol: run workdirs in, ``metrics.json``, tables, plots and report links out.

:func:`evaluate_workdirs` is what ``scripts/evaluate.py`` calls. For each workdir it reads the
written images (:mod:`~sce_jax.evaluation.run_outputs`), loads the run's networks from its
``run_config.json`` (:mod:`~sce_jax.evaluation.models`), computes the desiderata
(:mod:`~sce_jax.evaluation.desiderata`, :mod:`~sce_jax.evaluation.factors`) and writes::

    <workdir>/evaluation/metrics.json           everything below, per run
    <workdir>/evaluation/counterfactuals.jsonl  the per-counterfactual values, one line each
    <workdir>/evaluation/*.png                  the plots (:mod:`~sce_jax.evaluation.plots`)
    <workdir>/report.html                       rewritten, with a section linking the plots
    <out_dir>/<table_name>.md, .csv             one row per workdir (:mod:`~sce_jax.evaluation.tables`)

What the numbers are (the table's columns):

- ``flip_rate``: validity re-checked here with the run's classifier on the written 8-bit PNGs
  (a counterfactual whose search ended on NaN/inf is never valid); ``agreement_with_manifest``
  is the share of counterfactuals where this matches the run's own ``success``;
- distances and sparsity (means over the valid counterfactuals; ``metrics_all`` in
  ``metrics.json`` has them over all): pixel L1/L2 of the PNGs; ``latent_l1/l2`` between the
  generator's encodings of the written counterfactual and original, ``E(x')`` vs ``E(x)``
  (``encode_latents``); ``search_latent_l1/l2``: the search's own ``|z - z0|`` from the manifest;
- diversity: mean over (example, target) groups with at least two valid attempts;
- FID/KID: penultimate features of the run's classifier, originals (one per explained image)
  against valid counterfactuals; comparable between runs with the same classifier only, and
  strongly biased for small sets (tens of images): compare runs, not published numbers;
- ``non_adversarial_rate``: share of valid counterfactuals on which the surrogate classifier's
  decision is also the target decision (its decision only, whatever the run's goal
  probability; None without a surrogate);
- ground truth (squares-style data only): see :mod:`~sce_jax.evaluation.factors`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from sce_jax import metrics
from sce_jax.evaluation import desiderata, factors, models, plots, tables
from sce_jax.evaluation.run_outputs import (
    EvaluationError,
    RunOutputs,
    attempt_groups,
    check_workdir,
    read_run,
)
from sce_jax.workdir import layout as workdir_files
from sce_jax.workdir import record_names, report

FOLDER = workdir_files.EVALUATION
METRICS = workdir_files.EVALUATION_METRICS
PER_COUNTERFACTUAL = workdir_files.EVALUATION_RECORDS
# Per-counterfactual numbers summarised over the valid (and over all) counterfactuals.
DISTANCE_FIELDS = ("pixel_l1", "pixel_l2", "latent_l1", "latent_l2", "search_latent_l1",
                   "search_latent_l2", "changed_fraction", "hoyer")
DIVERSITY_FIELDS = ("diversity_cosine", "pairwise_l1", "pairwise_l2")
RECORD_FIELDS = ("example_id", "target", "target_kind", "attempt", "label", "prediction",
                 "near_boundary", "no_second_reason", "outcome")


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """How to evaluate (the flags of ``scripts/evaluate.py``).

    Attributes:
      surrogate: surrogate classifier checkpoint, ``"auto"`` (a shipped demo's surrogate when
        the run explained that demo's classifier) or ``""`` (none: no non-adversarial rate).
      encode_latents: encode originals and counterfactuals for the latent distances.
      batch_size: images per network call.
      kid_subset_size, kid_subsets: KID's subsets (the size is lowered to the smaller set).
      plots: write the PNG plots (and link them from report.html).
      num_shown: counterfactuals per row of ``best_worst.png``.
      update_report: rewrite ``report.html`` with the evaluation section (when the run wrote
        a report).
    """

    surrogate: str = models.AUTO
    encode_latents: bool = True
    batch_size: int = 64
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    plots: bool = True
    num_shown: int = 5
    update_report: bool = True


def _jsonable(value: Any) -> Any:
    """Numpy values to Python ones, non-finite floats to None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def _write_json(path: str, value: Any) -> None:
    workdir_files.write_text(path, json.dumps(_jsonable(value), indent=2, sort_keys=True,
                                              allow_nan=False) + "\n")


def _class_names(config) -> tuple[str, ...]:
    return tuple(config.classifier.get("class_names", ()) or ())


def _namer(config):
    names = _class_names(config)
    return lambda t: f"{names[t]} ({t})" if 0 <= t < len(names) else str(t)


def _caption(row: Mapping[str, Any], names: Sequence[str]) -> str:
    """A best_worst.png caption: example, the goal in words (class names), attempt, pixel L1."""
    goal = record_names.goal(row, names) or f"target {row.get('target')}"
    return f"#{row['example_id']} {goal}\na{row['attempt']}, L1 {row['pixel_l1']:.3g}"


def _per_example(fn, run: RunOutputs, first: np.ndarray) -> np.ndarray:
    """``fn`` on each explained image's original once, spread back to every row."""
    values = fn(run.originals[first])
    position = {run.produced[i]["example_id"]: j for j, i in enumerate(first)}
    return values[[position[r["example_id"]] for r in run.produced]]


def _latents(run: RunOutputs, first: np.ndarray, options: EvaluationOptions,
             networks: models.Networks):
    """``(E(x) per row, E(x') per row, note)``, or Nones with the reason."""
    if not options.encode_latents:
        return None, None, "not computed (encode_latents off)"
    generator = networks.generator(run.config, run.workdir)
    if not generator.has_encoder:
        return None, None, f"{generator.name} has no encoder"
    encode = networks.function(generator, "encode")
    return (_per_example(encode, run, first), encode(run.counterfactuals),
            "E(x') vs E(x) of the written images")


def _surrogate_flips(run, targets, values, kinds, options, networks):
    """``(flips (N,) bool or None, surrogate path or None)``: whether the surrogate's decision
    is the target decision on each counterfactual. Its decision only, not the run's goal
    probability: the question is whether another model sees the same change of meaning, and
    a weaker surrogate is rarely as confident as the classifier the search optimised."""
    path = models.resolve_surrogate(options.surrogate, run.config)
    if path is None:
        return None, None
    logits = networks.function(networks.surrogate(path, run.config, run.workdir), "logits")
    return desiderata.target_reached(logits(run.counterfactuals), targets, values, kinds,
                                     goal_probability=0.0), path


def _judge(run: RunOutputs, first: np.ndarray, options: EvaluationOptions,
           networks: models.Networks) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """``(valid, surrogate flips or None, surrogate path or None)`` of the produced rows."""
    produced = run.produced
    classifier = networks.classifier(run.config, run.workdir)
    goal = float(run.config.search.get("goal_probability", 0.0))
    targets = np.asarray([int(r.get("target", -1)) for r in produced], np.int64)
    kinds = [r.get("target_kind", "class") for r in produced]
    logits = networks.function(classifier, "logits")
    try:
        values = desiderata.flip_values(_per_example(logits, run, first), targets, kinds)
        valid = desiderata.target_reached(logits(run.counterfactuals), targets, values, kinds,
                                          goal_probability=goal)
        valid &= ~np.asarray([bool(r.get("nonfinite")) for r in produced])
        flips, path = _surrogate_flips(run, targets, values, kinds, options, networks)
    except ValueError as e:  # targets the classifier does not have: another run's config
        raise EvaluationError(f"{run.workdir}: the manifest's targets do not fit the run's "
                              f"classifier ({e})") from e
    logging.info("%s: validity re-checked on the written images", run.name)
    return valid, flips, path


def _realism(run: RunOutputs, valid: np.ndarray, first: np.ndarray, options: EvaluationOptions,
             networks: models.Networks) -> dict[str, Any]:
    classifier = networks.classifier(run.config, run.workdir)
    if classifier.features_fn is None:
        return {"fid": None, "kid": None, "kid_std": None,
                "note": f"{classifier.name} exposes no features"}
    features = networks.function(classifier, "features")
    chosen = run.counterfactuals[valid]
    realism = desiderata.realism(features(run.originals[first]),
                                 features(chosen) if len(chosen) else np.zeros((0, 1)),
                                 kid_subset_size=options.kid_subset_size,
                                 kid_subsets=options.kid_subsets)
    realism["features"] = f"{classifier.name} penultimate features"
    logging.info("%s: FID/KID done", run.name)
    return realism


def _ground_truth(run: RunOutputs, valid: np.ndarray, groups) -> tuple[dict, dict[str, Any]]:
    """``(per-row factor measures, summary)``; no rows and a note without known factors."""
    masks, why = factors.factor_regions(run.config, [r["example_id"] for r in run.produced],
                                        run.originals.shape[1:])
    if masks is None:
        return {}, {"note": why}
    return factors.fidelity(run.originals, run.counterfactuals, valid, masks, groups)


def _rows(run: RunOutputs, valid: np.ndarray, per_row: Mapping[str, np.ndarray],
          flips: np.ndarray | None) -> list[dict[str, Any]]:
    """The per-counterfactual rows: the manifest's identifiers, then every measure."""
    rows = []
    for i, r in enumerate(run.produced):
        row = {k: r.get(k) for k in RECORD_FIELDS}
        row.update(status="ok", success=bool(valid[i]), success_manifest=bool(r.get("success")),
                   search_latent_l1=r.get("latent_l1"), search_latent_l2=r.get("latent_l2"),
                   counterfactual=(r.get("files") or {}).get("counterfactual"))
        row.update({k: v[i] for k, v in per_row.items()})
        if flips is not None:
            row["surrogate_success"] = bool(flips[i])
        rows.append(_jsonable(row))
    return rows


def _table_row(name: str, n: int, summary, fields, diversity, realism, non_adversarial,
               ground_truth) -> dict[str, Any]:
    """The run's line of the comparison table (keys: :data:`tables.COLUMNS` and gt_*)."""
    table = {"run": name, "num_images": summary["num_images"], "num_counterfactuals": n,
             "flip_rate": summary["flip_rate"],
             "flip_rate_first_attempt": summary["flip_rate_first_attempt"],
             "images_with_valid": summary["images_with_valid"],
             "found_rate_first_attempt": summary["found_rate_first_attempt"],
             **{f: _mean(summary, f) for f in DISTANCE_FIELDS if f in fields},
             **{f: diversity[f]["mean"] for f in DIVERSITY_FIELDS},
             "fid": realism.get("fid"), "kid": realism.get("kid"),
             "non_adversarial_rate": non_adversarial}
    if "dominant_rate" in ground_truth:
        for factor in ground_truth["factor_names"]:
            slug = factor.replace(" ", "_")
            table[f"gt_dominant_{slug}_rate"] = ground_truth["dominant_rate"][factor]
            table[f"gt_found_{slug}_rate"] = ground_truth["found_rate"][factor]
        table["gt_all_found_rate"] = ground_truth["all_found_rate"]
    return table


def _mean(summary: Mapping[str, Any], field: str) -> float | None:
    entry = summary["metrics"].get(field)
    return entry.get("mean") if isinstance(entry, Mapping) else None


def evaluate_run(run: RunOutputs, options: EvaluationOptions = EvaluationOptions(),
                 networks: models.Networks | None = None) -> dict[str, Any]:
    """The evaluation of one read run: the content of its ``metrics.json``.

    The per-counterfactual rows are under ``"counterfactuals"``; everything else is the run
    summary (see the module docstring). Writes nothing. ``networks`` shares loaded networks
    between runs (a new one by default).
    """
    networks = networks or models.Networks(options.batch_size)
    n = len(run.produced)
    logging.info("%s: evaluating %d counterfactuals of %d images", run.name, n,
                 len({r["example_id"] for r in run.records}))
    networks.classifier(run.config, run.workdir)  # a run config that cannot load: now
    first = desiderata.first_row_per_example(run.produced)
    groups = attempt_groups(run.produced)
    valid, flips, surrogate_path = np.zeros(0, bool), None, None
    per_row: dict[str, np.ndarray] = {}
    measures: dict[str, np.ndarray] = {}  # the columns of desiderata.IMAGE_MEASURES
    diversity = {k: np.zeros(0) for k in DIVERSITY_FIELDS}
    realism: dict[str, Any] = {"fid": None, "kid": None, "kid_std": None}
    latent_note, ground_truth = "no counterfactuals", {"note": "no counterfactuals"}
    if n:
        valid, flips, surrogate_path = _judge(run, first, options, networks)
        latent_x, latent_cf, latent_note = _latents(run, first, options, networks)
        per_row = desiderata.distances(run.originals, run.counterfactuals, latent_x, latent_cf)
        measures = desiderata.image_measures(run.originals, run.counterfactuals)
        per_row.update(measures)
        diversity = desiderata.attempt_diversity(run.originals, run.counterfactuals, valid, groups)
        logging.info("%s: distances, sparsity and diversity done", run.name)
        realism = _realism(run, valid, first, options, networks)
        gt_rows, ground_truth = _ground_truth(run, valid, groups)
        per_row.update(gt_rows)

    rows = _rows(run, valid, per_row, flips)
    fields = [f for f in DISTANCE_FIELDS if any(row.get(f) is not None for row in rows)]
    fields += sorted(k for k in per_row if k.startswith(("gt_share", "gt_intensity")))
    fields += [k for k, v in measures.items() if v.dtype.kind == "f" and k not in fields
               and k not in DISTANCE_FIELDS]  # a measure's columns are summarised too
    skips = [r for r in run.records if r.get("status") != "ok"]
    summary = metrics.summarise_records(rows + skips, fields=fields)
    summary_all = metrics.summarise_records(rows + skips, over="ok", fields=fields)
    non_adversarial = metrics.non_adversarial_rate(valid, flips) if flips is not None else None
    diversity_summary = {k: metrics.summarise_values(diversity[k]) for k in DIVERSITY_FIELDS}
    agreement = (float(np.mean([row["success"] == row["success_manifest"] for row in rows]))
                 if rows else None)
    if agreement is not None and agreement < 1.0:
        logging.warning("%s: validity on the written images disagrees with the manifest for "
                        "%.1f%% of the counterfactuals", run.name, 100.0 * (1.0 - agreement))
    targets = [int(r.get("target", -1)) for r in run.produced]
    table = _table_row(run.name, n, summary, fields, diversity_summary, realism,
                       non_adversarial, ground_truth)
    table.update(desiderata.attempt_quality(run.produced, valid, per_row))
    return _jsonable({
        "workdir": run.workdir, "run": run.name,
        "table": table,
        "validity": {"flip_rate": summary["flip_rate"], "num_valid": summary["num_valid"],
                     "agreement_with_manifest": agreement,
                     "goal_probability": float(run.config.search.get("goal_probability", 0.0)),
                     "per_target": desiderata.flip_rate_per_class(targets, valid)},
        "summary": summary, "metrics_all": summary_all["metrics"],
        "latents": latent_note,
        "diversity": {"num_groups": len(groups), **diversity_summary},
        "realism": realism,
        "non_adversarial": {"surrogate": surrogate_path, "rate": non_adversarial},
        "ground_truth": ground_truth,
        "options": dataclasses.asdict(options),
        "counterfactuals": rows,
    })


def _write_outputs(run: RunOutputs, result: dict[str, Any], options: EvaluationOptions) -> None:
    folder = os.path.join(run.workdir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    rows = result["counterfactuals"]
    workdir_files.write_text(os.path.join(folder, PER_COUNTERFACTUAL), "".join(
        json.dumps(row, sort_keys=True, allow_nan=False) + "\n" for row in rows))
    _write_json(os.path.join(folder, METRICS), {k: v for k, v in result.items() if k != "counterfactuals"})
    if options.plots and rows:
        valid = np.asarray([row["success"] for row in rows], bool)
        values = {k: np.asarray([np.nan if row.get(k) is None else row[k] for row in rows], np.float64)
                  for k, _ in plots.HISTOGRAMS if any(row.get(k) is not None for row in rows)}
        per_target = {int(t): v for t, v in result["validity"]["per_target"].items()}
        captions = [_caption(row, _class_names(run.config)) for row in rows]
        written = plots.write_plots(folder, values=values, valid=valid, per_class=per_target,
                                    names=_namer(run.config), originals=run.originals,
                                    counterfactuals=run.counterfactuals, captions=captions,
                                    count=options.num_shown)
        logging.info("%s: wrote %s", run.name, ", ".join(os.path.basename(p) for p in written))
    output = run.config.get("output", {})
    if options.update_report and (output.get("report", False)
                                  or os.path.exists(os.path.join(run.workdir,
                                                                 workdir_files.REPORT))):
        report.write_report(run.workdir, class_names=_class_names(run.config) or None,
                            max_examples=int(output.get("report_max_examples", 200)))


def evaluate_workdir(workdir: str, options: EvaluationOptions = EvaluationOptions(),
                     networks: models.Networks | None = None) -> dict[str, Any]:
    """Evaluates one workdir and writes its outputs (see the module docstring); returns them."""
    run = read_run(workdir)
    result = evaluate_run(run, options, networks)
    _write_outputs(run, result, options)
    return result


def evaluate_workdirs(workdirs: Sequence[str], out_dir: str, *, table_name: str = "evaluation",
                      options: EvaluationOptions = EvaluationOptions()) -> list[dict[str, Any]]:
    """Evaluates every workdir, then writes the table of all of them into ``out_dir``.

    Every workdir is checked before any work: one :class:`EvaluationError` names each that
    cannot be evaluated. Returns the ``metrics.json`` contents, in order.
    """
    if not workdirs:
        raise EvaluationError("no workdir to evaluate")
    problems = [p for p in (check_workdir(os.path.abspath(w)) for w in workdirs) if p]
    if problems:
        raise EvaluationError("cannot evaluate:\n  " + "\n  ".join(problems))
    results = []
    networks = models.Networks(options.batch_size)
    for workdir in workdirs:
        result = evaluate_workdir(workdir, options, networks)
        logging.info("%s: flip rate %s, written to %s", result["run"],
                     report.format_value(result["table"]["flip_rate"], "percent"),
                     os.path.join(result["workdir"], FOLDER, METRICS))
        results.append(result)
    paths = tables.write_tables(out_dir, [r["table"] for r in results], table_name)
    logging.info("tables: %s", ", ".join(paths))
    return results
