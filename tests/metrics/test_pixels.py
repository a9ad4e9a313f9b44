"""Validity, proximity, sparsity and diversity on tiny inputs with hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax import metrics


def image(values):
    """A (1, H, W, C) image from an (H, W) or (H, W, C) nested list."""
    a = np.asarray(values, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    return a[None]


# --- validity ---------------------------------------------------------------------------------

LOGITS = np.array([[2.0, 1.0, 0.0],
                   [0.0, 3.0, 1.0],
                   [1.0, 0.0, 5.0]])


def test_validity_class_and_other_targets():
    # argmax per row: 0, 1, 2.
    target = np.array([0, 0, 2])
    # "class": argmax == target  -> [0 == 0, 1 == 0, 2 == 2]
    np.testing.assert_array_equal(metrics.reaches_target(LOGITS, target, kind="class"),
                                  [True, False, True])
    # "other" (target = the class to leave): argmax != target
    np.testing.assert_array_equal(metrics.reaches_target(LOGITS, target, kind="other"),
                                  [False, True, False])
    assert metrics.flip_rate([True, False, True]) == pytest.approx(2 / 3)
    assert math.isnan(metrics.flip_rate([]))


def test_validity_goal_probability():
    # softmax([2, 1, 0])_0 = e^2 / (e^2 + e + 1) = 7.389 / 11.107 = 0.6652
    p0 = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    target = np.array([0, 0, 2])
    for goal, expected_first in ((p0 - 1e-3, True), (p0 + 1e-3, False)):
        valid = metrics.reaches_target(LOGITS, target, kind="class", goal_probability=goal)
        assert bool(valid[0]) is expected_first


def test_validity_sigmoid_flip():
    logits = np.array([[0.5, -1.0],
                       [-2.0, 3.0]])
    # row 0: attribute 0, logit 0.5 -> decision 1, wanted 0 -> not valid
    # row 1: attribute 1, logit 3.0 -> decision 1, wanted 1 -> valid
    valid = metrics.reaches_target(logits, np.array([0, 1]), np.array([0, 1]), kind="flip")
    np.testing.assert_array_equal(valid, [False, True])


def test_validity_judges_the_8bit_image():
    # A constant image at 0.4 + 0.3/255 is stored as round(102.3) / 255 = 0.4.
    # The classifier says class 1 iff mean(x) > 0.4 + 0.1/255: true in float, false in 8 bits.
    x = jnp.full((1, 2, 2, 1), 0.4 + 0.3 / 255.0)

    def logits_fn(images):
        score = jnp.mean(images, axis=(1, 2, 3)) - (0.4 + 0.1 / 255.0)
        return jnp.stack([jnp.zeros_like(score), 1000.0 * score], axis=-1)

    target = np.array([1])
    assert not metrics.validity(logits_fn, x, target, kind="class")[0]
    assert metrics.validity(logits_fn, x, target, kind="class", quantise=False)[0]
    assert float(metrics.quantise_8bit(x)[0, 0, 0, 0]) == pytest.approx(102 / 255)


def test_validity_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"target index 3 is out of range for 3 outputs \(0..2\)"):
        metrics.reaches_target(LOGITS, np.array([0, 3, 1]), kind="class")
    with pytest.raises(ValueError, match="kind 'flip' needs value"):
        metrics.reaches_target(LOGITS, np.array([0, 1, 1]), kind="flip")
    with pytest.raises(ValueError, match="unknown target kind 'reach'"):
        metrics.reaches_target(LOGITS, np.array([0, 1, 1]), kind="reach")
    with pytest.raises(ValueError, match="2 targets for 3 rows of logits"):
        metrics.reaches_target(LOGITS, np.array([0, 1]), kind="class")


# --- proximity --------------------------------------------------------------------------------

def test_proximity_pixels_and_latents():
    x = image([[0.0, 0.0], [0.0, 0.0]])
    x_cf = image([[0.1, 0.2], [0.0, -0.4]])
    out = metrics.proximity(x, x_cf, latent_original=x, latent_counterfactual=2 * x_cf)
    # L1 = (0.1 + 0.2 + 0 + 0.4) / 4 = 0.175;  L2 = sqrt(0.01 + 0.04 + 0.16) = sqrt(0.21)
    np.testing.assert_allclose(out["pixel_l1"], [0.175], rtol=1e-6)
    np.testing.assert_allclose(out["pixel_l2"], [math.sqrt(0.21)], rtol=1e-6)
    # latents: the change doubled -> both distances double
    np.testing.assert_allclose(out["latent_l1"], [0.35], rtol=1e-6)
    np.testing.assert_allclose(out["latent_l2"], [2 * math.sqrt(0.21)], rtol=1e-6)


def test_proximity_broadcasts_attempts():
    x = image([[0.5, 0.5]])                                  # (1, 1, 2, 1)
    attempts = np.stack([image([[0.5, 1.0]]), image([[0.0, 0.0]])], axis=1)  # (1, 2, 1, 2, 1)
    l1 = metrics.l1_distance(x[:, None], attempts)
    # attempt 0: (0 + 0.5) / 2 = 0.25; attempt 1: (0.5 + 0.5) / 2 = 0.5
    np.testing.assert_allclose(l1, [[0.25, 0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"give both latent_original and latent_counterfactual"):
        metrics.proximity(x, x, latent_original=x)


# --- sparsity ---------------------------------------------------------------------------------

def test_changed_fraction_uses_the_largest_channel():
    # 2 x 2 pixels, 2 channels; tau = 2/255 = 0.00784
    delta = np.array([[[0.5, 0.0], [0.001, 0.001]],
                      [[0.0, 0.0], [0.0, -0.01]]], np.float32)[None]
    x = np.full_like(delta, 0.5)
    # max_c |d| per pixel: 0.5, 0.001, 0, 0.01 -> above tau: 2 of 4 pixels
    np.testing.assert_allclose(metrics.changed_fraction(x, x + delta), [0.5])
    # with tau = 0.0005 the 0.001 pixel counts too: 3 of 4
    np.testing.assert_allclose(metrics.changed_fraction(x, x + delta, threshold=0.0005), [0.75])


def test_hoyer_sparsity_by_hand():
    x = image([[0.0, 0.0], [0.0, 0.0]])
    # d = (0.3, 0.4, 0, 0): ||d||_1 = 0.7, ||d||_2 = 0.5, n = 4:
    # H = (sqrt(4) - 0.7 / 0.5) / (sqrt(4) - 1) = (2 - 1.4) / 1 = 0.6
    np.testing.assert_allclose(metrics.hoyer_sparsity(x, image([[0.3, 0.4], [0.0, 0.0]])),
                               [0.6], rtol=1e-5)
    # one changed pixel -> 1; all pixels changed alike -> 0; nothing changed -> NaN
    np.testing.assert_allclose(metrics.hoyer_sparsity(x, image([[0.0, 0.9], [0.0, 0.0]])), [1.0])
    np.testing.assert_allclose(metrics.hoyer_sparsity(x, image([[0.2, -0.2], [0.2, 0.2]])),
                               [0.0], atol=1e-6)
    assert np.isnan(metrics.hoyer_sparsity(x, x)[0])


def test_hoyer_per_pixel_or_per_entry():
    x = np.zeros((1, 2, 2, 2), np.float32)
    x_cf = x.copy()
    x_cf[0, 0, 0] = [0.3, 0.4]        # one pixel changes in both channels
    # per pixel: magnitudes (0.5, 0, 0, 0) -> 1
    np.testing.assert_allclose(metrics.hoyer_sparsity(x, x_cf), [1.0], rtol=1e-6)
    # per entry: n = 8, (sqrt(8) - 0.7 / 0.5) / (sqrt(8) - 1) = (2.8284 - 1.4) / 1.8284
    expected = (math.sqrt(8) - 1.4) / (math.sqrt(8) - 1)
    np.testing.assert_allclose(metrics.hoyer_sparsity(x, x_cf, per_pixel=False), [expected],
                               rtol=1e-5)


# --- diversity --------------------------------------------------------------------------------

def attempts_from_changes(changes):
    """Originals (1, 1, 2, 1) at zero and counterfactuals (1, K, 1, 2, 1) = the changes."""
    x = np.zeros((1, 1, 2, 1), np.float32)
    cf = np.asarray(changes, np.float32).reshape(1, len(changes), 1, 2, 1)
    return x, cf


def test_diversity_by_hand():
    # d1 = (1, 0), d2 = (0, 1), d3 = (1, 1)
    x, cf = attempts_from_changes([[1, 0], [0, 1], [1, 1]])
    out = metrics.diversity(x, cf, only_successful=False)
    # 1 - |cos|: (d1, d2) -> 1; (d1, d3) and (d2, d3) -> 1 - 1/sqrt(2) = 0.29289
    expected_cos = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    np.testing.assert_allclose(out["diversity_cosine"], [expected_cos], rtol=1e-6)
    # pairwise L1 (mean over the 2 entries): |d1-d2| = (1,1) -> 1; (0,1) -> .5; (1,0) -> .5
    np.testing.assert_allclose(out["pairwise_l1"], [2 / 3], rtol=1e-6)
    # pairwise L2: sqrt(2), 1, 1
    np.testing.assert_allclose(out["pairwise_l2"], [(math.sqrt(2) + 2) / 3], rtol=1e-6)
    np.testing.assert_array_equal(out["num_attempts_used"], [3])


def test_diversity_excludes_failed_and_directionless_attempts():
    x, cf = attempts_from_changes([[1, 0], [0, 1], [1, 1]])
    # only attempts 1 and 2 succeeded: the single pair (d1, d2) -> 1 - 0 = 1
    out = metrics.diversity(x, cf, np.array([[True, True, False]]))
    np.testing.assert_allclose(out["diversity_cosine"], [1.0])
    np.testing.assert_allclose(out["pairwise_l1"], [1.0])
    # the sign and size of a change do not make it diverse: d and -2d -> 1 - |cos| = 0
    x, cf = attempts_from_changes([[0.5, 0.5], [-1.0, -1.0]])
    np.testing.assert_allclose(metrics.diversity(x, cf, only_successful=False)["diversity_cosine"],
                               [0.0], atol=1e-6)
    # an attempt that changed nothing has no direction: no cosine, but a distance
    x, cf = attempts_from_changes([[0.0, 0.0], [1.0, 0.0]])
    out = metrics.diversity(x, cf, only_successful=False)
    assert np.isnan(out["diversity_cosine"][0])
    np.testing.assert_allclose(out["pairwise_l1"], [0.5])
    # fewer than two successful attempts -> NaN
    out = metrics.diversity(x, cf, np.array([[False, True]]))
    assert np.isnan(out["diversity_cosine"][0]) and np.isnan(out["pairwise_l2"][0])


def test_diversity_errors():
    x, cf = attempts_from_changes([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="only_successful=True needs success"):
        metrics.diversity(x, cf)
    with pytest.raises(ValueError, match=r"success must have shape \(1, 2\)"):
        metrics.diversity(x, cf, np.array([True, True]))
    with pytest.raises(ValueError, match=r"expected \(1, K, 1, 2, 1\)"):
        metrics.diversity(x, np.zeros((1, 2, 2, 2, 1)))
