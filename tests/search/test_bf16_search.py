"""A search with the autoencoder in bfloat16 (``generator.dtype``) finds what the float32 search
finds, on the shipped Fashion-MNIST demo models.

bfloat16 keeps 8 significant bits, so the two searches cannot agree bit for bit; they must
agree far better than either differs from the original image: the same edit, made with a
slightly different gradient. On CPU the bfloat16 decoder runs its convolutions as tap products
(sce_jax.models.bf16_conv), so this is also an end-to-end check of that path in the loop.
"""

import numpy as np

from sce_jax import Explainer, default_search_config
from sce_jax.assets import asset_path
from sce_jax.runs.config import base_run_config
from sce_jax.runs.loaders import load_classifier, load_generator

IMAGES = 4


def _config(dtype: str):
    c = base_run_config()
    c.generator.checkpoint = asset_path("fashion_mnist", "autoencoder", must_exist=False)
    c.generator.dtype = dtype
    c.classifier.checkpoint = asset_path("fashion_mnist", "classifier", must_exist=False)
    return c


def _search_config():
    c = default_search_config()
    c.steps = 20
    c.attempts = 1
    c.smoothing.num_samples = 2
    return c


def test_bfloat16_autoencoder_search_stays_close_to_float32():
    with np.load(asset_path("fashion_mnist", "test_subset.npz")) as data:
        images = data["images"][:IMAGES].astype(np.float32)
    images = (images / 255.0 if images.max() > 1 else images).reshape(IMAGES, 32, 32, 1)
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = _config(dtype)
        explainer = Explainer(load_generator(config.generator),
                              load_classifier(config.classifier), _search_config())
        results[dtype] = explainer.explain(images, kind="other")
    f32, bf16 = results["float32"], results["bfloat16"]
    assert np.asarray(bf16.image).dtype == np.float32
    np.testing.assert_array_equal(bf16.target, f32.target)
    edit = np.abs(np.asarray(f32.image[:, 0]) - images).mean(axis=(1, 2, 3))
    gap = np.abs(np.asarray(bf16.image[:, 0]) - np.asarray(f32.image[:, 0])).mean(axis=(1, 2, 3))
    assert (edit > 0.01).all(), edit      # the searches did change the images
    # Each example stops at its first successful step, so one step more or less is a visible
    # difference (one garment here: success at step 7 in float32, 8 in bfloat16).
    np.testing.assert_array_equal(bf16.success, f32.success)
    assert np.abs(np.asarray(bf16.steps) - np.asarray(f32.steps)).max() <= 2
    assert (gap < 0.5 * edit).all(), (gap, edit)
    assert gap.mean() < 0.2 * edit.mean(), (gap, edit)
