"""COUT, MNAC, the non-adversarial rate and ground-truth fidelity, computed by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax import metrics

# --- COUT -------------------------------------------------------------------------------------

def target_probability(images):
    """q = 0.1 + 0.5 * pixel_0 + 0.4 * pixel_1 on (N, 1, 2, 1) images."""
    flat = images.reshape(images.shape[0], -1)
    return 0.1 + 0.5 * flat[:, 0] + 0.4 * flat[:, 1]


def softmax_logits(images):
    q = target_probability(images)
    return jnp.stack([jnp.log(1 - q), jnp.log(q)], axis=-1)   # softmax = (1 - q, q)


def sigmoid_logits(images):
    q = target_probability(images)
    return (jnp.log(q) - jnp.log(1 - q))[:, None]              # sigmoid = q


ORIGINALS = np.zeros((2, 1, 2, 1), np.float32)
# image 0 changes pixel 0 most (1.0 > 0.5); image 1 changes pixel 1 most (1.0 > 0.2)
COUNTERFACTUALS = np.array([[1.0, 0.5], [0.2, 1.0]], np.float32).reshape(2, 1, 2, 1)
# 2 pixels, num_steps = 2 -> step 1 pixel; fractions 0, 1/2, 1.
# image 0: x(0) = (0, 0), x(1) = (1, 0), x(2) = (1, .5): q = .1, .6, .8
#   AUC(q) = .5 (.1 + .6) / 2 + .5 (.6 + .8) / 2 = .175 + .35 = .525
#   AUC(1-q) = .5 (.9 + .4) / 2 + .5 (.4 + .2) / 2 = .325 + .15 = .475   -> COUT = .05
# image 1: x(1) = (0, 1), x(2) = (.2, 1): q = .1, .5, .6
#   AUC(q) = .5 (.1 + .5) / 2 + .5 (.5 + .6) / 2 = .15 + .275 = .425
#   AUC(1-q) = .5 (.9 + .5) / 2 + .5 (.5 + .4) / 2 = .35 + .225 = .575  -> COUT = -.15
EXPECTED_COUT = [0.05, -0.15]


def test_cout_softmax_head_by_hand():
    curves = metrics.transition_curves(softmax_logits, ORIGINALS, COUNTERFACTUALS,
                                       target=[1, 1], source=[0, 0], num_steps=2)
    np.testing.assert_allclose(curves["fraction"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curves["target"], [[0.1, 0.6, 0.8], [0.1, 0.5, 0.6]], rtol=1e-5)
    value = metrics.cout(softmax_logits, ORIGINALS, COUNTERFACTUALS, target=[1, 1],
                         source=[0, 0], num_steps=2)
    np.testing.assert_allclose(value, EXPECTED_COUT, atol=1e-6)


def test_cout_sigmoid_head_reads_the_source_decision_off_the_original():
    # attribute 0, logit(q): decision on the original (q = .1) is 0, so P_src = 1 - q and
    # P_tgt = q: the same curves and values as the softmax head.
    value = metrics.cout(sigmoid_logits, ORIGINALS, COUNTERFACTUALS, target=[0, 0],
                         head="multilabel", num_steps=2)
    np.testing.assert_allclose(value, EXPECTED_COUT, atol=1e-6)


def test_cout_insertion_order_follows_the_change():
    # x' = (.5, 1): pixel 1 changed most and goes first.
    # x(1) = (0, 1): q = .5; x(2) = (.5, 1): q = .75
    #   AUC(q) = .5 (.1 + .5) / 2 + .5 (.5 + .75) / 2 = .15 + .3125 = .4625
    #   AUC(1-q) = .5 (.9 + .5) / 2 + .5 (.5 + .25) / 2 = .35 + .1875 = .5375  -> -.075
    # (pixel 0 first would give x(1) = (.5, 0), q = .35 and COUT = .3875 - .6125 = -.225)
    x_cf = np.array([[0.5, 1.0]], np.float32).reshape(1, 1, 2, 1)
    value = metrics.cout(softmax_logits, ORIGINALS[:1], x_cf, target=[1], source=[0],
                         num_steps=2)
    np.testing.assert_allclose(value, [-0.075], atol=1e-6)


def test_cout_steps_when_they_do_not_divide_the_pixels():
    # 5 pixels, 2 steps -> step floor(5/2) = 2 pixels; counts 0, 2, 4, 5
    x = np.zeros((1, 1, 5, 1), np.float32)
    curves = metrics.transition_curves(
        lambda im: jnp.zeros((im.shape[0], 2)), x, x + 0.5, target=[1], source=[0], num_steps=2)
    np.testing.assert_allclose(curves["fraction"], [0.0, 0.4, 0.8, 1.0])
    # constant probability 1/2 for both decisions -> COUT 0
    assert metrics.area_under_curve(curves["fraction"], curves["target"])[0] == pytest.approx(0.5)


def test_cout_errors():
    with pytest.raises(ValueError, match="a softmax head needs source"):
        metrics.cout(softmax_logits, ORIGINALS, COUNTERFACTUALS, target=[1, 1])
    with pytest.raises(ValueError, match="a sigmoid head takes no source"):
        metrics.cout(sigmoid_logits, ORIGINALS, COUNTERFACTUALS, target=[0, 0], source=[0, 0],
                     head="multilabel")
    with pytest.raises(ValueError, match=r"target index out of range for 2 outputs: \[2\]"):
        metrics.cout(softmax_logits, ORIGINALS, COUNTERFACTUALS, target=[2, 2], source=[0, 0])


# --- MNAC -------------------------------------------------------------------------------------

ORACLE_ORIGINAL = np.array([[1.0, -1.0, 2.0],
                            [-1.0, -1.0, -1.0]])
ORACLE_COUNTERFACTUAL = np.array([[-1.0, -1.0, 3.0],
                                  [1.0, 1.0, -1.0]])


def test_mnac_by_hand():
    # decisions (logit > 0): row 0: (1,0,1) -> (0,0,1): 1 change (attribute 0)
    #                        row 1: (0,0,0) -> (1,1,0): 2 changes (attributes 0, 1)
    np.testing.assert_array_equal(
        metrics.attributes_changed(ORACLE_ORIGINAL, ORACLE_COUNTERFACTUAL), [1, 2])
    assert metrics.mnac(ORACLE_ORIGINAL, ORACLE_COUNTERFACTUAL) == 1.5
    # excluding the target attribute 0 everywhere: (0, 1) -> 0.5
    assert metrics.mnac(ORACLE_ORIGINAL, ORACLE_COUNTERFACTUAL, exclude=0) == 0.5
    # per row: nothing excluded in row 0, attribute 1 in row 1: (1, 1) -> 1.0
    assert metrics.mnac(ORACLE_ORIGINAL, ORACLE_COUNTERFACTUAL, exclude=[-1, 1]) == 1.0


def test_mnac_threshold_is_strict():
    # sigmoid(0) = 0.5 is not > 0.5: logit 0 and logit -1 are the same decision
    assert metrics.attributes_changed([[0.0]], [[-1.0]])[0] == 0
    assert metrics.attributes_changed([[0.0]], [[1e-3]])[0] == 1
    with pytest.raises(ValueError, match=r"exclude must be attribute indices in 0..2"):
        metrics.mnac(ORACLE_ORIGINAL, ORACLE_COUNTERFACTUAL, exclude=3)


# --- non-adversarial rate ---------------------------------------------------------------------

def test_non_adversarial_rate_by_hand():
    valid = np.array([True, True, False, True])
    # surrogate logits on the counterfactuals; target class 1 for all
    surrogate = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 5.0], [-1.0, 0.0]])
    flipped = metrics.surrogate_flips(surrogate, np.array([1, 1, 1, 1]), kind="class")
    np.testing.assert_array_equal(flipped, [True, False, True, True])
    # among the 3 valid ones, rows 0 and 3 also flip the surrogate: 2/3 (row 2 is not valid)
    assert metrics.non_adversarial_rate(valid, flipped) == pytest.approx(2 / 3)
    assert math.isnan(metrics.non_adversarial_rate([False, False], [True, True]))
    with pytest.raises(ValueError, match="valid and surrogate_flipped must have the same shape"):
        metrics.non_adversarial_rate([True], [True, False])


# --- ground-truth fidelity --------------------------------------------------------------------

def test_factor_changes_by_hand():
    # 2 x 2 grey image; factor 0 ("square") is pixel (0, 0), factor 1 ("background") the rest.
    masks = np.array([[[1, 0], [0, 0]],
                      [[0, 1], [1, 1]]], np.float32)
    x = np.full((1, 2, 2, 1), 0.5, np.float32)
    x_cf = x + np.array([[0.3, 0.2], [0.2, 0.2]], np.float32)[None, :, :, None]
    out = metrics.factor_changes(x, x_cf, masks)
    # energy: square 0.09; background 3 * 0.04 = 0.12; total 0.21
    np.testing.assert_allclose(out["share"], [[0.09 / 0.21, 0.12 / 0.21]], rtol=1e-5)
    # intensity: square sqrt(0.09) = 0.3; background sqrt(0.12 / 3) = 0.2
    np.testing.assert_allclose(out["intensity"], [[0.3, 0.2]], rtol=1e-5)
    # the background holds more energy, but the square's value moved more
    np.testing.assert_array_equal(out["dominant"], [0])
    unchanged = metrics.factor_changes(x, x, masks)
    assert int(unchanged["dominant"][0]) == -1 and np.all(np.isnan(unchanged["share"]))


def test_factors_found_by_the_attempts():
    dominant = np.array([[0, 1], [0, 0], [1, -1]])
    success = np.array([[True, True], [True, False], [False, True]])
    out = metrics.factors_found(dominant, success, num_factors=2)
    # image 0 finds both; image 1 only factor 0; image 2: the successful attempt changed nothing
    np.testing.assert_array_equal(out["found"], [[True, True], [True, False], [False, False]])
    np.testing.assert_array_equal(out["all_found"], [True, False, False])
    # a classifier that uses only factor 0
    out = metrics.factors_found(dominant, success, 2, used_factors=[True, False])
    np.testing.assert_array_equal(out["all_found"], [True, True, False])


def test_ground_truth_errors():
    x = np.zeros((1, 2, 2, 1), np.float32)
    with pytest.raises(ValueError,
                       match=r"factor_masks must be \(\.\.\., F, H, W\) with \(H, W\) = \(2, 2\)"):
        metrics.factor_changes(x, x, np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="factor_masks must be binary"):
        metrics.factor_changes(x, x, np.full((2, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"dominant factors must be in -1..1"):
        metrics.factors_found(np.array([[2]]), np.array([[True]]), 2)
