"""Applying a network to many images in fixed-size batches.

The last batch is padded (by repeating its final image) to the full batch size, so a jitted
function compiles once; the padded rows are dropped from the result.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def map_in_batches(fn: Callable[[Any], Any], images: Any, batch_size: int) -> np.ndarray:
    """``concatenate([fn(images[i:i + batch_size]) for i in ...])`` as a host array.

    Args:
      fn: ``(B, ...) -> (B, ...)``, e.g. a jitted classifier or feature network.
      images: ``(N, ...)``, numpy or jax; only one batch at a time is handed to ``fn``.
      batch_size: rows per call, >= 1. Every call gets exactly this many rows (or N if fewer).

    Returns:
      ``(N, ...)`` numpy array of the outputs, in order.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(np.shape(images)[0]) if np.ndim(images) else 0
    if n == 0:
        raise ValueError(f"no images to process (shape {tuple(np.shape(images))})")
    size = min(int(batch_size), n)
    outputs = []
    for start in range(0, n, size):
        batch = np.asarray(images[start:start + size])
        rows = batch.shape[0]
        if rows < size:
            pad = np.repeat(batch[-1:], size - rows, axis=0)
            batch = np.concatenate([batch, pad], axis=0)
        out = np.asarray(fn(batch))
        if out.ndim == 0 or out.shape[0] != size:
            raise ValueError(f"the function returned shape {out.shape} for a batch of {size} "
                             f"images; expected the batch size first")
        outputs.append(out[:rows])
    return np.concatenate(outputs, axis=0)
