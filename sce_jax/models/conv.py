"""A convolution whose input gradient stays on XLA:CPU's fast path inside loops.

XLA:CPU runs a convolution through its library kernels (Eigen) only in the canonical form:
NHWC input and output, HWIO kernel. Its pass that rewrites other forms into the canonical one
(``ConvCanonicalization``) visits the top-level computation only. JAX differentiates
``y = conv(x, k)`` with respect to ``x`` as a convolution of the cotangent with the reversed
kernel whose feature dimensions are swapped (``HWOI``). At the top level XLA canonicalises it
(a transposed copy of the kernel); inside a ``while`` loop -- the search loop, ``lax.scan``,
``lax.fori_loop``, ``lax.map`` -- it does not, and emits the convolution as a plain loop nest,
2-10x slower than the library call (the benchmark counts them: ``scripts/benchmark.py
--breakdown``).

:func:`conv_general_dilated` is ``jax.lax.conv_general_dilated`` with a JVP rule whose
input tangent is written with an explicitly transposed kernel under the swapped spec::

    d_x y = conv(dx, swapaxes(k, I, O), spec with I and O exchanged)

which is the same linear map. Reverse mode transposes it into a convolution of the cotangent
with ``reverse(swapaxes(k))`` under the kernel's own spec (HWIO): canonical wherever it runs.
That kernel is computed behind an ``optimization_barrier``: XLA never hoists a lone transpose
or reverse out of a loop (it counts them as too cheap), so without it every step of the
search would re-transpose every kernel of the decoder and the classifier (~10% of a step for
the SD VAE); behind the barrier it is computed once per search call.

Small feature maps take another path. When a kernel covers more positions than the map it
slides over (``kh * kw > Ho * Wo``: the 3x3 convolutions of a ResNet's last stage on 64x64
images run on 2x2 maps), XLA's algebraic simplifier swaps the convolution's operands, and the
result is again a form XLA:CPU emits as a loop nest, at the top level too. There the
convolution is computed as what it is, a matrix product over the image patches::

    y[b, p, q, o] = sum_{i, j, c} xpad[b, s p + i, s q + j, c] k[i, j, c, o]

(``kh * kw`` strided slices of the padded input, concatenated along channels, times the
kernel reshaped to ``(kh kw C, O)``); its gradients are slices, pads and matrix products.
It is used for NHWC/HWIO convolutions without dilation or feature groups.

A 1x1 kernel without padding (a ResNet bottleneck's first and last convolutions, its
downsampling shortcut, a VAE's shortcut and quant convolutions) is a matrix product over
channels, ``y[b, p, q, o] = sum_c x[b, s p, s q, c] k[0, 0, c, o]``, and is computed as one:
XLA:CPU's matrix-product library call is 2-6x faster than its convolution for these shapes,
forward and backward (ResNet-50 on eight 64x64 images: forward 38 -> 27 ms, input gradient
111 -> 70 ms).

bfloat16 convolutions on CPU go through :mod:`sce_jax.models.bf16_conv` (tap products with
float32 accumulation on the bfloat16 matrix units) where the map is small enough to pay.

Values and gradients are those of ``jax.lax.conv_general_dilated`` (up to float rounding on
the matrix-product paths; bfloat16: see bf16_conv). The ports pass it to ``nnx.Conv(conv_general_dilated=...)``; a
custom model can do the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from sce_jax.models import bf16_conv
from sce_jax.models.conv_taps import output_size, pad_spatial, tap

Array = jax.Array


def _rhs_spec(dimension_numbers, lhs_ndim: int, rhs_shape) -> tuple[int, ...]:
    """The kernel's ``(out_feature, in_feature, *spatial)`` dimension indices."""
    dn = jax.lax.conv_dimension_numbers((1,) * lhs_ndim, rhs_shape, dimension_numbers)
    return tuple(dn.rhs_spec)


def _swapped(dimension_numbers, lhs_ndim: int, rhs_shape) -> jax.lax.ConvDimensionNumbers:
    """The dimension numbers for a kernel whose in/out feature axes have been swapped."""
    dn = jax.lax.conv_dimension_numbers((1,) * lhs_ndim, rhs_shape, dimension_numbers)
    out_dim, in_dim, *spatial = dn.rhs_spec
    return jax.lax.ConvDimensionNumbers(dn.lhs_spec, (in_dim, out_dim, *spatial), dn.out_spec)


NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _nhwc_pads(lhs, rhs, window_strides, padding, kwargs):
    """The explicit non-negative padding of a NHWC/HWIO convolution without dilation or
    feature groups (the forms the matrix-product paths handle), else None."""
    if lhs.ndim != 4 or rhs.ndim != 4:
        return None
    dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, kwargs.get("dimension_numbers"))
    if dn != NHWC:
        return None
    if kwargs.get("feature_group_count", 1) != 1 or kwargs.get("batch_group_count", 1) != 1:
        return None
    if kwargs.get("out_sharding") is not None:
        return None
    for key in ("lhs_dilation", "rhs_dilation"):
        if any(d != 1 for d in (kwargs.get(key) or ())):
            return None
    kh, kw = rhs.shape[:2]
    strides = tuple(window_strides)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        return None
    return pads


