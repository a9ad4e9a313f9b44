"""Shape checks shared by the metrics: every bad input is refused with its name and shape."""

from __future__ import annotations

from typing import Any

import numpy as np


def shape_of(x: Any) -> tuple[int, ...]:
    """The shape of an array-like (jax, numpy or nested lists)."""
    return tuple(np.shape(x))


def require_rank(name: str, x: Any, rank: int, meaning: str) -> tuple[int, ...]:
    """Raises ``ValueError`` unless ``x`` has ``rank`` dimensions; returns its shape."""
    shape = shape_of(x)
    if len(shape) != rank:
        raise ValueError(f"{name} must have {rank} dimensions ({meaning}), got shape {shape}")
    return shape


def require_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> tuple[int, ...]:
    """Raises ``ValueError`` unless ``a`` and ``b`` have the same shape; returns it."""
    sa, sb = shape_of(a), shape_of(b)
    if sa != sb:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {sa} and {sb}")
    return sa
