"""bfloat16 convolutions on CPU as tap products (sce_jax.models.bf16_conv).

The path must compute what a bfloat16 convolution computes -- the float32 convolution of the
bfloat16 operands, rounded to bfloat16 once -- and the matching gradients (the cotangent
rounded to bfloat16, products accumulated in float32), for every stride and padding the ports
use; it must really replace XLA's convolution on CPU, and leave large maps to it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax.models import bf16_conv
from sce_jax.models.conv import conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
CASES = {
    "3x3_same": dict(x=(2, 9, 7, 3), k=(3, 3, 3, 5), strides=(1, 1), padding=((1, 1), (1, 1))),
    "3x3_stride2_asymmetric": dict(x=(2, 9, 8, 4), k=(3, 3, 4, 6), strides=(2, 2),
                                   padding=((0, 1), (0, 1))),
    "1x1": dict(x=(3, 5, 5, 6), k=(1, 1, 6, 2), strides=(1, 1), padding=((0, 0), (0, 0))),
    "1x1_stride2": dict(x=(1, 10, 10, 8), k=(1, 1, 8, 4), strides=(2, 2), padding="VALID"),
    "7x7_stride2_pad3": dict(x=(1, 16, 16, 3), k=(7, 7, 3, 4), strides=(2, 2),
                             padding=((3, 3), (3, 3))),
    "small_map_2x2": dict(x=(3, 2, 2, 8), k=(3, 3, 8, 6), strides=(1, 1), padding="SAME"),
}
BF16 = jnp.bfloat16


def _operands(case):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=case["x"]), BF16)
    k = jnp.asarray(rng.normal(size=case["k"]) * 0.3, BF16)
    return x, k


def _f32_conv(case):
    return lambda x, k: jax.lax.conv_general_dilated(
        x.astype(jnp.float32), k.astype(jnp.float32), case["strides"], case["padding"],
        dimension_numbers=DN)


def _ours(case):
    return lambda x, k: conv_general_dilated(x, k, case["strides"], case["padding"],
                                             dimension_numbers=DN)


def _assert_within_one_rounding(got, want):
    """got is want rounded to bfloat16 (plus float32 summation-order noise)."""
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=2 ** -8, atol=1e-5 * scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_a_bfloat16_convolution(name):
    case = CASES[name]
    x, k = _operands(case)
    y = jax.jit(_ours(case))(x, k)
    assert y.dtype == BF16
    want = _f32_conv(case)(x, k)
    _assert_within_one_rounding(y, want)

    g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), BF16)
    _, ours_vjp = jax.vjp(jax.jit(_ours(case)), x, k)
    _, want_vjp = jax.vjp(_f32_conv(case), x, k)
    for got, expected, primal in zip(ours_vjp(g), want_vjp(g.astype(jnp.float32)), (x, k)):
        assert got.dtype == primal.dtype
        _assert_within_one_rounding(got, expected)


def _convolutions(fn, *args) -> int:
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return sum(" convolution(" in line for line in hlo.splitlines())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tap path is CPU-only")
def test_cpu_replaces_small_bfloat16_convolutions_and_keeps_large_ones():
    case = CASES["3x3_same"]
    x, k = _operands(case)
    grad = jax.grad(lambda x_, k_: jnp.sum(_ours(case)(x_, k_).astype(jnp.float32) ** 2))
    assert _convolutions(_ours(case), x, k) == 0
    assert _convolutions(grad, x, k) == 0
    # the same call in float32 is a convolution
    assert _convolutions(_ours(case), x.astype(jnp.float32), k.astype(jnp.float32)) == 1
    # a map with more output positions than the threshold stays a convolution
    side = int(np.sqrt(bf16_conv.MAX_OUTPUT_POSITIONS)) + 1
    big = jnp.zeros((1, side, side, 3), BF16)
    assert _convolutions(_ours(case), big, k) == 1


def test_inside_a_loop_and_under_vmap():
    case = CASES["3x3_same"]
    x, k = _operands(case)
    ours, ref = _ours(case), _f32_conv(case)

    def descend(f):
        def body(_, z):
            g = jax.grad(lambda a: jnp.sum(jnp.tanh(f(a, k).astype(jnp.float32))))(z)
            return (z.astype(jnp.float32) - 0.1 * g.astype(jnp.float32)).astype(BF16)
        return jax.jit(lambda z: jax.lax.fori_loop(0, 3, body, z))

    np.testing.assert_allclose(np.asarray(descend(ours)(x), np.float32),
                               np.asarray(descend(ref)(x), np.float32), rtol=2e-2, atol=2e-2)
    batched = jax.jit(jax.vmap(lambda a: ours(a[None], k)[0]))(x)
    _assert_within_one_rounding(batched, ref(x, k))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tap path is CPU-only")
def test_forward_mode_is_refused_with_jax_own_error():
    """The documented limit (WORKSPACE.md, Known limits): reverse mode only."""
    case = CASES["3x3_same"]
    x, k = _operands(case)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda a: _ours(case)(a, k), (x,), (x,))


@pytest.mark.parametrize("platform,taps", [("cpu", True), ("cuda", False), ("tpu", False)])
def test_only_cpu_programs_take_the_tap_path(platform, taps):
    """Lowered for a GPU or TPU, the same call is the platform's native bfloat16 convolution."""
    from jax import export

    case = CASES["3x3_same"]
    x, k = _operands(case)
    module = export.export(jax.jit(_ours(case)), platforms=[platform])(x, k).mlir_module()
    assert ("stablehlo.convolution" in module) is not taps
    assert ("stablehlo.dot_general" in module) is taps