def _patch_matmul_applies(lhs, rhs, window_strides, pads) -> bool:
    """Whether the kernel covers more positions than the output map (module docstring)."""
    kh, kw = rhs.shape[:2]
    out = output_size(lhs.shape[1:3], (kh, kw), tuple(window_strides), pads)
    return min(out) >= 1 and kh * kw > 1 and kh * kw > out[0] * out[1]


def _pointwise_applies(rhs, pads) -> bool:
    """A 1x1 kernel without padding: the convolution is a matrix product over channels."""
    return rhs.shape[0] == rhs.shape[1] == 1 and all(p == (0, 0) for p in pads)


def _pointwise(x, k, strides, precision=None, preferred_element_type=None):
    """``y[b, p, q, o] = sum_c x[b, s_h p, s_w q, c] k[0, 0, c, o]``."""
    if strides != (1, 1):
        x = x[:, ::strides[0], ::strides[1], :]
    return jax.lax.dot_general(x, k[0, 0], (((3,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type)


def _patch_matmul(x, k, strides, pads, precision=None, preferred_element_type=None):
    """``y[b, p, q, o] = sum_{i, j, c} xpad[b, s p + i, s q + j, c] k[i, j, c, o]``."""
    kh, kw, cin, cout = k.shape
    xpad = pad_spatial(x, pads)
    out_hw = output_size(x.shape[1:3], (kh, kw), strides, pads)
    patches = [tap(xpad, i, j, out_hw, strides) for i in range(kh) for j in range(kw)]
    cols = jnp.concatenate(patches, axis=-1)                       # (B, Ho, Wo, kh kw C)
    return jax.lax.dot_general(cols, k.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                               precision=precision, preferred_element_type=preferred_element_type)


def conv_general_dilated(lhs: Array, rhs: Array, window_strides, padding, **kwargs) -> Array:
    """``jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)``, with
    the input gradient expressed as a canonical convolution, small maps as a matrix product
    over patches, and bfloat16 on CPU as tap products (see the module docstring)."""
    pads = _nhwc_pads(lhs, rhs, window_strides, padding, kwargs)
    if pads is not None and kwargs.get("preferred_element_type") in (None, lhs.dtype) \
            and bf16_conv.applies(lhs, rhs, tuple(window_strides), pads):
        return bf16_conv.conv(lhs, rhs, window_strides, pads, fallback=lambda x, k: _lax_path(
            x, k, window_strides, padding, pads, **kwargs))
    return _lax_path(lhs, rhs, window_strides, padding, pads, **kwargs)


def _lax_path(lhs, rhs, window_strides, padding, pads, **kwargs):
    """The float32-kernel path: patch matrix product on small maps, else the custom-JVP
    convolution."""
    if pads is not None and _pointwise_applies(rhs, pads):
        return _pointwise(lhs, rhs, tuple(window_strides), precision=kwargs.get("precision"),
                          preferred_element_type=kwargs.get("preferred_element_type"))
    if pads is not None and _patch_matmul_applies(lhs, rhs, window_strides, pads):
        return _patch_matmul(lhs, rhs, tuple(window_strides), pads,
                             precision=kwargs.get("precision"),
                             preferred_element_type=kwargs.get("preferred_element_type"))
    dimension_numbers = kwargs.pop("dimension_numbers", None)

    def conv(x, k, dn=dimension_numbers):
        return jax.lax.conv_general_dilated(x, k, window_strides, padding,
                                            dimension_numbers=dn, **kwargs)

    @jax.custom_jvp
    def fn(x, k):
        return conv(x, k)

    def jvp(primals, tangents):
        x, k = primals
        dx, dk = tangents
        y = conv(x, k)
        terms = []
        if not isinstance(dx, SymbolicZero):
            out_dim, in_dim, *spatial = _rhs_spec(dimension_numbers, x.ndim, k.shape)
            # The input-gradient kernel reverse(swapaxes(k)), behind a barrier: XLA does not
            # hoist a lone transpose or reverse out of a loop, but hoists this chain.
            back = jax.lax.optimization_barrier(
                jax.lax.rev(jnp.swapaxes(k, out_dim, in_dim), spatial))
            terms.append(conv(dx, jax.lax.rev(back, spatial),
                              _swapped(dimension_numbers, x.ndim, k.shape)))
        if not isinstance(dk, SymbolicZero):
            terms.append(conv(x, dk))
        if not terms:
            return y, jnp.zeros_like(y)
        dy = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        return y, dy

    fn.defjvp(jvp, symbolic_zeros=True)
    return fn(lhs, rhs)
