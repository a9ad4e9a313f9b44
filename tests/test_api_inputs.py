"""Explainer input checks: every per-example argument against the batch and the latent shape,
images in [0, 1], targets by index or class name; each error names the argument, before any
compilation (sce_jax.api_inputs). The classifier's output shape, checked when it is traced
(sce_jax.classifier), and a stream's misshaped image named by its index."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax import Classifier, Explainer, api_inputs, default_search_config
from sce_jax.class_names import ClassNameError
from sce_jax.classifier import ClassifierOutputError
from tests.toy_models import greenish_images, mean_colour_classifier, toy_generator


@pytest.fixture(scope="module")
def explainer():
    classifier = dataclasses.replace(mean_colour_classifier(), class_names=("green", "red"))
    return Explainer(toy_generator(), classifier, default_search_config())


def _prepare(explainer, images=None, kind="class", **kwargs):
    images = greenish_images(2) if images is None else images
    kwargs.setdefault("targets", [1, 1] if kind == "class" else None)
    return explainer.prepare_batch(images, kind=kind, **kwargs)


@pytest.mark.parametrize("images, message", [
    ((greenish_images(2) * 255).astype(np.uint8),
     r"images have dtype uint8; .* in \[0, 1\]: convert them with images.astype\(np.float32\) / 255"),
    ((greenish_images(2) * 65535).astype(np.uint16), r"dtype uint16; .* / 65535"),
    (greenish_images(2) * 255.0, r"images must lie in \[0, 1\]; their values span \[.*\] \(0..255 pixel values\? divide by 255\)"),
    (greenish_images(2) - 0.5, r"images must lie in \[0, 1\]; their values span \[-0.4"),
    (greenish_images(2)[..., 0], r"images must be \(B, H, W, C\), got shape \(2, 16, 16\) \(one grey image per row\? add the channel axis"),
    (np.zeros((0, 16, 16, 3), np.float32), r"empty batch"),
])
def test_bad_images_are_refused_by_name(explainer, images, message):
    with pytest.raises(ValueError, match=message):
        _prepare(explainer, images)


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=[1]), r"targets has 1 value\(s\) for 2 image\(s\); give one per image"),
    (dict(targets=1), r"targets must be one target per image, a sequence of length 2"),
    (dict(example_ids=[7]), r"example_ids has 1 value\(s\) for 2 image\(s\)"),
    (dict(regions=np.ones((1, 16, 16), np.float32)),
     r"regions must be \(B, H, W\[, 1\]\) = \(2, 16, 16\[, 1\]\), one mask per image; got shape \(1, 16, 16\)"),
    (dict(latents=np.zeros((2, 48), np.float32)),
     r"latents must have shape \(2, 4, 4, 3\) .*; got \(2, 48\)"),
    (dict(latents=np.zeros((1, 4, 4, 3), np.float32)), r"latents must have shape \(2, 4, 4, 3\)"),
    (dict(valid=[True]), r"valid has 1 value\(s\) for 2 image\(s\)"),
    (dict(targets=[1, 5]), r"target class 5 is out of range"),
])
def test_per_example_inputs_are_checked_against_the_batch(explainer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _prepare(explainer, **kwargs)


def test_targets_by_class_name(explainer):
    batch, size = _prepare(explainer, targets=["red", "Green"])
    assert size == 2 and np.asarray(batch.targets).tolist()[:2] == [1, 0]
    with pytest.raises(ClassNameError, match=r"target 'blue' is not a class name; the classes are: "
                                             r"green \(0\), red \(1\)"):
        _prepare(explainer, targets=["red", "blue"])


def test_a_name_without_class_names_says_so():
    plain = Explainer(toy_generator(), mean_colour_classifier(), default_search_config())
    with pytest.raises(ClassNameError, match=r"target 'red' is a name, but the classifier has no class names"):
        plain.prepare_batch(greenish_images(2), ["red", "red"], kind="class")


def test_good_inputs_pass_unchanged(explainer):
    regions = np.zeros((2, 16, 16), np.float32)
    latents = np.ones((2, 4, 4, 3), np.float32)
    batch, _ = _prepare(explainer, example_ids=[5, 9], regions=regions, latents=latents)
    assert np.asarray(batch.example_ids).tolist()[:2] == [5, 9]
    assert np.asarray(batch.regions).shape[1:] == (16, 16, 1)
    assert np.asarray(batch.latents).shape[1:] == (4, 4, 3)


# ----------------------------------------------------------------------------- classifier outputs


def three_logits(params, images):
    return jnp.zeros((images.shape[0], 3)) + jnp.mean(images)


def rank_one_logits(params, images):
    return jnp.mean(images, axis=(1, 2, 3))


@pytest.mark.parametrize("fn, got", [(three_logits, r"\(2, 3\)"), (rank_one_logits, r"\(2,\)")])
def test_classifier_output_shape_is_checked_naming_the_function(fn, got):
    classifier = Classifier.from_function(fn, num_outputs=10, name="wrong")
    message = (rf"the classifier 'wrong' \(function {fn.__qualname__}\) returned logits of shape "
               rf"{got} for images of shape \(2, 16, 16, 3\); expected \(2, 10\)")
    with pytest.raises(ClassifierOutputError, match=message):
        classifier.logits(jnp.asarray(greenish_images(2)))
    with pytest.raises(ClassifierOutputError, match=message):  # on the first trace of the search
        Explainer(toy_generator(), classifier, default_search_config()).explain(greenish_images(2))
    with pytest.raises(ClassifierOutputError, match=r"expected \(4, 10\)"):
        jax.eval_shape(classifier.logits_fn, None, jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32))


def test_a_right_classifier_passes_the_output_check_and_keeps_its_function():
    def two_logits(params, images):  # any leading axes
        mean = jnp.mean(images, axis=(-3, -2, -1))
        return jnp.stack([mean, -mean], axis=-1)

    classifier = Classifier.from_function(two_logits, num_outputs=2)
    images = jnp.asarray(greenish_images(3))
    logits = classifier.logits(images)
    assert logits.shape == (3, 2)
    single = jax.vmap(classifier.logits_fn, in_axes=(None, 0))(None, images)
    np.testing.assert_allclose(single, logits, atol=1e-6)  # one image per call under vmap
    original = classifier.logits_fn.unchecked_logits_fn
    assert original.__qualname__ == classifier.logits_fn.__qualname__
    more = dataclasses.replace(classifier, num_outputs=3, class_names=None)
    assert more.logits_fn.unchecked_logits_fn is original  # re-wrapped, not wrapped twice
    with pytest.raises(ClassifierOutputError, match=r"returned logits of shape \(3, 2\) .* "
                                                    r"expected \(3, 3\)"):
        more.logits(jnp.asarray(greenish_images(3)))


# ----------------------------------------------------------------------------- streams


def test_a_misshaped_image_in_a_stream_is_named_by_its_index(explainer):
    images = list(greenish_images(4))
    images[2] = greenish_images(1, size=(8, 16))[0]
    with pytest.raises(ValueError, match=r"images: the image at index 2 of the stream has shape "
                                         r"\(8, 16, 3\); expected \(16, 16, 3\), the shape of "
                                         r"the stream's first image"):
        next(explainer.explain_stream(iter(images), slots=4))


def test_stream_rows_keep_the_first_shape_across_blocks():
    shapes = {}
    first = api_inputs.stacked_stream_rows("regions", [np.ones((4, 4))] * 2, 0, shapes)
    assert first.shape == (2, 4, 4) and shapes == {"regions": (4, 4)}
    with pytest.raises(ValueError, match=r"regions: the region at index 7 of the stream has "
                                         r"shape \(4, 4, 1\); expected \(4, 4\)"):
        api_inputs.stacked_stream_rows("regions", [np.ones((4, 4)), np.ones((4, 4, 1))], 6, shapes)
