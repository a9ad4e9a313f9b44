"""The inputs of a dataset-wide run: image folders, ``.npz`` arrays and CSV lists, in batches.

Sources (the registry :data:`sce_jax.data_sources.DATA_SOURCES`; :func:`open_dataset` takes
the one ``format`` names, or the first whose ``matches(source)`` holds):

- **an image folder**, searched recursively for ``.png .jpg .jpeg .webp .bmp .tif .tiff
  .gif`` (GIF: the first frame) and the other image formats of ``OTHER_IMAGE_EXTENSIONS``
  (HEIC, AVIF, SVG, RAW, ...: explained if Pillow decodes them, else skipped with the reason),
  any letter case, names starting with ``.`` ignored; sorted by their path relative to the
  folder. No labels.
- **an .npz file** in the MedMNIST layout: ``images`` (N, H, W) or (N, H, W, C), uint8 /
  uint16 / bool / float in [0, 1], and ``labels`` (N,) or (N, 1) ints; other key names
  (``train_images``, ``test_labels``, ...) are chosen with ``images_key`` / ``labels_key``
  (``labels_key=None``: no labels). The arrays are read into memory when the file is opened
  (an ``.npz`` member is one array); data larger than memory belongs in a folder or a CSV.
- **a squares test set** (:mod:`sce_jax.datasets.squares`): an ``.npz`` that also holds the
  squares' ``boxes``; it knows its examples' factor regions (:meth:`Dataset.factor_masks`).
- **a CSV file** with a header ``path,target[,region][,label]``: ``path`` is an image
  (relative paths are relative to the CSV's folder), ``target`` an int class index, a class
  name of the classifier's ``class_names`` or empty (no target), ``region`` an optional mask
  image of the same size whose nonzero pixels may change, ``label`` an optional int true class. One example per row, in row order.

Every example has a stable global ``example_id`` (its index in that order) and a ``source``
string (the file path, or ``file.npz[i]``).

Decoding (per batch, never up front) gives float32 [0, 1] pixels at the requested
(height, width, channels): the file is read by :func:`sce_jax.image_io.read_image` (16-bit,
palette, CMYK, alpha composited on white), grey is repeated to RGB or RGB reduced to grey
with the BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, optionally center-cropped to the
requested aspect ratio, then resized with Pillow's bilinear filter (antialiased: on a
reduction the filter widens to cover every source pixel). Region masks take the same crop
and resize and keep the pixels covered at least half (``coverage >= 0.5``).

Errors: a problem with the run's input as a whole (missing or empty folder, an npz without
its images or with NaN in every image, labels out of range, a CSV without its columns) raises
:class:`DataError` before any work. A problem with one example (a corrupt or truncated
file, a non-image with an image extension, an unreadable file, a bad region mask, an npz
image with NaN or infinite pixels) makes it a :class:`SkipRecord` with the reason, reported
with the batch it belongs to: one bad image never stops a run, whatever the source.

Batches (:func:`iterate_batches`) have a fixed shape: the last one is padded with
``valid=False`` rows, so a jitted search compiles once. Process ``p`` of ``P`` reads the
examples with ``example_id % P == p`` (strided shards: every process gets a similar mix of
the dataset's order). The number of batches of a shard depends only on the dataset, the
batch size and the ids to skip (an example that fails to decode stays in its batch as an
invalid row), so every process can compute the batch count of every other process
(:func:`num_batches`), e.g. to run the same number of collective steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import zipfile
from typing import AbstractSet, Any, Iterator, Mapping, Sequence

import ml_collections
import numpy as np
from PIL import Image

from sce_jax import image_io
from sce_jax.class_names import ClassNameError, class_index, needs_names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Image formats a folder may hold that Pillow may not decode: they are examples too, so a file
# that cannot be decoded is a skip record with its reason, never silently left out.
OTHER_IMAGE_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".jp2", ".svg", ".ico", ".psd",
                          ".dng", ".raw", ".cr2", ".nef", ".arw", ".pgm", ".ppm", ".pbm", ".tga")
CSV_REQUIRED_COLUMNS = ("path", "target")
CSV_OPTIONAL_COLUMNS = ("region", "label")
NO_LABEL = -1  # in label and target arrays: none given


class DataError(ValueError):
    """The run's input as a whole cannot be used (raised before any work)."""


