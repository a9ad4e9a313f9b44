"""The desiderata (validity, proximity, sparsity, diversity, realism, ...) of one run's written counterfactuals, as arrays.

Row ``i`` of every array is produced record ``i`` of :class:`~sce_jax.evaluation.run_outputs.
RunOutputs`. Each function hands the arrays to the metric modules of :mod:`sce_jax.metrics`,
which hold the formulas; here only the selection of rows is decided:

- validity: the run's classifier on the written 8-bit counterfactual, with the search's own
  decision rule per target kind; for ``"flip"`` the desired decision is the opposite of the
  classifier's decision on the written original, ``value = 1 - [l_t(x) > 0]``, as in the search;
- non-adversarial: the surrogate on the same images, same targets and rule, over the valid rows;
- proximity and sparsity: every row (summaries then select the valid ones);
- diversity: the K attempts of each (example, target), valid attempts only;
- realism: FID/KID between the features of the originals (one per image that was explained)
  and of the valid counterfactuals.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from sce_jax import metrics
from sce_jax.registry import Registry
from sce_jax.search import background_spots, masks
from sce_jax.search import targets as target_lib

KINDS = target_lib.KINDS.names()


def flip_values(original_logits: np.ndarray, targets: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """``(N,)`` desired decision of a flipped attribute, ``1 - [l_t(x) > 0]``; 0 for other kinds."""
    logits = np.asarray(original_logits)
    targets = np.asarray(targets, np.int64)
    on = logits[np.arange(len(targets)), np.clip(targets, 0, logits.shape[1] - 1)] > 0
    flip = np.asarray([k == "flip" for k in kinds], bool)
    return np.where(flip & ~on, 1.0, 0.0).astype(np.float32)


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown target kind(s) {unknown} in the manifest; expected {KINDS}")


def target_reached(logits: np.ndarray, targets: np.ndarray, values: np.ndarray,
                   kinds: Sequence[str], *, goal_probability: float) -> np.ndarray:
    """``(N,)`` bool: :func:`sce_jax.metrics.reaches_target` per row, with each row's kind."""
    _check_kinds(kinds)
    kinds = np.asarray(kinds)
    reached = np.zeros(len(kinds), bool)
    for kind in KINDS:
        rows = np.flatnonzero(kinds == kind)
        if rows.size:
            reached[rows] = metrics.reaches_target(
                np.asarray(logits)[rows], np.asarray(targets)[rows],
                np.asarray(values)[rows] if kind == "flip" else None,
                kind=kind, goal_probability=goal_probability)
    return reached


