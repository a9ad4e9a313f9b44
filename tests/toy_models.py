"""Tiny generators and classifiers with known answers, for the search tests.

The toy generator decodes a (B, h, w, c) latent by nearest-neighbour upsampling (factor 4)
and a fixed channel mixing, so every latent cell controls exactly one 4x4 pixel block: where a
search may change the image is then known exactly. Its encoder is the exact inverse on images
that are constant on each block.
"""

import jax.numpy as jnp
import numpy as np

from sce_jax import Classifier, Generator
from sce_jax.prior import Prior

FACTOR = 4
MIX = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0]], np.float32)


def toy_generator() -> Generator:
    mix = jnp.asarray(MIX)
    inverse = jnp.asarray(np.linalg.inv(MIX))

    def decode(params, z):
        b, h, w, c = z.shape
        up = jnp.repeat(jnp.repeat(z, FACTOR, axis=1), FACTOR, axis=2)
        return up @ (mix * params["gain"])

    def encode(params, x):
        b, h, w, c = x.shape
        pooled = x.reshape(b, h // FACTOR, FACTOR, w // FACTOR, FACTOR, c).mean((2, 4))
        return pooled @ (inverse / params["gain"])

    return Generator.from_functions(decode, encode, {"gain": jnp.float32(1.0)},
                                    downsample=FACTOR, latent_channels=3, name="toy")


def weighted_colour_classifier(weight_map: np.ndarray, scale: float = 20.0) -> Classifier:
    """Two classes; logit_1 - logit_0 = scale * sum_hw w(h, w) (R - G)(h, w) / sum w."""
    w = jnp.asarray(weight_map / weight_map.sum(), jnp.float32)

    def logits(params, x):
        score = jnp.sum((x[..., 0] - x[..., 1]) * w, axis=(1, 2)) * params
        return jnp.stack([-score, score], axis=-1) / 2

    return Classifier.from_function(logits, jnp.float32(scale), num_outputs=2, name="colour")


def mean_colour_classifier(size=(16, 16), scale: float = 20.0) -> Classifier:
    return weighted_colour_classifier(np.ones(size, np.float32), scale)


def greenish_images(batch: int, size=(16, 16), seed: int = 0) -> np.ndarray:
    """Images constant on 4x4 blocks, green-dominant (class 0 for the colour classifiers)."""
    rng = np.random.default_rng(seed)
    h, w = size
    blocks = rng.uniform(0.0, 0.3, (batch, h // FACTOR, w // FACTOR, 3)).astype(np.float32)
    blocks[..., 1] += 0.5
    return np.repeat(np.repeat(blocks, FACTOR, axis=1), FACTOR, axis=2)


# The exact rectified-flow velocity of a Gaussian "data" distribution (tests/search/test_prior_search.py
# explains it): the prior of the toy search tests.
VARIANCES = np.array([1.0, 1.0, 0.0], np.float32)  # the data never uses latent channel 2


def gaussian_velocity(params, z_t, t, context=None):
    s2 = params["variances"]
    tb = t[:, None, None, None]
    return (tb - (1 - tb) * s2) / ((1 - tb) ** 2 * s2 + tb ** 2) * z_t


def gaussian_prior() -> Prior:
    return Prior(gaussian_velocity, {"variances": jnp.asarray(VARIANCES)}, name="gaussian")