@dataclasses.dataclass(frozen=True)
class SkipRecord:
    """An example that could not be used, and why (written to the run's manifest)."""

    example_id: int
    source: str
    reason: str


@dataclasses.dataclass(frozen=True)
class DecodedExample:
    """One example at the requested size: image (H, W, C) and region (H, W, 1), float32."""

    example_id: int
    image: np.ndarray
    region: np.ndarray


@dataclasses.dataclass
class Batch:
    """A fixed-shape batch; rows with ``valid=False`` are padding or skipped examples.

    Attributes:
      images: (B, H, W, C) float32 in [0, 1] (zeros where not valid).
      example_ids: (B,) int32 global ids (-1 for padding; the id for a skipped example).
      valid: (B,) bool.
      labels: (B,) int32 true classes, -1 when unknown.
      targets: (B,) int32 requested target classes (CSV), -1 when none.
      regions: (B, H, W, 1) float32, 1 where the image may change (ones when no region).
      sources: B strings ("" for padding).
      skipped: the skip records of this batch's examples that could not be decoded.
    """

    images: np.ndarray
    example_ids: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    regions: np.ndarray
    sources: list[str]
    skipped: list[SkipRecord]

    @property
    def num_valid(self) -> int:
        return int(np.sum(self.valid))


class _ExampleProblem(Exception):
    """Raised while reading one example; becomes a :class:`SkipRecord` with this reason."""


# ----------------------------------------------------------------------------- geometry


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


def convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, channels): grey repeated to RGB, RGB to BT.601 luma."""
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    if have == 3 and channels == 1:
        return image_io.to_grey(pixels)
    raise ValueError(f"cannot convert {have} channels to {channels}")


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


# ----------------------------------------------------------------------------- datasets


def _read_file_image(path: str) -> np.ndarray:
    try:
        return image_io.read_image(path)
    except FileNotFoundError:
        raise _ExampleProblem(f"file not found: {path}") from None
    except OSError as e:  # a directory, no permission, I/O error
        raise _ExampleProblem(f"cannot read file: {e}") from None
    except image_io.ImageDecodeError as e:
        raise _ExampleProblem(f"cannot decode image: {e}") from None


def _read_region(path: str, image_hw: tuple[int, int]) -> np.ndarray:
    try:
        mask = image_io.read_mask(path)
    except FileNotFoundError:
        raise _ExampleProblem(f"region mask not found: {path}") from None
    except OSError as e:
        raise _ExampleProblem(f"cannot read region mask: {e}") from None
    except image_io.ImageDecodeError as e:
        raise _ExampleProblem(f"cannot decode region mask {path}: {e}") from None
    if mask.shape != image_hw:
        raise _ExampleProblem(
            f"region mask {path} is {mask.shape[1]}x{mask.shape[0]} (width x height) but the "
            f"image is {image_hw[1]}x{image_hw[0]}; they must have the same size")
    if not mask.any():
        raise _ExampleProblem(f"region mask {path} is empty (no nonzero pixel): nothing may change")
    return mask


class Dataset:
    """Examples of one source, decoded on demand at a fixed (height, width, channels).

    Subclasses fill ``sources``, ``labels`` and ``targets`` and implement ``_read``. As a data
    source (:data:`sce_jax.data_sources.DATA_SOURCES`) a subclass also says which sources it
    reads (:meth:`matches`), which options it takes (:meth:`options`: the defaults, which are
    the run config's ``data.<name>`` sub-config) and how it is opened (:meth:`open`).
    """

    @staticmethod
    def matches(source: str) -> bool:
        """Whether this kind of dataset reads ``source`` (when ``data.format`` is empty)."""
        return False

    @staticmethod
    def options() -> ml_collections.ConfigDict:
        """The options this source takes, with their defaults (none)."""
        return ml_collections.ConfigDict()

    @classmethod
    def open(cls, source: str, *, limit: int | None, class_names: Sequence[str] | None,
             options: Mapping[str, Any], **geometry) -> "Dataset":
        """The dataset of ``source``; ``geometry`` is ``image_size``, ``channels``, ``crop``.
        ``limit`` and ``class_names`` may be ignored (:func:`open_dataset` applies the limit)."""
        return cls(source, **options, **geometry)

    def factor_masks(self, example_ids: Sequence[int]) -> tuple[np.ndarray | None, str]:
        """``((N, F, H, W) float32 regions of the known factors, "")`` of these examples at
        the decoded size, or ``(None, why not)``: a source without known factors."""
        return None, f"the data source {self.source} has no known factor regions"

    def __init__(self, source: str, sources: Sequence[str], labels: np.ndarray,
                 targets: np.ndarray, *, image_size: tuple[int, int], channels: int, crop: bool):
        self.source = source
        self.sources = list(sources)
        self.labels = np.asarray(labels, np.int32)
        self.targets = np.asarray(targets, np.int32)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)
        self.crop = bool(crop)

    @property
    def num_examples(self) -> int:
        return len(self.sources)

    @property
    def has_labels(self) -> bool:
        return bool(np.any(self.labels >= 0))

    @property
    def max_label(self) -> int | None:
        """The largest label given (None without labels)."""
        return int(self.labels.max()) if self.has_labels else None

    @property
    def num_classes_seen(self) -> int | None:
        """How many distinct labels occur (None without labels)."""
        return int(np.unique(self.labels[self.labels >= 0]).size) if self.has_labels else None

    def shard_ids(self, process_index: int = 0, process_count: int = 1,
                  skip_ids: AbstractSet[int] = frozenset()) -> np.ndarray:
        """This process's example ids (``id % process_count == process_index``), minus ``skip_ids``."""
        _check_process(process_index, process_count)
        ids = np.arange(process_index, self.num_examples, process_count, dtype=np.int64)
        if skip_ids:
            ids = ids[~np.isin(ids, np.fromiter(skip_ids, np.int64, len(skip_ids)))]
        return ids

    def count_remaining(self, done: AbstractSet[int] = frozenset(), *, process_index: int = 0,
                        process_count: int = 1) -> int:
        """How many examples of this process's shard are not in ``done``."""
        return int(self.shard_ids(process_index, process_count, done).size)

    def load(self, example_id: int) -> DecodedExample | SkipRecord:
        """Decodes one example, or says why it cannot be used."""
        try:
            image, region = self._read(example_id)
            image = fit_image(image, self.image_size, self.channels, crop=self.crop)
            if region is None:
                region = np.ones(self.image_size + (1,), np.float32)
            else:
                region = fit_region(region, self.image_size, crop=self.crop)
                if not region.any():
                    raise _ExampleProblem(
                        f"region mask is empty after resizing to {self.image_size[1]}x"
                        f"{self.image_size[0]}: its nonzero area is too small")
        except _ExampleProblem as e:
            return SkipRecord(example_id, self.sources[example_id], str(e))
        return DecodedExample(example_id, image, region)

    def _read(self, example_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Native-size float (h, w, 1|3) pixels and an optional bool (h, w) region."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, {self.num_examples} examples, "
                f"size={self.image_size}, channels={self.channels}, crop={self.crop})")


class ImageFolderDataset(Dataset):
    """Every image file under a folder, recursively, sorted by relative path."""

    @staticmethod
    def matches(source: str) -> bool:
        return os.path.isdir(source)

    def __init__(self, folder: str, **options):
        if not os.path.exists(folder):
            raise DataError(f"image folder {folder} does not exist")
        if not os.path.isdir(folder):
            raise DataError(f"{folder} is not a folder")
        relative = sorted(_find_images(folder))
        if not relative:
            raise DataError(f"image folder {folder} holds no image files "
                            f"(looked for {' '.join(IMAGE_EXTENSIONS)}, recursively)")
        paths = [os.path.join(folder, r) for r in relative]
        none = np.full(len(paths), NO_LABEL, np.int32)
        super().__init__(folder, paths, none, none, **options)

    def _read(self, example_id):
        return _read_file_image(self.sources[example_id]), None


def _find_images(folder: str) -> list[str]:
    """Relative paths of the image files under ``folder`` (symlinked folders followed once)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink cycle or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS +
                                                                  OTHER_IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return found


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
    if not os.path.isfile(path):
        raise DataError(f"npz file {path} does not exist")
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
            raise _ExampleProblem(f"the image holds NaN or infinite pixels ({path}[{i}])")
        x = images[i].astype(np.float32) / scale
        if x.ndim == 2:
            x = x[..., None]
        if x.shape[-1] in (2, 4):  # alpha composited on white, as for image files
            x = x[..., :-1] * x[..., -1:] + (1.0 - x[..., -1:])
        return x

    return pixels


class CsvDataset(Dataset):
    """Examples listed in a CSV file: ``path,target[,region][,label]`` (see the module doc)."""

    @staticmethod
    def matches(source: str) -> bool:
        return source.lower().endswith(".csv")

    @classmethod
    def open(cls, source, *, limit, class_names, options, **geometry):
        return cls(source, class_names=class_names, **options, **geometry)

    def __init__(self, path: str, *, class_names: Sequence[str] | None = None, **options):
        rows = _read_csv_rows(path, class_names)
        folder = os.path.dirname(path)
        self._regions = [None if not r["region"] else os.path.join(folder, r["region"]) for r in rows]
        sources = [os.path.join(folder, r["path"]) for r in rows]
        super().__init__(path, sources, [r["label"] for r in rows], [r["target"] for r in rows],
                         **options)

    def _read(self, example_id):
        image = _read_file_image(self.sources[example_id])
        region_path = self._regions[example_id]
        region = None if region_path is None else _read_region(region_path, image.shape[:2])
        return image, region


def _csv_int(value: str, column: str, line: int, path: str) -> int:
    value = value.strip()
    if not value:
        return NO_LABEL
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} {value!r} is not an integer class index "
                        "(or empty for none)") from None
    if number < 0:
        raise DataError(f"{path} line {line}: {column} {number} is negative")
    return number


def _csv_target(value: str, line: int, path: str, class_names: Sequence[str] | None) -> int:
    """A CSV target: an index, empty (none) or a class name (see :mod:`sce_jax.class_names`)."""
    if not needs_names([value.strip()]):
        return _csv_int(value, "target", line, path)
    try:
        return class_index(value, class_names, what=f"{path} line {line}: target")
    except ClassNameError as e:
        raise DataError(str(e)) from None


def _read_csv_rows(path: str, class_names: Sequence[str] | None = None) -> list[dict]:
    if not os.path.isfile(path):
        raise DataError(f"CSV file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV file {path}: {e}") from e
    expected = "path,target[,region][,label]"
    if not table:
        raise DataError(f"{path} is empty; expected a header {expected}")
    header = [h.strip().lower() for h in table[0]]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in header]
    unknown = [h for h in header if h not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    if missing or unknown:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
        raise DataError(f"{path}: {'; '.join(parts)} (header: {','.join(table[0])}); expected "
                        f"the header {expected}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: repeated column in the header {','.join(table[0])}")
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            raise DataError(f"{path} line {line}: {len(cells)} fields, the header has {len(header)}")
        row = dict(zip(header, cells))
        if not row["path"].strip():
            raise DataError(f"{path} line {line}: empty path")
        rows.append({"path": row["path"].strip(),
                     "target": _csv_target(row["target"], line, path, class_names),
                     "region": row.get("region", "").strip(),
                     "label": _csv_int(row.get("label", ""), "label", line, path)})
    if not rows:
        raise DataError(f"{path} lists no images (only a header)")
    return rows


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


# ----------------------------------------------------------------------------- opening


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count="
                         f"{process_count})")


def _check_range(values: np.ndarray, num_classes: int, what: str, dataset: Dataset) -> None:
    bad = np.flatnonzero(values >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{dataset.source}: {what} {int(values[i])} of {dataset.sources[i]} is out "
                        f"of range for {num_classes} classes (valid: 0..{num_classes - 1}); "
                        f"{bad.size} example(s) affected")


def open_dataset(source: str, *, image_size: tuple[int, int], channels: int, crop: bool = False,
                 limit: int | None = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, format: str = "",
                 **options: Any) -> Dataset:
    """Opens a source (a folder, an ``.npz``, a ``.csv``, ...) and checks it as a whole.

    Args:
      source: an image folder, an ``.npz`` file or a ``.csv`` file (see the module docstring).
      image_size: (height, width) every example is decoded to.
      channels: 1 (grey) or 3 (RGB).
      crop: center-crop to the aspect ratio of ``image_size`` before resizing (otherwise the
        whole image is resized, changing its aspect ratio if they differ).
      limit: keep only the first ``limit`` examples (None or 0: all).
      num_classes: when given, labels and targets must lie in ``0..num_classes-1``.
      class_names: the classifier's class names: a CSV's target column may name classes.
      format: a name of :data:`sce_jax.data_sources.DATA_SOURCES`; "" takes the first source
        whose ``matches(source)`` holds.
      **options: the chosen source's options (its :meth:`Dataset.options`, e.g. ``images_key``
        and ``labels_key`` of an ``.npz``; ``labels_key`` None or "": no labels).

    Raises:
      DataError: the source cannot be used (the message names the file and the problem), an
        unknown ``format`` or an option the source does not take.
    """
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image_size={tuple(image_size)}: expected (height, width), both >= 1")
    if channels not in (1, 3):
        raise DataError(f"channels={channels}: expected 1 (grey) or 3 (RGB)")
    if limit is not None and limit < 0:
        raise DataError(f"limit={limit}: expected >= 0 (0 or None: all examples)")
    source = os.fspath(source)
    name = format or source_format(source)
    kind = _source_kind(name)
    known = kind.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"the {name} data source takes no option(s) {', '.join(unknown)}; it "
                        f"takes: {', '.join(known) or 'none'}")
    dataset = kind.open(source, limit=limit or None, class_names=class_names,
                        options={**known.to_dict(), **options}, image_size=size,
                        channels=channels, crop=crop)
    if limit and len(dataset.sources) > limit:
        dataset.sources = dataset.sources[:limit]
        dataset.labels = dataset.labels[:limit]
        dataset.targets = dataset.targets[:limit]
    if num_classes is not None:
        _check_range(dataset.labels, num_classes, "label", dataset)
        _check_range(dataset.targets, num_classes, "target", dataset)
    return dataset


def source_format(source: str) -> str:
    """The name of the first data source whose ``matches(source)`` holds.

    Raises:
      DataError: no source reads it (a missing path, or a file of another type).
    """
    from sce_jax.data_sources import DATA_SOURCES

    source = os.fspath(source)
    for name, kind in DATA_SOURCES.items():
        if kind.matches(source):
            return name
    if not os.path.exists(source):
        raise DataError(f"data source {source} does not exist (expected an image folder, "
                        "an .npz or a .csv file)")
    raise DataError(f"data source {source} is neither a folder nor an .npz or .csv file")


def _source_kind(name: str) -> type[Dataset]:
    from sce_jax.data_sources import DATA_SOURCES

    problem = DATA_SOURCES.problem(name)
    if problem:
        raise DataError(problem)
    return DATA_SOURCES[name]


def open_configured(data_config: Mapping[str, Any], *, num_classes: int | None = None,
                    class_names: Sequence[str] | None = None) -> Dataset:
    """:func:`open_dataset` of a run config's ``data`` section: its source, size, channels,
    crop, limit and format, and the chosen source's options, its ``data.<format>`` sub-config
    passed through whole."""
    source = os.fspath(data_config["source"])
    name = data_config.get("format") or source_format(source)
    options = data_config.get(name) if name in data_config else None
    return open_dataset(source, image_size=tuple(data_config["image_size"]),
                        channels=int(data_config["channels"]), crop=bool(data_config["crop"]),
                        limit=int(data_config["limit"]) or None, num_classes=num_classes,
                        class_names=class_names, format=name,
                        **(dict(options) if options else {}))


# ----------------------------------------------------------------------------- batching


def num_batches(dataset: Dataset, batch_size: int, *, process_index: int = 0,
                process_count: int = 1, skip_ids: AbstractSet[int] = frozenset()) -> int:
    """How many batches :func:`iterate_batches` yields for one process's shard."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    remaining = dataset.count_remaining(skip_ids, process_index=process_index,
                                        process_count=process_count)
    return -(-remaining // batch_size)


def max_num_batches(dataset: Dataset, batch_size: int, *, process_count: int = 1,
                    skip_ids: AbstractSet[int] = frozenset()) -> int:
    """The largest :func:`num_batches` over all processes (each process can compute it)."""
    return max(num_batches(dataset, batch_size, process_index=p, process_count=process_count,
                           skip_ids=skip_ids) for p in range(process_count))


def _assemble(dataset: Dataset, ids: np.ndarray, results: list, batch_size: int) -> Batch:
    h, w = dataset.image_size
    images = np.zeros((batch_size, h, w, dataset.channels), np.float32)
    regions = np.ones((batch_size, h, w, 1), np.float32)
    example_ids = np.full(batch_size, -1, np.int32)
    valid = np.zeros(batch_size, bool)
    labels = np.full(batch_size, NO_LABEL, np.int32)
    targets = np.full(batch_size, NO_LABEL, np.int32)
    sources = [""] * batch_size
    skipped = []
    for row, (example_id, result) in enumerate(zip(ids, results)):
        example_id = int(example_id)
        example_ids[row] = example_id
        labels[row] = dataset.labels[example_id]
        targets[row] = dataset.targets[example_id]
        sources[row] = dataset.sources[example_id]
        if isinstance(result, SkipRecord):
            skipped.append(result)
        else:
            images[row] = result.image
            regions[row] = result.region
            valid[row] = True
    return Batch(images=images, example_ids=example_ids, valid=valid, labels=labels,
                 targets=targets, regions=regions, sources=sources, skipped=skipped)


def iterate_batches(dataset: Dataset, batch_size: int, *, process_index: int = 0,
                    process_count: int = 1, skip_ids: AbstractSet[int] = frozenset(),
                    pad_to_num_batches: int | None = None, num_threads: int | None = None,
                    prefetch: int = 1) -> Iterator[Batch]:
    """Fixed-shape batches of one process's shard, decoded lazily (see the module docstring).

    Args:
      dataset: from :func:`open_dataset`.
      batch_size: rows per batch; the last batch is padded with ``valid=False`` rows.
      process_index, process_count: this process reads ids with ``id % process_count ==
        process_index``.
      skip_ids: example ids to leave out (already done: a resumed run).
      pad_to_num_batches: yield all-padding batches after the data until there are this many
        (e.g. :func:`max_num_batches`, so every process runs the same number of steps).
      num_threads: decoding threads (default ``min(8, cpu count)``; 0 decodes in the calling
        thread).
      prefetch: batches decoded ahead of the one being used (0: none).

    Yields:
      :class:`Batch`; an example that fails to decode is an invalid row of its batch and a
      :class:`SkipRecord` in ``batch.skipped``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    ids = dataset.shard_ids(process_index, process_count, skip_ids)
    chunks = [ids[i:i + batch_size] for i in range(0, ids.size, batch_size)]
    if pad_to_num_batches is not None:
        if pad_to_num_batches < len(chunks):
            raise ValueError(f"pad_to_num_batches={pad_to_num_batches} is less than the "
                             f"{len(chunks)} batches of process {process_index}")
        chunks += [ids[:0]] * (pad_to_num_batches - len(chunks))
    threads = min(8, os.cpu_count() or 1) if num_threads is None else int(num_threads)
    return _decoded_batches(dataset, chunks, batch_size, threads, prefetch)


def _decoded_batches(dataset: Dataset, chunks: list[np.ndarray], batch_size: int, threads: int,
                     prefetch: int) -> Iterator[Batch]:
    """The generator behind :func:`iterate_batches` (arguments already checked)."""
    if threads <= 0:
        for chunk in chunks:
            yield _assemble(dataset, chunk, [dataset.load(int(i)) for i in chunk], batch_size)
        return
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="sce_jax-decode")
    try:
        pending = collections.deque()
        upcoming = iter(chunks)

        def submit_next() -> None:
            chunk = next(upcoming, None)
            if chunk is not None:
                pending.append((chunk, [pool.submit(dataset.load, int(i)) for i in chunk]))

        for _ in range(max(0, prefetch) + 1):
            submit_next()
        while pending:
            chunk, futures = pending.popleft()
            submit_next()
            yield _assemble(dataset, chunk, [f.result() for f in futures], batch_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
