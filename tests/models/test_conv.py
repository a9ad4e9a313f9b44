"""sce_jax.models.conv.conv_general_dilated is jax.lax.conv_general_dilated, values and gradients;
vae_blocks.GroupNorm is nnx.GroupNorm.

The ports use it for every convolution so that XLA:CPU keeps the input gradient on its
library path inside the search loop; whatever form it takes, it must compute the same
function and the same derivatives (with respect to the input and the kernel), for every
stride, padding, dilation and group count the ports use, and under jit, vmap and loops.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.conv import conv_general_dilated
from sce_jax.models.vae_blocks import GroupNorm

DN = ("NHWC", "HWIO", "NHWC")
CASES = {
    "3x3_same": dict(x=(2, 9, 7, 3), k=(3, 3, 3, 5), strides=(1, 1), padding=((1, 1), (1, 1))),
    "3x3_stride2": dict(x=(2, 9, 8, 4), k=(3, 3, 4, 6), strides=(2, 2), padding=((0, 1), (0, 1))),
    "1x1": dict(x=(3, 5, 5, 6), k=(1, 1, 6, 2), strides=(1, 1), padding=((0, 0), (0, 0))),
    "1x1_stride2": dict(x=(2, 7, 6, 6), k=(1, 1, 6, 3), strides=(2, 2), padding="VALID"),
    "1x1_padded": dict(x=(2, 4, 4, 3), k=(1, 1, 3, 2), strides=(1, 1), padding=((1, 1), (0, 1))),
    "7x7_stride2_pad3": dict(x=(1, 16, 16, 3), k=(7, 7, 3, 4), strides=(2, 2), padding=((3, 3), (3, 3))),
    "grouped": dict(x=(2, 6, 6, 8), k=(3, 3, 4, 6), strides=(1, 1), padding="SAME", groups=2),
    "dilated": dict(x=(1, 10, 10, 2), k=(3, 3, 2, 3), strides=(1, 1), padding="VALID", rhs_dilation=(2, 2)),
    "large_map": dict(x=(1, 40, 40, 2), k=(3, 3, 2, 2), strides=(1, 1), padding="SAME"),
    # kernels covering more positions than the output: the matrix product over patches
    "small_map_2x2": dict(x=(3, 2, 2, 8), k=(3, 3, 8, 6), strides=(1, 1), padding=((1, 1), (1, 1))),
    "small_map_stride2": dict(x=(3, 4, 4, 8), k=(3, 3, 8, 6), strides=(2, 2), padding=((1, 1), (1, 1))),
    "small_map_1x1": dict(x=(2, 1, 1, 4), k=(3, 3, 4, 5), strides=(1, 1), padding="SAME"),
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


def test_other_dimension_numbers():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 9, 9)), jnp.float32)  # NCHW
    k = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4, 3, 3)) * 0.3, jnp.float32)
    kwargs = dict(dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=2)

    def loss(f):
        return lambda x_, k_: jnp.sum(jnp.sin(f(x_, k_, (2, 2), ((1, 1), (1, 1)), **kwargs)))

    for argnum in (0, 1):
        np.testing.assert_allclose(jax.grad(loss(conv_general_dilated), argnum)(x, k),
                                   jax.grad(loss(jax.lax.conv_general_dilated), argnum)(x, k),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution emitter")
def test_no_loop_nest_convolution_inside_a_loop():
    """XLA:CPU marks a convolution it emits as its own loop nest (instead of a library call)
    with the parallel loop emitter's ``outer_dimension_partitions``; none may be in the loop."""
    x, k, strides, padding, kwargs = _args(CASES["3x3_same"])

    def search(z):
        def body(_, z):
            g = jax.grad(lambda a: jnp.sum(jnp.sin(
                conv_general_dilated(a, k, strides, padding, **dict(kwargs)))))(z)
            return z - 0.01 * g
        return jax.lax.fori_loop(0, 3, body, z)

    hlo = jax.jit(search).lower(x).compile().as_text()
    convolutions = [line for line in hlo.splitlines() if " convolution(" in line]
    assert len(convolutions) == 2  # forward and input gradient
    assert not [c for c in convolutions if "outer_dimension_partitions" in c]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape,groups", [((2, 6, 5, 32), 8), ((2, 4, 4, 64), 32), ((3, 7, 12), 3)])
def test_group_norm_matches_flax(shape, groups, dtype):
    channels = shape[-1]
    ours = GroupNorm(channels, num_groups=groups, epsilon=1e-6, use_fast_variance=False,
                     rngs=nnx.Rngs(0), dtype=dtype)
    flax_norm = nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-6,
                              use_fast_variance=False, rngs=nnx.Rngs(0), dtype=dtype)
    scale = jax.random.normal(jax.random.key(1), (channels,))
    bias = jax.random.normal(jax.random.key(2), (channels,))
    for norm in (ours, flax_norm):
        norm.scale.set_value(scale)
        norm.bias.set_value(bias)
    x = (3.0 * jax.random.normal(jax.random.key(0), shape) + 2.0).astype(dtype)

    def grad(norm):
        return jax.grad(lambda x_: jnp.sum(jnp.sin(norm(x_).astype(jnp.float32))))(x)

    y, want = ours(x), flax_norm(x)
    assert y.dtype == want.dtype
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(grad(ours), np.float32),
                               np.asarray(grad(flax_norm), np.float32), rtol=tol, atol=tol)
