"""The kernel taps of a NHWC convolution, shared by the matrix-product paths (conv.py,
bf16_conv.py).

For input ``x`` padded to ``xpad`` by ``pads = ((top, bottom), (left, right))``, strides
``(s_h, s_w)`` and a ``kh x kw`` kernel, the output map is ``Ho x Wo`` with::

    Ho = (H + top + bottom - kh) // s_h + 1        (Wo likewise)

and tap ``(i, j)`` is the strided slice ``xpad[:, s_h p + i, s_w q + j, :]`` over all output
positions ``(p, q)``; the convolution is ``sum_{i, j} tap_{i, j} @ k[i, j]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def output_size(in_hw, kernel_hw, strides, pads) -> tuple[int, int]:
    """``(Ho, Wo)`` of the convolution (see the module docstring)."""
    return tuple((size + lo + hi - k) // s + 1
                 for size, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, pads))


def pad_spatial(x: Array, pads) -> Array:
    """``x`` (NHWC) padded by ``pads`` along height and width."""
    return jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))


def tap(xpad: Array, i: int, j: int, out_hw, strides) -> Array:
    """``xpad[:, s_h p + i, s_w q + j, :]`` for every output position ``(p, q)``."""
    (ho, wo), (sh, sw) = out_hw, strides
    return jax.lax.slice(xpad, (0, i, j, 0),
                         (xpad.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                          xpad.shape[3]),
                         (1, sh, sw, 1))
