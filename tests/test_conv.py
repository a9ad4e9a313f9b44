"""sce_jax.models.conv.conv_general_dilated is jax.lax.conv_general_dilated, values and gradients.

The ports use it for every convolution so that XLA:CPU keeps the input gradient on its
library path inside the search loop; whatever form it takes, it must compute the same
function and the same derivatives (with respect to the input and the kernel), for every
stride, padding, dilation and group count the ports use, and under jit, vmap and loops.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax.models.conv import conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
CASES = {
    "3x3_same": dict(x=(2, 9, 7, 3), k=(3, 3, 3, 5), strides=(1, 1), padding=((1, 1), (1, 1))),
    "3x3_stride2": dict(x=(2, 9, 8, 4), k=(3, 3, 4, 6), strides=(2, 2), padding=((0, 1), (0, 1))),
    "1x1": dict(x=(3, 5, 5, 6), k=(1, 1, 6, 2), strides=(1, 1), padding=((0, 0), (0, 0))),
    "7x7_stride2_pad3": dict(x=(1, 16, 16, 3), k=(7, 7, 3, 4), strides=(2, 2), padding=((3, 3), (3, 3))),
    "grouped": dict(x=(2, 6, 6, 8), k=(3, 3, 4, 6), strides=(1, 1), padding="SAME", groups=2),
    "dilated": dict(x=(1, 10, 10, 2), k=(3, 3, 2, 3), strides=(1, 1), padding="VALID", rhs_dilation=(2, 2)),
    "large_map": dict(x=(1, 40, 40, 2), k=(3, 3, 2, 2), strides=(1, 1), padding="SAME"),
}


def _args(case):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=case["x"]), jnp.float32)
    k = jnp.asarray(rng.normal(size=case["k"]) * 0.3, jnp.float32)
    kwargs = dict(dimension_numbers=DN, feature_group_count=case.get("groups", 1))
    if "rhs_dilation" in case:
        kwargs["rhs_dilation"] = case["rhs_dilation"]
    return x, k, case["strides"], case["padding"], kwargs


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_equal_lax(name):
    x, k, strides, padding, kwargs = _args(CASES[name])

    def ours(x_, k_):
        return conv_general_dilated(x_, k_, strides, padding, **dict(kwargs))

    def lax(x_, k_):
        return jax.lax.conv_general_dilated(x_, k_, strides, padding, **dict(kwargs))

    y = lax(x, k)
    np.testing.assert_allclose(ours(x, k), y, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
    for argnum in (0, 1):
        def loss(f):
            return lambda *a: jnp.sum(f(*a) * cotangent)
        np.testing.assert_allclose(jax.grad(loss(ours), argnum)(x, k),
                                   jax.grad(loss(lax), argnum)(x, k), rtol=1e-4, atol=1e-4)
    # forward mode too (the rule is written as a JVP)
    dx = jnp.ones_like(x)
    np.testing.assert_allclose(jax.jvp(lambda a: ours(a, k), (x,), (dx,))[1],
                               jax.jvp(lambda a: lax(a, k), (x,), (dx,))[1], rtol=1e-4, atol=1e-4)


def test_input_gradient_inside_a_loop_and_under_vmap():
    x, k, strides, padding, kwargs = _args(CASES["3x3_same"])

    def step(f):
        def body(_, z):
            g = jax.grad(lambda a: jnp.sum(jnp.tanh(f(a, k, strides, padding, **dict(kwargs)))))(z)
            return z - 0.1 * g
        return jax.jit(lambda z: jax.lax.fori_loop(0, 3, body, z))

    np.testing.assert_allclose(step(conv_general_dilated)(x),
                               step(jax.lax.conv_general_dilated)(x), rtol=1e-4, atol=1e-5)
    batched = jax.vmap(lambda a: conv_general_dilated(a[None], k, strides, padding, **dict(kwargs))[0])(x)
    np.testing.assert_allclose(batched, jax.lax.conv_general_dilated(x, k, strides, padding, **dict(kwargs)),
                               rtol=1e-5, atol=1e-5)
