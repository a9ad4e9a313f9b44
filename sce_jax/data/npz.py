"""Arrays in an ``.npz`` file as a data source (the MedMNIST layout), and writing one.

``images`` (N, H, W) or (N, H, W, C), uint8 / uint16 / bool / float in [0, 1], and ``labels``
(N,) or (N, 1) ints; other key names (``train_images``, ``test_labels``, ...) are chosen with
``images_key`` / ``labels_key`` (``labels_key=None``: no labels). The arrays are read into
memory when the file is opened (an ``.npz`` member is one array); data larger than memory
belongs in a folder or a CSV. An image with NaN or infinite pixels is skipped with its reason.
"""

from __future__ import annotations

import os
import zipfile

import ml_collections
import numpy as np

from sce_jax.data import image_io
from sce_jax.data.dataset import NO_LABEL, DataError, Dataset, ExampleProblem, check_source_file


class NpzDataset(Dataset):
    """Images and labels from arrays in an ``.npz`` file (the MedMNIST layout)."""

    @staticmethod
    def matches(source: str) -> bool:
        return source.lower().endswith(".npz")

    @staticmethod
    def options() -> ml_collections.ConfigDict:
        c = ml_collections.ConfigDict()
        c.images_key = "images"  # the array of images (N, H, W[, C])
        c.labels_key = "labels"  # the array of labels (N,); '' for none
        return c

    @classmethod
    def open(cls, source, *, limit, class_names, options, **geometry):
        options = dict(options)
        options["labels_key"] = options.get("labels_key") or None
        return cls(source, limit=limit, **options, **geometry)

    def __init__(self, path: str, *, images_key: str = "images", labels_key: str | None = "labels",
                 limit: int | None = None, **options):
        images, labels = _read_npz(path, images_key, labels_key)
        if limit:
            images, labels = images[:limit], (None if labels is None else labels[:limit])
        self._pixels = _npz_pixels(images, path, images_key)
        self.stored_size = (int(images.shape[1]), int(images.shape[2]))  # (height, width) in the file
        if labels is None:
            labels = np.full(images.shape[0], NO_LABEL, np.int32)
        sources = [f"{path}[{i}]" for i in range(images.shape[0])]
        super().__init__(path, sources, labels, np.full(images.shape[0], NO_LABEL, np.int32),
                         **options)

    def _read(self, example_id):
        return self._pixels(example_id), None


def _read_npz(path: str, images_key: str, labels_key: str | None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    check_source_file(path, "npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if images_key not in keys:
                raise DataError(f"{path} has no array {images_key!r} (it holds: "
                                f"{', '.join(keys) or 'nothing'}); choose the images key "
                                "(config: data.npz.images_key)")
            if labels_key and labels_key not in keys:
                raise DataError(f"{path} has no array {labels_key!r} (it holds: {', '.join(keys)}); "
                                "choose the labels key, or none for unlabelled images "
                                "(config: data.npz.labels_key='')")
            images = npz[images_key]
            labels = npz[labels_key] if labels_key else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read {path} as an .npz file: {e}") from e
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 2, 3, 4)):
        raise DataError(f"{path}: {images_key!r} has shape {images.shape}; expected (N, H, W) or "
                        "(N, H, W, C) with C in 1 (grey), 2 (grey+alpha), 3 (RGB), 4 (RGBA)")
    if images.shape[0] == 0:
        raise DataError(f"{path}: {images_key!r} holds no images (shape {images.shape})")
    if labels is not None:
        labels = _npz_labels(labels, images.shape[0], path, labels_key)
    return images, labels


def _npz_labels(labels: np.ndarray, n: int, path: str, key: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: {key!r} has shape {labels.shape}; expected (N,) or (N, 1) "
                        "class indices (multi-label arrays are not supported as labels)")
    if labels.shape[0] != n:
        raise DataError(f"{path}: {labels.shape[0]} labels for {n} images")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{path}: {key!r} has dtype {labels.dtype}; expected integer class indices")
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: {key!r} holds a negative label ({int(labels.min())}) at index "
                        f"{int(np.argmin(labels))}")
    return labels.astype(np.int32)


def _npz_pixels(images: np.ndarray, path: str, key: str):
    """Validates the array once; returns ``i -> float32 (H, W, 1|3)`` in [0, 1]."""
    kind = images.dtype
    if kind == np.uint8:
        scale = 255.0
    elif kind == np.uint16:
        scale = 65535.0
    elif kind == bool:
        scale = 1.0
    elif np.issubdtype(kind, np.floating):
        scale = 1.0
        nonfinite = ~np.isfinite(images).reshape(images.shape[0], -1).all(axis=1)
        if nonfinite.all():
            raise DataError(f"{path}: {key!r} holds NaN or infinite pixels in every image")
        finite_images = images[~nonfinite] if nonfinite.any() else images
        low, high = float(finite_images.min()), float(finite_images.max())
        if low < 0.0 or high > 1.0:
            raise DataError(f"{path}: float {key!r} must lie in [0, 1], found [{low:g}, {high:g}]; "
                            "store uint8 (0..255) or divide by the maximum")
    else:
        raise DataError(f"{path}: {key!r} has dtype {kind}; expected uint8, uint16, bool or float "
                        "in [0, 1]")

    bad = set(np.flatnonzero(nonfinite).tolist()) if np.issubdtype(kind, np.floating) else set()

    def pixels(i: int) -> np.ndarray:
        if i in bad:  # one bad image is skipped, as a bad file in a folder is
            raise ExampleProblem(f"the image holds NaN or infinite pixels ({path}[{i}])")
        x = images[i].astype(np.float32) / scale
        if x.ndim == 2:
            x = x[..., None]
        if x.shape[-1] in (2, 4):  # alpha composited on white, as for image files
            x = x[..., :-1] * x[..., -1:] + (1.0 - x[..., -1:])
        return x

    return pixels


def write_npz(path: str, *, images: np.ndarray, labels: np.ndarray | None = None,
              **extra: np.ndarray) -> None:
    """Writes an ``.npz`` in the layout :class:`NpzDataset` reads, atomically (compressed).

    ``images`` (N, H, W[, C]) and ``labels`` (N,) as described in the module docstring;
    ``extra`` arrays (factors, source indices, class names as a str array) are stored beside
    them. Object arrays are refused (they would need pickle to read back).
    """
    arrays = {"images": np.asarray(images), **{k: np.asarray(v) for k, v in extra.items()}}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    for name, a in arrays.items():
        if a.dtype == object:
            raise ValueError(f"{path}: array {name!r} has dtype object; store numbers or strings")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with image_io.atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)
