"""The generative prior in the search, on toy models whose answers are known.

The toy prior is the exact rectified-flow velocity of a Gaussian data distribution with
per-channel variances ``s_c^2`` (``z_t = (1 - t) z + t eps``)::

    v(z_t, t) = E[eps - z | z_t] = (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2) * z_t

For ``s = 0`` (a channel the data never uses) this is ``z_t / t``, which Euler integrates
exactly to 0 at ``t = 0`` whatever the number of steps: the prior's clean prediction removes
that channel, so a search with the prior can only make edits the "data" could contain.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax import Explainer
from sce_jax.search import config as search_config
from sce_jax.search import prior_step
from tests.search_helpers import small_config
from tests.toy_models import gaussian_prior, greenish_images, mean_colour_classifier, toy_generator


@pytest.fixture(scope="module")
def generator():
    return toy_generator()


def test_strength_zero_is_the_identity_and_the_time_grid_ends_at_zero():
    z = jax.random.normal(jax.random.key(0), (2, 2, 2, 3))
    out = prior_step.clean_prediction(lambda *a: jnp.full_like(z, jnp.nan), z, z, strength=0.0,
                                      steps=3, shift=3.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(z))
    times = np.asarray(prior_step.time_grid(0.5, 4, 3.0))
    assert times[-1] == 0 and np.all(np.diff(times) < 0)
    assert times[0] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))  # the shifted schedule


def test_clean_prediction_lands_on_the_data_of_an_exact_velocity():
    # Data = a single point c: v = (z_t - c) / t, and Euler reaches c exactly at t = 0.
    c = jnp.full((1, 2, 2, 3), 0.7)
    velocity = lambda z_t, t, ctx: (z_t - c) / t[:, None, None, None]  # noqa: E731
    z = jax.random.normal(jax.random.key(1), c.shape)
    eps = jax.random.normal(jax.random.key(2), c.shape)
    for steps in (1, 3):
        out = prior_step.clean_prediction(velocity, z, eps, strength=0.6, steps=steps, shift=2.0)
        np.testing.assert_allclose(np.asarray(out), 0.7, atol=1e-5)


def test_the_prior_keeps_edits_on_the_data_manifold(generator):
    clf = mean_colour_classifier()
    x = greenish_images(3, seed=4)
    z0 = np.asarray(generator.encode(jnp.asarray(x)))
    config = small_config(steps=80)
    config.mask.enabled = False
    plain = Explainer(generator, clf, config).explain(x, targets=[1, 1, 1])
    config.prior.enabled = True
    config.prior.strength = 0.5
    config.prior.denoise_steps = 2
    with_prior = Explainer(generator, clf, config, prior=gaussian_prior()).explain(
        x, targets=[1, 1, 1])
    assert plain.success[:, 0].all() and with_prior.success[:, 0].all()
    edit_plain = plain.latent[:, 0] - z0
    edit_prior = with_prior.latent[:, 0] - z0
    # Without the prior the search also moves channel 2 (the decoder's mixing lets it redden);
    # with it, the edit has no component the data lacks.
    assert np.abs(edit_plain[..., 2]).max() > 0.01
    assert np.abs(edit_prior[..., 2]).max() < 1e-4
    # What the classifier judged is what is returned, and it is the target.
    logits = np.asarray(clf.logits(jnp.asarray(with_prior.image[:, 0])))
    assert (logits.argmax(-1) == 1).all()


def test_strength_zero_reproduces_the_search_without_prior(generator):
    clf = mean_colour_classifier()
    x = greenish_images(2, seed=5)
    config = small_config(steps=30)
    off = Explainer(generator, clf, config).explain(x, targets=[1, 1])
    config.prior.enabled = True
    config.prior.strength = 0.0
    zero = Explainer(generator, clf, config, prior=gaussian_prior()).explain(x, targets=[1, 1])
    for a, b in zip(off, zero):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prior_results_do_not_depend_on_the_batch(generator):
    clf = mean_colour_classifier()
    x = greenish_images(3, seed=6)
    config = small_config(steps=30)
    config.prior.enabled = True
    config.prior.every = 2
    explainer = Explainer(generator, clf, config, prior=gaussian_prior())
    together = explainer.explain(x, targets=[1, 1, 1], example_ids=[7, 8, 9])
    alone = explainer.explain(x[1:2], targets=[1], example_ids=[8])
    np.testing.assert_allclose(together.image[1], alone.image[0], atol=1e-4)  # fusion order
    assert together.steps[1, 0] == alone.steps[0, 0]


def test_a_prior_that_is_enabled_must_be_given(generator):
    config = small_config()
    config.prior.enabled = True
    with pytest.raises(ValueError, match="no prior was given"):
        Explainer(generator, mean_colour_classifier(), config)


@pytest.mark.parametrize("key, value, message", [
    ("prior.strength", 1.5, "prior.strength"),
    ("prior.denoise_steps", 0, "prior.denoise_steps"),
    ("prior.every", 0, "prior.every"),
    ("goal_probability", 1.2, "goal_probability"),
    ("boundary_margin", -0.1, "boundary_margin"),
])
def test_prior_and_goal_values_are_checked(key, value, message):
    with pytest.raises(search_config.SearchConfigError, match=message):
        search_config.settings_from_config(small_config(**{key: value}))


def test_originals_near_the_boundary_are_flagged(generator):
    clf = mean_colour_classifier()
    x = greenish_images(2, seed=7)
    x[0, ..., 0] = x[0, ..., 1] - 0.002  # p(red) just under 1/2: near the boundary
    result = Explainer(generator, clf, small_config(steps=5)).explain(x, targets=[1, 1])
    assert 0.4 < result.prob_before[0] < 0.5 and result.prob_before[1] < 0.05
    assert result.near_boundary.tolist() == [True, False]
