"""Ground-truth fidelity for runs on data with known factor regions (the squares benchmark).

A run qualifies when its data source knows its examples' factor regions
(:meth:`sce_jax.data.Dataset.factor_masks`; the squares test sets of
:func:`sce_jax.demos.squares.write_test_set` do, at their stored size). The factor
regions are :func:`sce_jax.demos.squares.factor_masks` (0 = square, 1 = background), and
:func:`sce_jax.metrics.factor_changes` / :func:`sce_jax.metrics.factors_found` measure each
counterfactual. Summaries:

    dominant_rate_f = mean over valid counterfactuals of [dominant = f]
    found_rate_f    = mean over explained groups of [some valid attempt has dominant = f]
    all_found_rate  = mean over explained groups of [every factor was found]

where a group is one (example, target) with its K attempts and it is explained when at least
one attempt is valid.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np

from sce_jax import data, metrics
from sce_jax.demos import squares


def factor_regions(config: ml_collections.ConfigDict, example_ids: Sequence[int],
                   image_shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """``((N, F, H, W) masks, "")`` for the rows' examples, or ``(None, why not)``: the run's
    data source (``config.data``) opened again and asked for its factor masks."""
    try:
        dataset = data.open_configured(config.data)
    except data.DataError as e:
        return None, f"{config.data.source} cannot be read for its factor regions ({e})"
    masks, why = dataset.factor_masks(example_ids)
    if masks is not None and tuple(masks.shape[2:]) != tuple(image_shape[:2]):
        return None, (f"the factor regions are {tuple(masks.shape[2:])} but the run's images "
                      f"are {tuple(image_shape[:2])}")
    return masks, why


def fidelity(originals: np.ndarray, counterfactuals: np.ndarray, valid: np.ndarray,
             masks: np.ndarray, groups: Sequence[Sequence[int]],
             names: Sequence[str] = squares.FACTOR_NAMES) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-row factor measures and the run summary (see the module docstring).

    Returns:
      ``(per_row, summary)``: per_row has ``gt_dominant`` (N,) and ``gt_share_<f>``,
      ``gt_intensity_<f>`` (N,) for each factor index f; summary has ``factor_names``,
      ``dominant_rate``, ``found_rate`` ({name: rate or None}), ``all_found_rate`` and
      ``num_groups_explained``.
    """
    changes = metrics.factor_changes(originals, counterfactuals, masks)
    dominant = np.asarray(changes["dominant"], np.int64)
    per_row: dict[str, np.ndarray] = {"gt_dominant": dominant}
    for f in range(masks.shape[1]):
        per_row[f"gt_share_{f}"] = np.asarray(changes["share"][:, f], np.float64)
        per_row[f"gt_intensity_{f}"] = np.asarray(changes["intensity"][:, f], np.float64)

    num_factors = masks.shape[1]
    dominant_rate = {name: (float(np.mean(dominant[valid] == f)) if valid.any() else None)
                     for f, name in enumerate(names[:num_factors])}
    explained = [rows for rows in groups if valid[list(rows)].any()]
    found_rate: dict[str, float | None] = {name: None for name in names[:num_factors]}
    all_found = None
    if explained:
        size = max(len(rows) for rows in explained)
        padded = [list(rows) + [rows[0]] * (size - len(rows)) for rows in explained]
        pad_ok = [[j < len(rows) for j in range(size)] for rows in explained]
        index = np.asarray(padded)
        found = metrics.factors_found(dominant[index], valid[index] & np.asarray(pad_ok),
                                      num_factors)
        found_rate = {name: float(np.mean(found["found"][:, f]))
                      for f, name in enumerate(names[:num_factors])}
        all_found = float(np.mean(found["all_found"]))
    summary = {"factor_names": list(names[:num_factors]), "dominant_rate": dominant_rate,
               "found_rate": found_rate, "all_found_rate": all_found,
               "num_groups_explained": len(explained)}
    return per_row, summary
