"""Squares: a synthetic benchmark with a known cause and a known confounder.

Each image (64x64 RGB by default) is a flat background with one axis-aligned square:

- the **square's colour decides the class**: class 0 reddish, class 1 greenish;
- the **background colour is a confounder**: bluish (0) or yellowish (1), equal to the
  class with probability ``confounder_rate`` (0.5: independent of the class; 0.9: a
  classifier can reach 90% accuracy from the background alone);
- the square's side is uniform in ``[round(0.25 S), round(0.5 S)]`` pixels and its position
  uniform over the places where it fits entirely;
- every colour is its class's base colour plus a uniform jitter in ``[-jitter, +jitter]``
  per channel (clipped to [0, 1]).

The factors come back with the images, so a metric can check which one a counterfactual
changed (:func:`factor_masks` gives the regions for
:func:`sce_jax.metrics.ground_truth.factor_changes`: factor 0 = square, 1 = background).
A test set written by :func:`write_test_set` is read back as a data source of its own
(:class:`SquaresDataset`, ``data.format = "squares"``, also chosen for any ``.npz`` holding
``boxes``), whose :meth:`SquaresDataset.factor_masks` gives the evaluation those regions.

Determinism: example ``i`` is drawn from row ``i`` of one (N, 11) uniform matrix of
``numpy.random.default_rng(seed)``, so ``generate(n, seed=s)`` is the first ``n`` examples
of ``generate(m, seed=s)`` for any ``m >= n``.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Sequence

import numpy as np

from sce_jax.data import Dataset, NpzDataset, write_npz

IMAGE_SIZE = 64
CLASS_NAMES = ("red square", "green square")
BACKGROUND_NAMES = ("blue background", "yellow background")
FACTOR_NAMES = ("square colour", "background colour")
SQUARE_RGB = np.array([[0.85, 0.15, 0.15], [0.15, 0.75, 0.20]], np.float32)
BACKGROUND_RGB = np.array([[0.25, 0.35, 0.85], [0.90, 0.85, 0.35]], np.float32)
_UNIFORMS = 11  # label, agreement, side, top, left, 3 square jitters, 3 background jitters
_CHUNK = 1024   # examples rendered at once (bounds the temporaries)


@dataclasses.dataclass(frozen=True)
class Squares:
    """Images and their factors.

    Attributes:
      images: (N, S, S, 3) float32 in [0, 1].
      labels: (N,) int32, the class = the square's colour class (0 red, 1 green).
      background: (N,) int32, the background colour class (0 blue, 1 yellow).
      boxes: (N, 4) int32 square boxes (top, left, height, width) in pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    background: np.ndarray
    boxes: np.ndarray

    @property
    def square_colour(self) -> np.ndarray:
        return self.labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _jittered(base: np.ndarray, classes: np.ndarray, u: np.ndarray, jitter: float) -> np.ndarray:
    return np.clip(base[classes] + (2.0 * u - 1.0) * jitter, 0.0, 1.0).astype(np.float32)


def generate(num: int, *, seed: int = 0, confounder_rate: float = 0.9,
             image_size: int = IMAGE_SIZE, jitter: float = 0.08) -> Squares:
    """Generates ``num`` examples (see the module docstring for the distribution)."""
    if num < 0:
        raise ValueError(f"num={num} must be >= 0")
    if not 0.0 <= confounder_rate <= 1.0:
        raise ValueError(f"confounder_rate={confounder_rate} must be in [0, 1]")
    if image_size < 8:
        raise ValueError(f"image_size={image_size} must be >= 8")
    if not 0.0 <= jitter <= 0.5:
        raise ValueError(f"jitter={jitter} must be in [0, 0.5]")
    u = np.random.default_rng(seed).random((num, _UNIFORMS))
    labels = (u[:, 0] < 0.5).astype(np.int32)
    background = np.where(u[:, 1] < confounder_rate, labels, 1 - labels).astype(np.int32)
    smallest, largest = round(0.25 * image_size), round(0.5 * image_size)
    side = smallest + np.minimum((u[:, 2] * (largest - smallest + 1)).astype(np.int32),
                                 largest - smallest)
    room = image_size - side + 1
    top = np.minimum((u[:, 3] * room).astype(np.int32), room - 1)
    left = np.minimum((u[:, 4] * room).astype(np.int32), room - 1)
    square_rgb = _jittered(SQUARE_RGB, labels, u[:, 5:8], jitter)
    background_rgb = _jittered(BACKGROUND_RGB, background, u[:, 8:11], jitter)
    boxes = np.stack([top, left, side, side], axis=1).astype(np.int32)

    images = np.empty((num, image_size, image_size, 3), np.float32)
    for start in range(0, num, _CHUNK):
        part = slice(start, start + _CHUNK)
        images[part] = background_rgb[part, None, None, :]
        np.copyto(images[part], square_rgb[part, None, None, :],
                  where=box_masks(boxes[part], image_size)[..., None])
    return Squares(images=images, labels=labels, background=background, boxes=boxes)


