"""What the search tests share: the small search config of the toy models, and the reference
objective whose plain gradient the smoothed gradient must reproduce at sigma 0."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import sce_jax
from sce_jax.search import objectives, targets
from sce_jax.search.config import SearchSettings
from sce_jax.search.smoothing import StepInputs
from tests.toy_models import greenish_images, weighted_colour_classifier


def small_config(**overrides):
    """The search config of the toy-model tests; ``overrides`` by dotted key (``"mask.period"``)."""
    c = sce_jax.default_search_config()
    c.steps = 60
    c.learning_rate = 0.05
    c.attempts = 1
    c.goal_probability = 0.0  # the toy answers are about reaching the decision
    c.smoothing.num_samples = 4
    c.smoothing.sigma = 0.02
    c.mask.warmup_steps = 3
    c.mask.period = 2
    return with_overrides(c, **overrides)


def with_overrides(config, **overrides):
    """``config`` with ``overrides`` set by dotted key (``mask.period=3``), in place."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def plain_objective(z, inp: StepInputs, *, decode: Callable, logits_fn: Callable,
                    settings: SearchSettings, kind: str) -> jax.Array:
    """The unsmoothed objective summed over the batch (its ``jax.grad`` is the reference)."""
    decoded = decode(z)
    x_cf = objectives.compose_output(inp.x, decoded, inp.decoded0, inp.mask, mode=settings.output_mode)
    loss = (targets.target_loss(logits_fn(x_cf), inp.target, inp.value, kind=kind,
                                temperature=settings.temperature, class_loss=settings.class_loss)
            + objectives.latent_proximity(z, inp.z0, l1=settings.l1, l2=settings.l2)
            + objectives.pixel_proximity(x_cf, inp.x, pixel_l1=settings.pixel_l1))
    return jnp.sum(loss)


def noisy_search_config():
    """A short search with noise on: per-example keys must follow the example."""
    c = sce_jax.default_search_config()
    c.steps = 30
    c.attempts = 2
    c.learning_rate = 0.03
    c.smoothing.num_samples = 3
    c.smoothing.sigma = 0.05  # noise on: the per-example keys must follow the example
    c.mask.warmup_steps = 3
    c.mask.period = 2
    return c


def batch_inputs():
    """Eight toy images with ids in no order (batch-composition tests)."""
    images = greenish_images(8, seed=5)
    targets = np.ones(8, np.int32)
    ids = np.array([40, 11, 7, 3, 25, 19, 2, 31], np.int32)
    return images, targets, ids


def uneven_inputs(n=7):
    """Images at different distances from the decision boundary: different step counts."""
    images = greenish_images(n, seed=5)
    images[..., 1] -= np.linspace(0.0, 0.25, n, dtype=np.float32)[:, None, None]
    return images, np.ones(n, np.int32), np.arange(100, 100 + n, dtype=np.int32)


def slot_config(**overrides):
    """noisy_search_config with dotted-key overrides (``mask.period=3``)."""
    return with_overrides(noisy_search_config(), **overrides)


def two_reasons(**overrides):
    """A classifier with a strong reason (block (0, 0)) and a weaker one (block (3, 3)),
    images near its boundary, and a config whose mask narrows before attempt 1 succeeds."""
    weights = np.zeros((16, 16), np.float32)
    weights[0:4, 0:4] = 2.0
    weights[12:16, 12:16] = 1.0
    clf = weighted_colour_classifier(weights, scale=30.0)
    x = greenish_images(2, seed=2)
    x[..., 0] = x[..., 1] - 0.1
    # The blocky toy images put each block's corner pixels in "empty background", so the
    # spot rejection (tested in tests/search/test_mask_holes.py) would judge these edits by a share that sits
    # at its threshold; these tests are about the lock alone.
    overrides.setdefault("reject_background_spots", False)
    config = small_config(steps=100, attempts=2, learning_rate=0.005, **overrides)
    config.mask.blur_sigma = 0.5
    config.mask.threshold = 0.6
    config.mask.warmup_steps = 2
    config.mask.period = 1
    return clf, x, config
