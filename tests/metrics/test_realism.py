"""FID and KID against closed forms and hand-computed kernel sums."""

import math

import numpy as np
import pytest

from sce_jax import metrics


def cross_points(mean, a, b):
    """Four 2-d points with sample mean ``mean`` and sample covariance diag(2a^2/3, 2b^2/3).

    Points mean + (±a, 0), mean + (0, ±b): the mean is exact; with divisor N - 1 = 3 the
    variances are (a^2 + a^2) / 3 and (b^2 + b^2) / 3, and the cross term is 0.
    """
    return np.asarray(mean, np.float64) + np.array([[a, 0], [-a, 0], [0, b], [0, -b]], np.float64)


def test_gaussian_statistics_of_the_cross():
    stats = metrics.gaussian_statistics(cross_points([1.0, 2.0], 3.0, 6.0))
    np.testing.assert_allclose(stats.mean, [1.0, 2.0])
    np.testing.assert_allclose(stats.covariance, np.diag([6.0, 24.0]), atol=1e-12)


def test_fid_closed_form_for_diagonal_covariances():
    # set 1: mean (0, 0), variances (2*9/3, 2*36/3) = (6, 24)
    # set 2: mean (1, 2), variances (24, 6)
    # FID = ||mu1 - mu2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2))
    #     = (1 + 4) + (6 + 24 - 2*12) + (24 + 6 - 2*12) = 5 + 6 + 6 = 17
    f1 = cross_points([0.0, 0.0], 3.0, 6.0)
    f2 = cross_points([1.0, 2.0], 6.0, 3.0)
    assert metrics.fid(f1, f2) == pytest.approx(17.0, abs=1e-9)
    assert metrics.fid(f2, f1) == pytest.approx(17.0, abs=1e-9)


def test_fid_of_identical_sets_is_zero():
    f = np.random.default_rng(0).normal(size=(40, 6))
    assert metrics.fid(f, f) == pytest.approx(0.0, abs=1e-9)


def test_trace_sqrt_product_matches_a_general_matrix_square_root():
    # Full (non-commuting) covariances: tr((S1 S2)^(1/2)) by scipy's general sqrtm.
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T, b @ b.T + 0.1 * np.eye(5)
    expected = np.trace(linalg.sqrtm(s1 @ s2)).real
    assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-8)
    # and with a singular S1 (rank 2)
    c = rng.normal(size=(5, 2))
    s1 = c @ c.T
    expected = np.trace(linalg.sqrtm(s1 @ s2)).real
    assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-6)


def test_kid_unbiased_mmd_by_hand():
    # D = 1, k(a, b) = (a b + 1)^3.  X = {0, 1}, Y = {1, 2}.
    # within X (i != j): k(0,1) twice = 2      / (2*1) = 1
    # within Y (i != j): k(1,2) = 27 twice = 54 / (2*1) = 27
    # across: k(0,1) + k(0,2) + k(1,1) + k(1,2) = 1 + 1 + 8 + 27 = 37 / 4 = 9.25
    # MMD^2_u = 1 + 27 - 2 * 9.25 = 9.5
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(9.5)
    # subsets of the whole sets are the sets: every subset gives 9.5
    result = metrics.kid(x, y, subset_size=10, num_subsets=3)
    assert (result.mean, result.std, result.subset_size) == (pytest.approx(9.5), 0.0, 2)


def test_kid_sets_of_different_sizes_can_be_negative():
    # X = {0, 1}, Y = {1, 2, 0}:
    # within Y: k(1,2)=27, k(1,0)=1, k(2,0)=1, each twice: 58 / (3*2) = 9.6667
    # across: x=0 -> 1+1+1; x=1 -> 8+27+1; total 39 / 6 = 6.5
    # MMD^2_u = 1 + 58/6 - 13 = -7/3
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0], [0.0]])
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(-7 / 3)


def test_kernel_divides_by_the_feature_dimension():
    # D = 2: k((1, 1), (2, 0)) = ((2 + 0) / 2 + 1)^3 = 8
    assert metrics.polynomial_kernel(np.array([[1.0, 1.0]]), np.array([[2.0, 0.0]]))[0, 0] == 8.0


def test_kid_is_deterministic_and_near_zero_for_one_distribution():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    r1 = metrics.kid(a, b, subset_size=20, num_subsets=10, seed=3)
    r2 = metrics.kid(a, b, subset_size=20, num_subsets=10, seed=3)
    assert r1 == r2
    shifted = metrics.kid(a, b + 3.0, subset_size=20, num_subsets=10, seed=3)
    assert abs(r1.mean) < 3 * r1.std + 1e-3 and shifted.mean > 10 * shifted.std


def test_compute_features_in_fixed_batches():
    seen = []

    def features_fn(batch):
        seen.append(batch.shape[0])
        return np.stack([batch.sum(axis=(1, 2, 3)), batch.max(axis=(1, 2, 3))], axis=1)

    images = np.arange(5 * 2 * 2 * 1, dtype=np.float32).reshape(5, 2, 2, 1)
    feats = metrics.compute_features(features_fn, images, batch_size=2)
    assert seen == [2, 2, 2]                # the last batch of 1 is padded to 2
    np.testing.assert_allclose(feats, features_fn(images))
    with pytest.raises(ValueError, match=r"features_fn must return \(batch, D\) features"):
        metrics.compute_features(lambda b: b, images, batch_size=2)


def test_realism_errors_name_the_problem():
    good = np.zeros((3, 2))
    with pytest.raises(ValueError,
                       match="feature dimensions differ: features_1 has 2, features_2 has 3"):
        metrics.fid(good, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="features_2 has 1 rows; at least 2 are needed"):
        metrics.fid(good, np.zeros((1, 2)))
    bad = good.copy()
    bad[1, 0] = math.nan
    with pytest.raises(ValueError, match=r"features_1 has non-finite values \(first in row 1\)"):
        metrics.kid(bad, good)
