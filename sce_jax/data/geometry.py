"""Fitting a decoded image to the run's size and channels.

Grey is repeated to RGB, RGB is reduced to grey with the BT.601 luma
``0.299 R + 0.587 G + 0.114 B`` (:func:`convert_channels`); the image is
optionally center-cropped to the requested aspect ratio, then resized with Pillow's bilinear
filter (antialiased: on a reduction the filter widens to cover every source pixel). Region
masks take the same crop and resize and keep the pixels covered at least half
(``coverage >= 0.5``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ITU-R BT.601 luma weights of (R, G, B): the ones Pillow's "L" conversion uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def center_crop_box(height: int, width: int, target_height: int, target_width: int
                    ) -> tuple[int, int, int, int]:
    """The largest centered (top, left, height, width) box with the target's aspect ratio."""
    if width * target_height > height * target_width:  # too wide: crop the width
        new_w = max(1, round(height * target_width / target_height))
        return 0, (width - new_w) // 2, height, new_w
    new_h = max(1, round(width * target_height / target_width))
    return (height - new_h) // 2, 0, new_h, width


def _resize_channels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of float (h, w, C) to (H, W, C), channel by channel."""
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
                           .resize((width, height), Image.Resampling.BILINEAR))
                for c in range(pixels.shape[-1])]
    return np.stack(channels, axis=-1)


def convert_channels(pixels, channels: int):
    """(..., 1|3) -> (..., channels): grey repeated to RGB, RGB to the BT.601 luma
    ``0.299 R + 0.587 G + 0.114 B``.

    The one conversion of the package: the data pipeline calls it on numpy arrays (numpy
    out), the classifier's preprocessing on JAX arrays inside the search (JAX out,
    differentiable).
    """
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1 and channels == 3:
        return pixels.repeat(3, axis=-1)
    if have == 3 and channels == 1:
        return (pixels * np.asarray(LUMA_WEIGHTS, pixels.dtype)).sum(axis=-1, keepdims=True)
    raise ValueError(f"cannot convert images with {have} channels to {channels} channels")


def fit_image(pixels: np.ndarray, size: tuple[int, int], channels: int, *, crop: bool = False
              ) -> np.ndarray:
    """Float (h, w, 1|3) in [0, 1] -> float32 (H, W, channels): channels, crop, resize."""
    pixels = convert_channels(np.asarray(pixels, np.float32), channels)
    if crop:
        top, left, h, w = center_crop_box(pixels.shape[0], pixels.shape[1], *size)
        pixels = pixels[top:top + h, left:left + w]
    return np.clip(_resize_channels(pixels, size), 0.0, 1.0).astype(np.float32)


def fit_region(mask: np.ndarray, size: tuple[int, int], *, crop: bool = False) -> np.ndarray:
    """Bool (h, w) -> float32 (H, W, 1) in {0, 1}: same crop and resize, coverage >= 0.5."""
    coverage = fit_image(mask.astype(np.float32)[..., None], size, 1, crop=crop)
    return (coverage >= 0.5).astype(np.float32)
