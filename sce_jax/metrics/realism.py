"""Realism: FID and KID between two sets of images, from features of any network.

The feature network is pluggable: ``features(images) -> (N, D)`` (Inception-v3's 2048-d pool
output for natural images, as in the literature; any classifier's penultimate features for
other domains). Values from different feature networks are not comparable. All statistics
are computed on the host in float64.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017): the Fréchet distance between Gaussians fitted to the features,

    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)),

with sample means ``mu`` and unbiased sample covariances ``S`` (divisor N - 1). The trace of
the matrix square root is computed without a non-symmetric square root:
``S_1 S_2 = A^-1 (A S_2 A) A`` for ``A = S_1^(1/2)`` (when S_1 is invertible), so ``S_1 S_2``
has the eigenvalues of the symmetric positive semi-definite ``M = A S_2 A``, and

    tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i(M)),

with ``A`` and ``lambda(M)`` from symmetric eigendecompositions (negative round-off
eigenvalues clipped to 0). By continuity this also holds for singular ``S_1``.

KID (Binkowski et al., "Demystifying MMD GANs", ICLR 2018): the unbiased estimate of the
squared maximum mean discrepancy with the cubic polynomial kernel
``k(a, b) = (a . b / D + 1)^3``; for ``X`` (m rows) and ``Y`` (n rows):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
              - 2 sum_{i, j} k(x_i, y_j) / (m n)

averaged over ``num_subsets`` random subsets of ``subset_size`` rows of each set (drawn
without replacement within a subset), as in the reference implementation; the standard
deviation over subsets is returned too. KID is unbiased, so small positive or negative values
both mean "indistinguishable".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from sce_jax.metrics.batching import map_in_batches


def compute_features(features_fn: Callable[[Any], Any], images: Any, *,
                     batch_size: int = 64) -> np.ndarray:
    """``features_fn`` applied in fixed-size batches; returns ``(N, D)`` float64."""
    feats = map_in_batches(features_fn, images, batch_size)
    if feats.ndim != 2:
        raise ValueError(f"features_fn must return (batch, D) features; the outputs have "
                         f"shape {feats.shape}")
    return feats.astype(np.float64)


def _features(name: str, features: Any, min_rows: int) -> np.ndarray:
    f = np.asarray(features, np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {f.shape}")
    if f.shape[0] < min_rows:
        raise ValueError(f"{name} has {f.shape[0]} rows; at least {min_rows} are needed")
    if not np.all(np.isfinite(f)):
        bad = int(np.argwhere(~np.isfinite(f))[0, 0])
        raise ValueError(f"{name} has non-finite values (first in row {bad})")
    return f


@dataclasses.dataclass(frozen=True)
class GaussianStatistics:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of a feature set."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int


def gaussian_statistics(features: Any) -> GaussianStatistics:
    """Sample mean and covariance (divisor N - 1) of ``(N, D)`` features, N >= 2."""
    f = _features("features", features, 2)
    d = f.shape[1]
    covariance = np.cov(f, rowvar=False, ddof=1).reshape(d, d)
    return GaussianStatistics(f.mean(axis=0), covariance, f.shape[0])


def _symmetric_sqrt(s: np.ndarray) -> np.ndarray:
    """``S^(1/2)`` of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr((S_1 S_2)^(1/2))`` for symmetric PSD ``S_1``, ``S_2`` (see the module docstring)."""
    a = _symmetric_sqrt(np.asarray(s1, np.float64))
    m = a @ np.asarray(s2, np.float64) @ a
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(stats_1: GaussianStatistics, stats_2: GaussianStatistics) -> float:
    """``||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``, clipped at 0."""
    if stats_1.mean.shape != stats_2.mean.shape:
        raise ValueError(f"feature dimensions differ: {stats_1.mean.shape[0]} and "
                         f"{stats_2.mean.shape[0]}")
    diff = stats_1.mean - stats_2.mean
    value = (diff @ diff + np.trace(stats_1.covariance) + np.trace(stats_2.covariance)
             - 2.0 * trace_sqrt_product(stats_1.covariance, stats_2.covariance))
    return float(max(value, 0.0))


def fid(features_1: Any, features_2: Any) -> float:
    """FID between two ``(N, D)`` feature sets (see the module docstring)."""
    f1 = _features("features_1", features_1, 2)
    f2 = _features("features_2", features_2, 2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: features_1 has {f1.shape[1]}, "
                         f"features_2 has {f2.shape[1]}")
    return frechet_distance(gaussian_statistics(f1), gaussian_statistics(f2))


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``k(a_i, b_j) = (a_i . b_j / D + 1)^3`` for ``(m, D)`` and ``(n, D)``: ``(m, n)``."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Any, y: Any) -> float:
    """Unbiased ``MMD^2`` with the cubic polynomial kernel (each set needs >= 2 rows)."""
    x = _features("x", x, 2)
    y = _features("y", y, 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


@dataclasses.dataclass(frozen=True)
class KID:
    """KID over subsets: mean and standard deviation of the per-subset ``MMD^2_u``."""

    mean: float
    std: float
    subset_size: int
    num_subsets: int


def kid(features_1: Any, features_2: Any, *, subset_size: int = 1000, num_subsets: int = 100,
        seed: int = 0) -> KID:
    """KID: ``MMD^2_u`` averaged over random subsets (see the module docstring).

    ``subset_size`` is lowered to the size of the smaller set when that is smaller (and then
    every subset of that set is the whole set). Deterministic given ``seed``.
    """
    f1 = _features("features_1", features_1, 2)
    f2 = _features("features_2", features_2, 2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: features_1 has {f1.shape[1]}, "
                         f"features_2 has {f2.shape[1]}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    size = min(int(subset_size), f1.shape[0], f2.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        i1 = rng.choice(f1.shape[0], size, replace=False)
        i2 = rng.choice(f2.shape[0], size, replace=False)
        values[s] = mmd2_unbiased(f1[i1], f2[i2])
    return KID(float(values.mean()), float(values.std()), size, int(num_subsets))
