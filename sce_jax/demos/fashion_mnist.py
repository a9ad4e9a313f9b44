"""Fashion-MNIST, read from local idx files (nothing is downloaded).

The Debian package ``dataset-fashion-mnist`` installs the four files of the original release
in ``/usr/share/datasets/fashion-mnist``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60000 images)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10000 images, split "test")

Images are 28x28 uint8 grey, labels 0..9 (:data:`CLASS_NAMES`). The idx format: 2 zero
bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, each dimension as a big-endian uint32, then the
values in C order, big-endian.

:func:`write_test_subset` makes the small balanced subset that ships with the package.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Sequence

import numpy as np

from sce_jax.data import write_npz

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
APT_PACKAGE = "dataset-fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class FashionMnistError(FileNotFoundError):
    """The Fashion-MNIST files are missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``images`` (N, 28, 28) uint8 and ``labels`` (N,) int32 in 0..9."""

    name: str
    images: np.ndarray
    labels: np.ndarray


def read_idx(path: str) -> np.ndarray:
    """Reads an idx file (gzip-compressed when its name ends in ``.gz``) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # includes a damaged gzip stream
        raise FashionMnistError(f"cannot read idx file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise FashionMnistError(f"{path} is not an idx file (header bytes {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FashionMnistError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise FashionMnistError(f"{path}: header says shape {shape} ({expected} bytes of data) "
                                f"but the file holds {len(data) - header}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(directory: str, stem: str) -> str:
    for name in (f"{stem}.gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FashionMnistError(
        f"Fashion-MNIST file {os.path.join(directory, stem)}.gz is missing; install the Debian "
        f"package {APT_PACKAGE} (`apt-get install {APT_PACKAGE}`), which puts the files in "
        f"{DEFAULT_DIR}, or pass the folder that holds them")


def load_split(split: str = "train", directory: str = DEFAULT_DIR) -> Split:
    """Loads ``"train"`` (60000) or ``"test"`` (10000) from ``directory``."""
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"split={split!r}: expected one of {tuple(SPLIT_PREFIXES)}")
    prefix = SPLIT_PREFIXES[split]
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise FashionMnistError(f"{images_path}: expected uint8 images (N, H, W), got "
                                f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise FashionMnistError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise FashionMnistError(f"{labels_path}: labels outside 0..{len(CLASS_NAMES) - 1}")
    return Split(split, images, labels.astype(np.int32))


def balanced_indices(labels: np.ndarray, per_class: int, seed: int,
                     exclude: Sequence[int] = ()) -> np.ndarray:
    """``per_class`` random indices of every class, interleaved by class (0, 1, .., 9, 0, ..),
    none of them in ``exclude`` (a validation subset apart from the test subset).

    Interleaving makes any prefix of the subset as balanced as it can be.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    excluded = np.zeros(labels.shape, bool)
    excluded[np.asarray(exclude, np.int64)] = True
    picks = []
    for c in classes:
        members = np.flatnonzero((labels == c) & ~excluded)
        if members.size < per_class:
            raise ValueError(f"class {int(c)} has {members.size} examples, fewer than "
                             f"per_class={per_class}")
        picks.append(np.sort(rng.choice(members, per_class, replace=False)))
    return np.stack(picks, axis=1).reshape(-1)


def write_test_subset(path: str, *, per_class: int = 10, seed: int = 0, split: str = "test",
                      pad_to: int | None = 32, directory: str = DEFAULT_DIR,
                      exclude: Sequence[int] = ()) -> dict:
    """Writes a small balanced subset to an ``.npz`` readable by :func:`sce_jax.data.open_dataset`.

    Args:
      path: the ``.npz`` to write (atomically).
      per_class: images of each class (chosen at random with ``seed``, without repeats).
      split: the split to draw from.
      exclude: indices of the split never drawn (the demo's validation subset leaves out its
        test subset: settings are chosen on images the reported figures never saw).
      pad_to: zero-pad the 28x28 images to this size, centered (32 by default: a multiple of
        the 8x downsampling of Stable-Diffusion-style autoencoders, and the size the demo
        models are trained at); None keeps 28x28.

    Returns:
      A JSON-ready record of what was written (for provenance files).

    The file holds ``images`` (N, S, S) uint8, ``labels`` (N,) int32, ``source_indices``
    (N,) (the indices in the split) and ``class_names``.
    """
    data = load_split(split, directory)
    indices = balanced_indices(data.labels, per_class, seed, exclude)
    images = data.images[indices]
    if pad_to is not None:
        h, w = images.shape[1:]
        if pad_to < max(h, w):
            raise ValueError(f"pad_to={pad_to} is smaller than the {h}x{w} images")
        top, left = (pad_to - h) // 2, (pad_to - w) // 2
        images = np.pad(images, ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left)))
    write_npz(path, images=images, labels=data.labels[indices],
              source_indices=indices.astype(np.int64), class_names=np.array(CLASS_NAMES))
    return {"file": os.path.basename(path), "dataset": "Fashion-MNIST", "split": split,
            "per_class": per_class, "seed": seed, "num_images": int(indices.size),
            "image_size": list(images.shape[1:]), "padding": pad_to,
            "source_indices": [int(i) for i in indices],
            **({"excluded": "the test subset's indices"} if len(exclude) else {})}