def distances(originals: np.ndarray, counterfactuals: np.ndarray,
              latent_originals: np.ndarray | None = None,
              latent_counterfactuals: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per row: ``pixel_l1/l2`` (and ``latent_l1/l2``)."""
    out = metrics.proximity(originals, counterfactuals, latent_originals, latent_counterfactuals)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


# Measures of each counterfactual against its original on the written images: name ->
# ``(originals, counterfactuals) -> {column: (N,) values}``. Every column is a column of
# counterfactuals.csv, and its float columns are summarised in the run's summary.
IMAGE_MEASURES = Registry("image measure", {
    "sparsity": "sce_jax.metrics.sparsity:sparsity",  # changed_fraction, hoyer
    "background": "sce_jax.evaluation.desiderata:background_measures",  # background_share, _spot
})


def image_measures(originals: np.ndarray, counterfactuals: np.ndarray) -> dict[str, np.ndarray]:
    """Per row, every column of every :data:`IMAGE_MEASURES` entry (floats as float64)."""
    out: dict[str, np.ndarray] = {}
    for measure in IMAGE_MEASURES.values():
        for column, values in measure(originals, counterfactuals).items():
            values = np.asarray(values)
            out[column] = values.astype(np.float64) if values.dtype.kind == "f" else values
    return out


def attempt_diversity(originals: np.ndarray, counterfactuals: np.ndarray, valid: np.ndarray,
                      groups: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per (example, target) group: :func:`sce_jax.metrics.diversity` of its valid attempts.

    Groups are batched by their number of attempts (all equal in a normal run).
    """
    names = ("diversity_cosine", "pairwise_l1", "pairwise_l2", "num_attempts_used")
    out = {name: np.full(len(groups), np.nan) for name in names}
    by_size: dict[int, list[int]] = {}
    for g, rows in enumerate(groups):
        by_size.setdefault(len(rows), []).append(g)
    for size, members in by_size.items():
        rows = np.asarray([groups[g] for g in members])       # (G, K)
        result = metrics.diversity(originals[rows[:, 0]], counterfactuals[rows], valid[rows])
        for name in names:
            out[name][members] = np.asarray(result[name], np.float64)
    return out


def realism(original_features: np.ndarray, counterfactual_features: np.ndarray, *,
            kid_subset_size: int, kid_subsets: int, seed: int = 0) -> dict[str, Any]:
    """FID and KID (mean, std) between the two feature sets; None (with a note) below 2 rows."""
    n_orig, n_cf = len(original_features), len(counterfactual_features)
    if n_orig < 2 or n_cf < 2:
        return {"fid": None, "kid": None, "kid_std": None, "num_originals": n_orig,
                "num_counterfactuals": n_cf,
                "note": "FID/KID need at least 2 originals and 2 valid counterfactuals"}
    value = metrics.kid(original_features, counterfactual_features, subset_size=kid_subset_size,
                        num_subsets=kid_subsets, seed=seed)
    return {"fid": metrics.fid(original_features, counterfactual_features), "kid": value.mean,
            "kid_std": value.std, "kid_subset_size": value.subset_size,
            "kid_subsets": value.num_subsets, "num_originals": n_orig,
            "num_counterfactuals": n_cf}


def first_row_per_example(produced: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Indices of the first produced row of each example (its original, counted once)."""
    seen, rows = set(), []
    for i, r in enumerate(produced):
        if r["example_id"] not in seen:
            seen.add(r["example_id"])
            rows.append(i)
    return np.asarray(rows, np.int64)


def flip_rate_per_class(targets: Sequence[int], valid: np.ndarray) -> dict[int, dict[str, float]]:
    """``{target: {"flip_rate": mean(valid), "count": n}}`` over the rows of each target.

    The target is the class to reach, the class to leave (``"other"``) or the attribute.
    """
    targets = np.asarray(targets)
    return {int(t): {"flip_rate": metrics.flip_rate(valid[targets == t]),
                     "count": int(np.sum(targets == t))}
            for t in sorted(set(targets.tolist()))}


def background_measures(originals: np.ndarray, counterfactuals: np.ndarray,
                        batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per row: ``background_share`` (share of the change's energy in the empty background
    joined to the border) and ``background_spot`` (the change is a spot there), as
    :mod:`sce_jax.search.background_spots` defines them, on the written images."""
    import jax.numpy as jnp


    shares, spots = [], []
    for i in range(0, len(originals), batch_size):
        x = jnp.asarray(originals[i:i + batch_size])
        cf = jnp.asarray(counterfactuals[i:i + batch_size])
        d = masks.change_map(cf, x)
        empty = background_spots.empty_background(x)
        total = jnp.sum(d, axis=(1, 2, 3))
        shares.append(np.asarray(jnp.sum(d * empty, axis=(1, 2, 3)) / jnp.maximum(total, 1e-12)))
        spots.append(np.asarray(background_spots.is_background_spot(x, cf)))
    return {"background_share": np.concatenate(shares).astype(np.float64),
            "background_spot": np.concatenate(spots).astype(bool)}


def attempt_quality(produced: Sequence[Mapping], valid: np.ndarray,
                    per_row: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Run-level figures on what the attempts found (the comparison table's last columns).

    - ``near_boundary_images``: share of images whose original was already within the
      search's boundary margin (their counterfactuals are not explanations);
    - ``later_background_share``: mean share of the change in empty background over valid
      attempts after the first (spots painted beside the object push it up);
    - ``later_spot_rate``: share of valid later attempts whose change is a background spot;
    - ``no_second_reason_rate``: share of later attempts the search reported as having found
      no second reason (it rejected a spot).
    """
    attempt = np.asarray([int(r.get("attempt", 0)) for r in produced], np.int64)
    later = attempt > 0

    def mean(values, where):
        return float(np.mean(values[where])) if np.any(where) else None

    images = {r["example_id"]: bool(r.get("near_boundary", False)) for r in produced}
    out = {"near_boundary_images": float(np.mean(list(images.values()))) if images else None,
           "no_second_reason_rate": mean(np.asarray([bool(r.get("no_second_reason", False))
                                                     for r in produced], bool), later)}
    if "background_share" in per_row:
        out["later_background_share"] = mean(per_row["background_share"], later & valid)
        out["later_spot_rate"] = mean(per_row["background_spot"].astype(float), later & valid)
    return out