def box_masks(boxes: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 4) boxes (top, left, height, width) -> (N, S, S) bool, True inside the box."""
    boxes = np.asarray(boxes)
    coords = np.arange(image_size)
    top, left, height, width = (boxes[:, i, None] for i in range(4))
    rows = (coords >= top) & (coords < top + height)      # (N, S)
    cols = (coords >= left) & (coords < left + width)     # (N, S)
    return rows[:, :, None] & cols[:, None, :]


def factor_masks(boxes: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """(N, 2, S, S) float32 regions of the factors: 0 = the square, 1 = the background."""
    square = box_masks(boxes, image_size)
    return np.stack([square, ~square], axis=1).astype(np.float32)


def write_test_set(path: str, *, num: int, seed: int, confounder_rate: float = 0.9,
                   image_size: int = IMAGE_SIZE) -> dict:
    """Writes ``num`` examples to an ``.npz`` readable by :func:`sce_jax.data.open_dataset`.

    The file holds ``images`` (N, S, S, 3) uint8 (``round(255 x)``), ``labels``,
    ``background``, ``boxes`` and ``class_names``. Returns a JSON-ready record of it.
    """
    data = generate(num, seed=seed, confounder_rate=confounder_rate, image_size=image_size)
    images = np.rint(data.images * 255.0).astype(np.uint8)
    write_npz(path, images=images, labels=data.labels, background=data.background,
              boxes=data.boxes, class_names=np.array(CLASS_NAMES))
    agreement = float(np.mean(data.labels == data.background)) if num else None
    return {"file": os.path.basename(path), "dataset": "squares", "num_images": num, "seed": seed,
            "confounder_rate": confounder_rate, "measured_agreement": agreement,
            "image_size": image_size, "class_names": list(CLASS_NAMES),
            "factor_names": list(FACTOR_NAMES)}


class SquaresDataset(NpzDataset):
    """A squares test set (:func:`write_test_set`): its images and labels, and the factor
    regions of each example from its ``boxes`` (in the stored images' pixels)."""

    @staticmethod
    def matches(source: str) -> bool:
        """An ``.npz`` that holds ``boxes`` (read from the file's index, not its arrays)."""
        if not source.lower().endswith(".npz") or not os.path.isfile(source):
            return False
        try:
            with np.load(source, allow_pickle=False) as npz:
                return "boxes" in npz.files
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return False

    @staticmethod
    def options():
        return Dataset.options()  # none: the layout write_test_set writes

    @classmethod
    def open(cls, source, *, limit, class_names, options, **geometry):
        return cls(source, limit=limit, **geometry)

    def __init__(self, path: str, *, limit: int | None = None, **geometry):
        super().__init__(path, images_key="images", labels_key="labels", limit=limit, **geometry)
        with np.load(path, allow_pickle=False) as npz:
            self._boxes = np.asarray(npz["boxes"]) if "boxes" in npz.files else None

    def factor_masks(self, example_ids: Sequence[int]) -> tuple[np.ndarray | None, str]:
        """``((N, 2, S, S) regions, "")`` (:func:`factor_masks`: 0 = square, 1 = background)
        of these examples, or ``(None, why not)`` when the run resized the images (the boxes
        are in the stored pixels) or the boxes do not cover the examples."""
        height, width = self.image_size
        if self.stored_size != (height, width) or height != width:
            return None, (f"the run resized the {self.stored_size} images to {(height, width)}; "
                          "the boxes are in the stored images' pixels")
        ids = np.asarray(example_ids, np.int64)
        boxes = self._boxes
        if (boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4
                or (ids.size and ids.max() >= len(boxes))):
            shape = None if boxes is None else boxes.shape
            return None, f"{self.source}: 'boxes' of shape {shape} do not cover the examples"
        return factor_masks(boxes[ids], height), ""
