"""MNAC, the mean number of attributes changed (Rodriguez et al., "Beyond Trivial
Counterfactual Explanations with Diverse Valuable Explanations", ICCV 2021), as used in the
DiME (Jeanneret et al., ACCV 2022) and ACE (Jeanneret et al., CVPR 2023) protocols.

An oracle attribute classifier (trained independently, e.g. on CelebA's 40 attributes) judges
the original and the counterfactual; a counterfactual should change the target attribute and
as few others as possible. With the oracle's logits ``o(x)`` over A attributes and its
decisions ``b_a(x) = [sigmoid(o_a(x)) > 1/2] = [o_a(x) > 0]``:

    NAC(x, x') = sum_{a not in E} [b_a(x) != b_a(x')],       MNAC = mean over counterfactuals

Definition implemented and its one choice, the excluded set ``E``: the published DiME/ACE
evaluation code counts every oracle attribute (``E`` empty), so when the oracle also predicts
the target attribute a successful counterfactual counts it as one change (a constant offset of
about the oracle's agreement with the classifier). To count only the attributes changed
besides the target (the metric's intent: side effects of the explanation), pass the oracle's
index of the target attribute as ``exclude``; leave it ``None`` to match the published
numbers. A report should say which.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sce_jax.metrics import _arrays


def attributes_changed(oracle_logits_original: Any, oracle_logits_counterfactual: Any, *,
                       exclude: Any = None) -> np.ndarray:
    """Number of oracle decisions that differ, per counterfactual: ``(N,)`` int.

    Args:
      oracle_logits_original: ``(N, A)`` oracle logits of the originals.
      oracle_logits_counterfactual: ``(N, A)`` oracle logits of the counterfactuals.
      exclude: ``None`` (count all), an attribute index for every row, or ``(N,)`` indices
        (``-1``: exclude nothing in that row).
    """
    a = np.asarray(oracle_logits_original, np.float64)
    b = np.asarray(oracle_logits_counterfactual, np.float64)
    n, num_attributes = _arrays.require_rank("oracle_logits_original", a, 2,
                                             "counterfactuals, attributes")
    _arrays.require_same_shape("oracle_logits_original", a, "oracle_logits_counterfactual", b)
    changed = (a > 0) != (b > 0)
    if exclude is not None:
        excluded = np.broadcast_to(np.asarray(exclude, np.int64), (n,))
        if np.any((excluded < -1) | (excluded >= num_attributes)):
            raise ValueError(f"exclude must be attribute indices in 0..{num_attributes - 1} "
                             f"(or -1 for none), got {sorted(set(excluded.tolist()))}")
        changed = changed & (np.arange(num_attributes) != excluded[:, None])
    return changed.sum(axis=1)


def mnac(oracle_logits_original: Any, oracle_logits_counterfactual: Any, *,
         exclude: Any = None) -> float:
    """Mean of :func:`attributes_changed`; NaN for no counterfactuals."""
    counts = attributes_changed(oracle_logits_original, oracle_logits_counterfactual,
                                exclude=exclude)
    return float(counts.mean()) if counts.size else float("nan")
