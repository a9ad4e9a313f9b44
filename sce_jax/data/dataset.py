"""A dataset of a run: examples decoded on demand, the records of those that cannot be used.

:class:`Dataset` is the base of every data source (:mod:`sce_jax.data.sources`): a subclass
fills ``sources``, ``labels`` and ``targets`` and implements ``_read``; :meth:`Dataset.load`
fits what it read to the run's (height, width, channels) (:mod:`sce_jax.data.geometry`).
Every example has a stable global ``example_id`` (its index in the source's order) and a
``source`` string (the file path, or ``file.npz[i]``).

Errors: a problem with the run's input as a whole raises :class:`DataError` before any work;
a problem with one example (a corrupt or truncated file, a non-image with an image extension,
an unreadable file, a FIFO, socket or device under an image's name, a bad region mask, NaN
pixels) makes it a :class:`SkipRecord` with the reason: one bad image never stops a run,
whatever the source. A path that is not a regular file is never opened (reading a FIFO would
wait for a writer forever): :mod:`sce_jax.data.image_io` checks its kind first.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import AbstractSet, Any, Mapping, Sequence

import ml_collections
import numpy as np

from sce_jax.data import image_io
from sce_jax.data.geometry import fit_image, fit_region

NO_LABEL = -1  # in label and target arrays: none given

class DataError(ValueError):
    """The run's input as a whole cannot be used (raised before any work)."""


def check_source_file(path: str, what: str) -> None:
    """Raises :class:`DataError` unless ``path`` is a regular file: missing, a folder, or a
    FIFO, socket or device (never opened: reading a FIFO would wait for a writer forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} {path} is a folder, not a file")
    kind = image_io.special_file_kind(mode)
    if kind:
        raise DataError(f"{what} {path} is {kind}, not a regular file; it was not opened")


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



class ExampleProblem(Exception):
    """Raised while reading one example; becomes a :class:`SkipRecord` with this reason."""


def read_file_image(path: str) -> np.ndarray:
    try:
        return image_io.read_image(path)
    except FileNotFoundError:
        raise ExampleProblem(f"file not found: {path}") from None
    except image_io.NotRegularFileError as e:
        raise ExampleProblem(f"not a regular file: {e.path} is {e.kind}; it was not opened"
                             ) from None
    except OSError as e:  # a directory, no permission, I/O error
        raise ExampleProblem(f"cannot read file: {e}") from None
    except image_io.ImageDecodeError as e:
        raise ExampleProblem(f"cannot decode image: {e}") from None


def read_region(path: str, image_hw: tuple[int, int]) -> np.ndarray:
    try:
        mask = image_io.read_mask(path)
    except FileNotFoundError:
        raise ExampleProblem(f"region mask not found: {path}") from None
    except image_io.NotRegularFileError as e:
        raise ExampleProblem(f"region mask is not a regular file: {e.path} is {e.kind}; it was "
                             "not opened") from None
    except OSError as e:
        raise ExampleProblem(f"cannot read region mask: {e}") from None
    except image_io.ImageDecodeError as e:
        raise ExampleProblem(f"cannot decode region mask {path}: {e}") from None
    if mask.shape != image_hw:
        raise ExampleProblem(
            f"region mask {path} is {mask.shape[1]}x{mask.shape[0]} (width x height) but the "
            f"image is {image_hw[1]}x{image_hw[0]}; they must have the same size")
    if not mask.any():
        raise ExampleProblem(f"region mask {path} is empty (no nonzero pixel): nothing may change")
    return mask


class Dataset:
    """Examples of one source, decoded on demand at a fixed (height, width, channels).

    Subclasses fill ``sources``, ``labels`` and ``targets`` and implement ``_read``. As a data
    source (:data:`sce_jax.data.sources.DATA_SOURCES`) a subclass also says which sources it
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
                    raise ExampleProblem(
                        f"region mask is empty after resizing to {self.image_size[1]}x"
                        f"{self.image_size[0]}: its nonzero area is too small")
        except ExampleProblem as e:
            return SkipRecord(example_id, self.sources[example_id], str(e))
        return DecodedExample(example_id, image, region)

    def _read(self, example_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Native-size float (h, w, 1|3) pixels and an optional bool (h, w) region."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, {self.num_examples} examples, "
                f"size={self.image_size}, channels={self.channels}, crop={self.crop})")


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count="
                         f"{process_count})")
