"""Ground-truth fidelity for runs on data with known factor regions (the squares benchmark).

A run qualifies when its data source is an ``.npz`` holding ``boxes`` ((N, 4) top, left,
height, width of the square, as :func:`sce_jax.datasets.squares.write_test_set` writes them)
and its images were not resized (the boxes are in the stored images' pixels). The factor
regions are :func:`sce_jax.datasets.squares.factor_masks` (0 = square, 1 = background), and
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

from sce_jax import metrics
from sce_jax.datasets import squares


def factor_regions(config: ml_collections.ConfigDict, example_ids: Sequence[int],
                   image_shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """``((N, F, H, W) masks, "")`` for the rows' examples, or ``(None, why not)``."""
    source = str(config.data.source)
    if not source.lower().endswith(".npz"):
        return None, "the data source is not an .npz with factor boxes"
    try:
        with np.load(source, allow_pickle=False) as npz:
            if "boxes" not in npz:
                return None, f"{source} holds no 'boxes' (no known factors)"
            boxes = np.asarray(npz["boxes"])
            stored = tuple(npz[str(config.data.npz_images_key)].shape[1:3])
    except (OSError, ValueError, KeyError) as e:
        return None, f"{source} cannot be read for its factor boxes ({e})"
    height, width = image_shape[:2]
    if stored != (height, width) or height != width:
        return None, (f"the run resized the {stored} images to {(height, width)}; the boxes "
                      "are in the stored images' pixels")
    ids = np.asarray(example_ids, np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or (ids.size and ids.max() >= len(boxes)):
        return None, f"{source}: 'boxes' of shape {boxes.shape} do not cover the examples"
    return squares.factor_masks(boxes[ids], height), ""


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
