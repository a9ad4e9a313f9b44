"""Diversification with a decoder whose changes reach beyond the latent cells that moved.

Real decoders spread a latent change over their receptive field, so during attempt 2 the
reconstruction also moves under the pixels attempt 1 locked. The edit mask must be judged
inside the area that may change: were the change map normalised by a peak under the locked
pixels, the whole allowed area would fall below the threshold, the mask would close, and
attempt 2 could change nothing.
"""

import jax.numpy as jnp
import numpy as np

from sce_jax import Explainer, Generator
from tests.search_helpers import two_reasons
from tests.toy_models import FACTOR, MIX

LEAK_GAIN = 10.0  # latent cell (3, 3) moves pixel block (0, 0) more than its own block


def leaky_generator() -> Generator:
    """The toy block decoder, plus 10x the red of pixel block (3, 3) added to the blue
    channel of block (0, 0): a change the colour classifiers (R - G) do not see, so the
    search's gradients are those of the plain toy decoder, but the change map is not."""
    mix = jnp.asarray(MIX)
    inverse = jnp.asarray(np.linalg.inv(MIX))

    def decode(params, z):
        up = jnp.repeat(jnp.repeat(z, FACTOR, axis=1), FACTOR, axis=2) @ mix
        source = up[:, 3 * FACTOR:4 * FACTOR, 3 * FACTOR:4 * FACTOR, 0]
        rest = up.shape[1] - FACTOR, up.shape[2] - FACTOR
        leak = jnp.pad(source, ((0, 0), (0, rest[0]), (0, rest[1])))
        leak = jnp.stack([jnp.zeros_like(leak), jnp.zeros_like(leak), leak], axis=-1)
        return up + LEAK_GAIN * params["leak"] * leak

    def encode(params, x):
        b, h, w, c = x.shape
        return x.reshape(b, h // FACTOR, FACTOR, w // FACTOR, FACTOR, c).mean((2, 4)) @ inverse

    return Generator.from_functions(decode, encode, {"leak": jnp.float32(1.0)},
                                    downsample=FACTOR, latent_channels=3, name="leaky")


def test_second_attempt_works_when_the_decoder_leaks_into_the_locked_area():
    clf, x, config = two_reasons()
    result = Explainer(leaky_generator(), clf, config).explain(x, targets=[1, 1])
    assert result.success.all(), result.prob_after
    first = np.any(result.image[:, 0] != x, axis=-1)
    second = np.any(result.image[:, 1] != x, axis=-1)
    assert first[:, 0:4, 0:4].all() and second[:, 12:16, 12:16].all()
    assert not (first & second).any()


def test_without_the_lock_both_attempts_take_the_strong_reason():
    from tests.toy_models import toy_generator

    clf, x, config = two_reasons(lock=False)
    result = Explainer(toy_generator(), clf, config).explain(x, targets=[1, 1])
    assert result.success.all(), result.prob_after
    for k in range(2):  # the same reason twice: what the lock exists to prevent
        changed = np.any(result.image[:, k] != x, axis=-1)
        assert changed[:, 0:4, 0:4].all() and not changed[:, 12:16, 12:16].any()
