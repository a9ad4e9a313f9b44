"""Checks of what a caller passes to :class:`sce_jax.Explainer`, before anything is traced.

Every per-example input is checked against the batch size and, for latents, the generator's
latent shape, and a problem names the argument: a shape fault found here is one clear
``ValueError`` instead of a type error from deep inside the compiled loop.

Images must be floating point in [0, 1], NHWC (a non-finite pixel is left to the search, which
marks that example as failed and explains the others). Integer images (``uint8`` 0..255, ``uint16``)
are refused rather than converted: whether 255 or 65535 means white is the caller's
knowledge, and silently reading 0..255 as intensities gives meaningless counterfactuals. The
message says how to convert (``images.astype(np.float32) / 255``).

A stream (:meth:`sce_jax.Explainer.explain_stream`) is stacked a block at a time; an image or
region of another shape than the stream's first is named by its position in the stream
(:func:`stacked_stream_rows`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from sce_jax.class_names import ClassNameError, class_indices


def checked_images(images: Any) -> np.ndarray:
    """``images`` as float32 (B, H, W, C) in [0, 1]; a ValueError naming the problem otherwise."""
    array = np.asarray(images)
    if array.dtype.kind in "iub":
        top = {1: 255, 2: 65535}.get(array.dtype.itemsize) if array.dtype.kind == "u" else None
        hint = (f"convert them with images.astype(np.float32) / {top}" if top
                else "convert them to floats in [0, 1]")
        raise ValueError(f"images have dtype {array.dtype}; the explainer takes floating-point "
                         f"images in [0, 1]: {hint}")
    if array.dtype.kind != "f":
        raise ValueError(f"images have dtype {array.dtype}; expected floating-point images in [0, 1]")
    if array.ndim != 4:
        hint = " (one grey image per row? add the channel axis: images[..., None])" if array.ndim == 3 else ""
        raise ValueError(f"images must be (B, H, W, C), got shape {array.shape}{hint}")
    if array.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    array = array.astype(np.float32, copy=False)
    # Non-finite pixels are the search's to report per example (that example fails alone).
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if low < 0.0 or high > 1.0:
        hint = " (0..255 pixel values? divide by 255)" if high > 1.0 and high <= 255.0 else ""
        raise ValueError(f"images must lie in [0, 1]; their values span [{low:.4g}, {high:.4g}]{hint}")
    return array


def stacked_stream_rows(name: str, rows: Sequence[Any], start: int,
                        expected: dict[str, tuple[int, ...]]) -> np.ndarray:
    """Stacks one block of a stream's per-image arrays (``rows[i]`` is item ``start + i``).

    Every item must have the shape of the stream's first, remembered in ``expected[name]``
    across blocks; another shape is a ValueError naming its index in the stream, its shape and
    the expected one (instead of numpy's "all input arrays must have the same shape").
    """
    arrays = [np.asarray(r) for r in rows]
    want = expected.setdefault(name, tuple(arrays[0].shape))
    for i, array in enumerate(arrays):
        if tuple(array.shape) != want:
            item = name[:-1] if name.endswith("s") else name
            raise ValueError(f"{name}: the {item} at index {start + i} of the stream has shape "
                             f"{tuple(array.shape)}; expected {want}, the shape of the stream's "
                             f"first {item} (all of a stream's {name} have one shape)")
    return np.stack(arrays)


def per_example(name: str, values: Any, batch: int, dtype) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per image, shape ({batch},); got shape {array.shape}")
    if array.shape[0] != batch:
        raise ValueError(f"{name} has {array.shape[0]} value(s) for {batch} image(s); give one per image")
    return array.astype(dtype)


def checked_targets(targets: Sequence[Any] | np.ndarray | None, batch: int, *, kind: str,
                    class_names: Sequence[str] | None) -> np.ndarray | None:
    """int32 (B,) targets; class names are looked up in ``class_names`` (None passes through)."""
    if targets is None:
        return None
    array = np.asarray(targets, dtype=object)
    if array.ndim == 0:
        raise ValueError(f"targets must be one target per image, a sequence of length {batch}; "
                         f"got the single value {targets!r}")
    per_example("targets", np.zeros(array.shape[0]) if array.ndim == 1 else array, batch, np.int32)
    try:
        return class_indices(list(array), class_names,
                             what="target attribute" if kind == "flip" else "target")
    except ClassNameError:
        raise
    except (TypeError, ValueError) as e:
        raise ValueError(f"targets: {e}") from None


def checked_example_ids(example_ids: Any, batch: int) -> np.ndarray | None:
    if example_ids is None:
        return None
    return per_example("example_ids", example_ids, batch, np.int32)


def checked_regions(regions: Any, batch: int, height: int, width: int) -> np.ndarray | None:
    if regions is None:
        return None
    array = np.asarray(regions, np.float32)
    if array.ndim == 3:
        array = array[..., None]
    if array.shape != (batch, height, width, 1):
        raise ValueError(f"regions must be (B, H, W[, 1]) = ({batch}, {height}, {width}[, 1]), "
                         f"one mask per image; got shape {np.shape(regions)}")
    return array


def checked_latents(latents: Any, batch: int, latent_shape: tuple[int, ...]) -> np.ndarray | None:
    if latents is None:
        return None
    array = np.asarray(latents, np.float32)
    expected = (batch, *latent_shape)
    if array.shape != expected:
        raise ValueError(f"latents must have shape {expected} (one (h, w, c) latent per image for "
                         f"this generator and image size); got {array.shape}")
    return array


def checked_valid(valid: Any, batch: int) -> np.ndarray | None:
    return None if valid is None else per_example("valid", valid, batch, bool)
