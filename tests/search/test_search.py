"""The search engine on toy models with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sce_jax
from sce_jax import Explainer
from sce_jax.data import image_io
from sce_jax.search import config as search_config
from sce_jax.search import objectives, smoothing
from sce_jax.search.smoothing import StepInputs
from tests.search_helpers import plain_objective, small_config, two_reasons
from tests.toy_models import (
    greenish_images,
    mean_colour_classifier,
    toy_generator,
    weighted_colour_classifier,
)


@pytest.fixture(scope="module")
def generator():
    return toy_generator()


def test_reaches_the_target_of_a_known_classifier(generator):
    clf = mean_colour_classifier()
    x = greenish_images(3)
    result = Explainer(generator, clf, small_config()).explain(x, targets=[1, 1, 1])
    assert result.prediction.tolist() == [0, 0, 0]
    assert result.success[:, 0].all()
    assert (result.prob_after[:, 0] > 0.5).all() and (result.prob_before < 0.5).all()
    # The classifier on the returned image agrees with what the result says.
    logits = np.asarray(clf.logits(jnp.asarray(result.image[:, 0])))
    assert (logits.argmax(-1) == 1).all()
    # The change made the image redder than greener, the only thing this classifier reads.
    d = result.image[:, 0] - x
    assert (d[..., 0].mean((1, 2)) - d[..., 1].mean((1, 2)) > 0).all()


def _step_inputs(generator, x, target):
    z0 = generator.encode(jnp.asarray(x))
    decoded0 = generator.decode(z0)
    keys = jax.vmap(lambda e: jax.random.fold_in(jax.random.key(0), e))(jnp.arange(x.shape[0]))
    mask = jnp.ones(x.shape[:3] + (1,))
    return StepInputs(jnp.asarray(x), z0, decoded0, mask, jnp.asarray(target, jnp.int32),
                      jnp.zeros(x.shape[0]), keys)


@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_sigma_zero_single_sample_is_the_plain_gradient(generator, space):
    clf = mean_colour_classifier()
    x = greenish_images(2)
    inp = _step_inputs(generator, x, [1, 1])
    settings = search_config.settings_from_config(
        small_config(**{"smoothing.space": space, "smoothing.num_samples": 1,
                        "smoothing.sigma": 0.0, "l1": 0.3, "l2": 0.2, "pixel_l1": 0.5}))
    z = inp.z0 + 0.05 * jax.random.normal(jax.random.key(1), inp.z0.shape)
    fns = dict(decode=generator.decode, logits_fn=clf.logits, settings=settings, kind="class")
    out = smoothing.objective_gradient(z, 0, inp, **fns)
    reference = jax.grad(plain_objective)(z, inp, **fns)
    if space == "pixel":  # the same operations in the same order: bit for bit
        np.testing.assert_array_equal(np.asarray(out.grad), np.asarray(reference))
    else:  # the pixel-L1 cotangent is pulled back separately: equal up to rounding
        np.testing.assert_allclose(np.asarray(out.grad), np.asarray(reference), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("space,chunk", [("pixel", 0), ("pixel", 3), ("latent", 2)])
def test_smoothed_gradient_is_the_mean_of_per_sample_gradients(generator, space, chunk):
    """Against a Python loop over the same noise draws (chunking must not change the result)."""
    weights = np.zeros((16, 16), np.float32)
    weights[:8] = 1.0
    clf = weighted_colour_classifier(weights)
    # A non-linear classifier makes the noisy gradients differ from the clean one.
    logits_fn = lambda im: jnp.tanh(clf.logits(im) + 3 * jnp.sum(im[..., :1] ** 2, axis=(1, 2)) / 256)
    x = greenish_images(2)
    inp = _step_inputs(generator, x, [1, 0])
    n, sigma, step = 5, 0.3, 7
    settings = search_config.settings_from_config(
        small_config(**{"smoothing.space": space, "smoothing.num_samples": n,
                        "smoothing.sigma": sigma, "smoothing.chunk_size": chunk, "l2": 0.0}))
    z = inp.z0
    out = smoothing.objective_gradient(z, step, inp, decode=generator.decode, logits_fn=logits_fn,
                                       settings=settings, kind="class")

    def cls_sum(images):
        from sce_jax.search import targets
        return jnp.sum(targets.target_loss(logits_fn(images), inp.target, inp.value, kind="class",
                                           temperature=settings.temperature))

    def forward(latent):
        from sce_jax.search.objectives import compose_output
        return compose_output(inp.x, generator.decode(latent), inp.decoded0, inp.mask, mode="residual")

    grads = []
    for i in range(n):
        if space == "pixel":
            eps = jnp.stack([jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, step), i),
                                               x.shape[1:]) for k in inp.keys])
            g_x = jax.grad(cls_sum)(forward(z) + sigma * eps)
            grads.append(jax.vjp(forward, z)[1](g_x)[0])
        else:
            eps = jnp.stack([jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, step), i),
                                               z.shape[1:]) for k in inp.keys])
            grads.append(jax.grad(lambda lat: cls_sum(forward(lat)))(z + sigma * eps))
    expected = np.mean(np.stack(grads), axis=0)
    np.testing.assert_allclose(np.asarray(out.grad), expected, rtol=1e-5, atol=1e-7)
    # and the noise mattered: the smoothed gradient is not the clean one
    clean = jax.vjp(forward, z)[1](jax.grad(cls_sum)(forward(z)))[0]
    assert np.abs(np.asarray(clean) - expected).max() > 1e-2 * np.abs(expected).max()


def test_early_stopped_examples_do_not_change_and_one_trace_per_shape(generator):
    clf = mean_colour_classifier()
    x = greenish_images(4)
    x[0, ..., 0] = 0.45  # nearly red already: succeeds in a few steps
    x[0, ..., 1] = 0.5
    config = small_config(steps=40, learning_rate=0.02)
    config.mask.enabled = False
    explainer = Explainer(generator, clf, config)
    r40 = explainer.explain(x, targets=[1] * 4)
    assert r40.success[0, 0] and r40.steps[0, 0] < r40.steps[1:, 0].min()
    config.steps = 60
    longer = Explainer(generator, clf, config).explain(x, targets=[1] * 4)
    np.testing.assert_array_equal(longer.image[0], r40.image[0])
    assert longer.steps[0, 0] == r40.steps[0, 0]
    # the same shape again: no new trace; a new batch shape: exactly one more
    explainer.explain(x + 0.01, targets=[1] * 4)
    assert explainer.trace_count == 1
    explainer.explain(x[:2], targets=[1] * 2)
    assert explainer.trace_count == 2


def test_the_mask_leaves_unchanged_regions_bit_identical(generator):
    weights = np.zeros((16, 16), np.float32)
    weights[4:8, 8:12] = 1.0  # the classifier reads one 4x4 block only
    clf = weighted_colour_classifier(weights)
    x = greenish_images(2, seed=3)
    config = small_config(steps=80)
    config.mask.threshold = 0.3
    config.mask.blur_sigma = 0.5
    config.mask.soft_border = 0.0
    config.mask.dilation = 0
    result = Explainer(generator, clf, config).explain(x, targets=[1, 1])
    assert result.success[:, 0].all()
    changed = np.any(result.image[:, 0] != x, axis=-1)
    assert changed[:, 4:8, 8:12].all()
    outside = np.ones((16, 16), bool)
    outside[2:10, 6:14] = False  # the block, plus the blur's reach
    assert not changed[:, outside].any()
    np.testing.assert_array_equal(result.image[:, 0][:, outside], x[:, outside])


def test_region_targeted_output_is_identical_outside_the_region(generator):
    clf = mean_colour_classifier()
    x = greenish_images(2, seed=1)
    region = np.zeros((2, 16, 16), np.float32)
    region[:, :, :8] = 1.0  # only the left half may change
    result = Explainer(generator, clf, small_config(steps=80)).explain(x, targets=[1, 1], regions=region)
    assert result.success[:, 0].all()
    np.testing.assert_array_equal(result.image[:, 0, :, 8:], x[:, :, 8:])
    assert np.any(result.image[:, 0, :, :8] != x[:, :, :8])


def test_second_attempt_changes_a_region_disjoint_from_the_first(generator):
    # a strong reason (block (0, 0)) and a weaker one far from it (block (3, 3)), images close
    # to the boundary (either block alone can flip them), small steps so that the mask has
    # narrowed attempt 1 to the strong block before it succeeds
    clf, x, config = two_reasons()
    result = Explainer(generator, clf, config).explain(x, targets=[1, 1])
    assert result.success.all(), result.prob_after
    first = np.any(result.image[:, 0] != x, axis=-1)
    second = np.any(result.image[:, 1] != x, axis=-1)
    assert first[:, 0:4, 0:4].all() and second[:, 12:16, 12:16].all()
    assert not (first & second).any()


def test_nonfinite_example_fails_alone(generator):
    clf = mean_colour_classifier()
    x = greenish_images(3)
    clean = Explainer(generator, clf, small_config()).explain(x, targets=[1, 1, 1])
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    result = Explainer(generator, clf, small_config()).explain(bad, targets=[1, 1, 1])
    assert result.nonfinite[1, 0] and not result.success[1, 0]
    assert not result.nonfinite[[0, 2], 0].any()
    np.testing.assert_allclose(result.image[[0, 2]], clean.image[[0, 2]], atol=1e-6)


def test_inf_logit_marks_only_that_example_failed(generator):
    base = mean_colour_classifier()
    level = np.float32(31) / np.float32(255)

    def logits(params, images):
        out = base.logits_fn(params, images)
        # an example whose top-left pixel is exactly 31/255 in red (an 8-bit level: the judged,
        # rounded image keeps it) makes the network blow up
        blow = jnp.abs(images[:, 0, 0, 0] - level) < 1e-6
        return jnp.where(blow[:, None], jnp.inf, out)

    clf = sce_jax.Classifier.from_function(logits, base.params, num_outputs=2)
    x = greenish_images(3)
    x[2, :4, :4, 0] = level
    result = Explainer(generator, clf, small_config()).explain(x, targets=[1, 1, 1])
    assert result.nonfinite[2, 0] and not result.success[2, 0]
    assert result.success[:2, 0].all()
    np.testing.assert_array_equal(result.image[2, 0], x[2])


def test_other_and_flip_targets():
    gen = toy_generator()
    clf = mean_colour_classifier()
    x = greenish_images(2)
    other = Explainer(gen, clf, small_config()).explain(x)  # kind "other": leave the prediction
    assert other.target.tolist() == [0, 0] and other.success[:, 0].all()
    assert (other.prediction_after[:, 0] == 1).all()
    # a single-logit sigmoid head: flip attribute 0
    attr = sce_jax.Classifier.from_function(lambda p, im: clf.logits_fn(p, im)[:, 1:] * 2,
                                            clf.params, head="multilabel", num_outputs=1)
    flip = Explainer(gen, attr, small_config()).explain(x, targets=[0, 0])
    assert flip.target_value.tolist() == [1.0, 1.0] and flip.success[:, 0].all()


def test_config_errors_name_the_problem():
    with pytest.raises(search_config.SearchConfigError, match=r"unknown search config key.*'stpes'"):
        search_config.settings_from_config({"stpes": 3})
    with pytest.raises(search_config.SearchConfigError, match=r"smoothing.spac"):
        search_config.settings_from_config({"smoothing": {"spac": "pixel"}})
    with pytest.raises(search_config.SearchConfigError, match=r"output_mode='resid'"):
        search_config.settings_from_config({"output_mode": "resid"})
    # every number must be finite: NaN passes a `value < minimum` test, so it is named
    for key, value, message in [("learning_rate", float("nan"), "must be a finite number"),
                                ("temperature", float("inf"), "must be a finite number"),
                                ("smoothing", {"sigma": float("nan")}, r"smoothing.sigma=nan"),
                                ("mask", {"threshold": float("-inf")}, r"mask.threshold=-inf"),
                                ("steps", 0, r"steps=0: must be in \[1, 2147483647\]"),
                                ("attempts", 0, r"attempts=0: must be in \[1, "),
                                ("learning_rate", -1.0, r"learning_rate=-1.0: must be > 0"),
                                ("temperature", 0.0, r"temperature=0.0: must be > 0"),
                                ("smoothing", {"num_samples": 0}, r"num_samples=0: must be in \[1, "),
                                ("optimizer", "rmsprop", r"optimizer='rmsprop': must be one of")]:
        with pytest.raises(search_config.SearchConfigError, match=message):
            search_config.settings_from_config({key: value})
    with pytest.raises(ValueError, match=r"target class 5 is out of range"):
        Explainer(toy_generator(), mean_colour_classifier()).explain(greenish_images(1), targets=[5])
    with pytest.raises(ValueError, match=r"not a multiple of toy's downsampling factor 4"):
        Explainer(toy_generator(), mean_colour_classifier()).explain(np.zeros((1, 10, 16, 3)), targets=[1])


def _written_probability(clf, images):
    """p(class 1) of the images as written to 8-bit files and read back."""
    written = image_io.to_uint8(images).astype(np.float32) / 255.0
    return np.asarray(jax.nn.softmax(clf.logits(jnp.asarray(written)))[:, 1])


def test_success_is_judged_on_the_image_as_written(generator):
    """A classifier that reads a 4x4 block at 3000x gain: a float stop just past the goal reads
    p = 0.5 once rounded to 8 bits. Judged on the rounded image, every success holds when saved."""
    weights = np.zeros((16, 16), np.float32)
    weights[:4, :4] = 1.0
    clf = weighted_colour_classifier(weights, scale=3000.0)
    x = greenish_images(16, seed=3)
    x[:, :4, :4, 0] = x[:, :4, :4, 1] - np.linspace(0.005, 0.015, 16)[:, None, None]
    settings = {"goal_probability": 0.9, "mask.enabled": False, "smoothing.space": "none",
                "optimizer": "adam", "learning_rate": 3e-4, "steps": 200}

    floats = Explainer(generator, clf, small_config(judge_8bit=False, **settings)).explain(
        x, targets=[1] * 16)
    assert floats.success[:, 0].all()
    assert (_written_probability(clf, floats.image[:, 0]) < 0.9).any()  # the failure guarded

    judged = Explainer(generator, clf, small_config(**settings)).explain(x, targets=[1] * 16)
    assert judged.success[:, 0].all()
    written = _written_probability(clf, judged.image[:, 0])
    assert (written >= 0.9).all(), written
    np.testing.assert_allclose(judged.prob_after[:, 0], written, atol=1e-6)


def test_judged_image_rounds_like_the_png_writer():
    x = np.array([0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.49999, 1.0, 1.2, -0.1], np.float32)
    judged = np.asarray(objectives.judged_image(jnp.asarray(x), judge_8bit=True))
    np.testing.assert_array_equal(judged, image_io.to_uint8(x).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.asarray(objectives.judged_image(jnp.asarray(x), judge_8bit=False)), x)


def test_normalised_steps_do_not_stall_on_a_flat_classifier(generator):
    """A classifier whose input gradient is tiny (scale 0.01): raw SGD steps barely move the
    latent in 40 steps; unit-norm steps of the same learning rate cross the boundary."""
    clf = mean_colour_classifier(scale=0.01)
    x = greenish_images(3, seed=2)
    settings = {"learning_rate": 0.2, "steps": 40, "l2": 0.0}
    raw = Explainer(generator, clf, small_config(**settings)).explain(x, targets=[1] * 3)
    unit = Explainer(generator, clf, small_config(normalize_gradient=True, **settings)).explain(
        x, targets=[1] * 3)
    assert not raw.success[:, 0].any() and (raw.latent_l2[:, 0] < 0.1).all()
    assert unit.success[:, 0].all() and (unit.steps[:, 0] < 40).all()
