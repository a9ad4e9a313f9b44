"""bfloat16 convolutions on CPUs with bfloat16 matrix units, as sums of matrix products.

XLA:CPU computes a bfloat16 ``convolution`` by converting both operands to float32 and running
the float32 kernel: bfloat16 is then slower than float32. A matrix product with bfloat16
operands and a float32 result (``dot_general(..., preferred_element_type=float32)``) instead
runs on the CPU's bfloat16 units (AMX / AVX512-BF16, through XLA's YNNPACK library calls):
about 4-5x the float32 matrix-product rate on the machines this was measured on
(``scripts/benchmark.py`` reports both peaks).

So a bfloat16 NHWC/HWIO convolution is computed here as one matrix product per kernel tap,
accumulated in float32::

    y[b, p, q, o] = sum_{i, j} sum_c xpad[b, s_h p + i, s_w q + j, c] k[i, j, c, o]

(``xpad`` is ``x`` padded by the convolution's padding; each tap ``(i, j)`` is a strided slice
of ``xpad`` times the ``(C, O)`` matrix ``k[i, j]``.) Its derivatives are written the same
way, with the cotangent rounded to bfloat16 before each product (the usual bfloat16 training
precision)::

    dxpad = sum_{i, j} place_{i, j}(g k[i, j]^T)      dk[i, j] = slice_{i, j}(xpad)^T g

where ``place_{i, j}`` puts a tap's contribution back at rows ``s_h p + i`` and columns
``s_w q + j`` (a pad with interior padding ``s - 1``, the transpose of the strided slice).

Every product accumulates in float32; the result is rounded to bfloat16 once per layer, as
XLA's own bfloat16 convolution does. The slices and sums are memory traffic that the
convolution kernel avoids, so the path only pays on small maps: it is used when the output
has at most :data:`MAX_OUTPUT_POSITIONS` rows (batch x height x width), and only on CPU
(``jax.lax.platform_dependent``; GPUs and TPUs have native bfloat16 convolutions).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from sce_jax.models.conv_taps import output_size, pad_spatial, tap

Array = jax.Array

#: Largest ``batch * out_height * out_width`` computed as tap products. Measured on a 2-core
#: Xeon with AMX (3x3 convolutions, 128-512 channels): 1.7-3x faster than XLA's convolution up
#: to 64x64 maps of one image, slower from 128x128 on, where the slices and float32 sums cost
#: more than the products save.
MAX_OUTPUT_POSITIONS = 8192

_CONTRACT_CHANNELS = (((3,), (0,)), ((), ()))


def _kernel_taps(k: Array) -> list[list[Array]]:
    """``k[i, j]`` for every tap, behind an ``optimization_barrier``: the chain from the
    float32 parameter (its cast to bfloat16, the slices) is loop-invariant in a search, and
    XLA hoists it out of the loop only with the barrier (it does not hoist lone cheap ops)."""
    kh, kw = k.shape[:2]
    flat = jax.lax.optimization_barrier(tuple(k[i, j] for i in range(kh) for j in range(kw)))
    return [list(flat[i * kw:(i + 1) * kw]) for i in range(kh)]


def _forward(x: Array, k: Array, strides, pads) -> Array:
    """The tap sum in float32, from bfloat16 operands."""
    kh, kw = k.shape[:2]
    taps = _kernel_taps(k)
    xpad = pad_spatial(x, pads)
    out_hw = output_size(x.shape[1:3], k.shape[:2], strides, pads)
    y = None
    for i in range(kh):
        for j in range(kw):
            term = jax.lax.dot_general(tap(xpad, i, j, out_hw, strides), taps[i][j],
                                       _CONTRACT_CHANNELS, preferred_element_type=jnp.float32)
            y = term if y is None else y + term
    return y


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _tap_conv(x: Array, k: Array, strides, pads) -> Array:
    return _forward(x, k, strides, pads).astype(x.dtype)


def _tap_conv_fwd(x, k, strides, pads):
    return _tap_conv(x, k, strides, pads), (x, k)


def _tap_conv_bwd(strides, pads, residuals, g):
    x, k = residuals
    kh, kw = k.shape[:2]
    g = g.astype(x.dtype)
    taps = _kernel_taps(k)
    xpad = pad_spatial(x, pads)
    ho, wo = g.shape[1:3]
    sh, sw = strides
    dxpad = None
    dk = []
    for i in range(kh):
        row = []
        for j in range(kw):
            # contribution of tap (i, j) to the input: g k[i, j]^T, placed at s p + i, s q + j
            part = jax.lax.dot_general(g, taps[i][j], (((3,), (1,)), ((), ())),
                                       preferred_element_type=jnp.float32)
            placed = jax.lax.pad(part, jnp.zeros((), part.dtype),
                                 ((0, 0, 0),
                                  (i, xpad.shape[1] - i - (sh * (ho - 1) + 1), sh - 1),
                                  (j, xpad.shape[2] - j - (sw * (wo - 1) + 1), sw - 1),
                                  (0, 0, 0)))
            dxpad = placed if dxpad is None else dxpad + placed
            row.append(jax.lax.dot_general(tap(xpad, i, j, (ho, wo), strides), g,
                                           (((0, 1, 2), (0, 1, 2)), ((), ())),
                                           preferred_element_type=jnp.float32))
        dk.append(jnp.stack(row))
    (top, _), (left, _) = pads
    dx = dxpad[:, top:top + x.shape[1], left:left + x.shape[2], :]
    return dx.astype(x.dtype), jnp.stack(dk).astype(k.dtype)


_tap_conv.defvjp(_tap_conv_fwd, _tap_conv_bwd)


def applies(lhs: Array, rhs: Array, strides, pads) -> bool:
    """Whether a NHWC/HWIO convolution without dilation or groups takes the tap path."""
    if lhs.dtype != jnp.bfloat16 or rhs.dtype != jnp.bfloat16:
        return False
    out = output_size(lhs.shape[1:3], rhs.shape[:2], strides, pads)
    return min(out) >= 1 and lhs.shape[0] * out[0] * out[1] <= MAX_OUTPUT_POSITIONS


def conv(lhs: Array, rhs: Array, strides, pads, fallback) -> Array:
    """The tap-product convolution on CPU, ``fallback(lhs, rhs)`` on other platforms."""
    strides = tuple(int(s) for s in strides)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return jax.lax.platform_dependent(
        lhs, rhs, cpu=lambda x, k: _tap_conv(x, k, strides, pads), default=fallback)
