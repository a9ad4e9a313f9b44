"""The data sources a run reads, by the name ``data.format`` takes, and opening one.

:data:`DATA_SOURCES` is the registry: each entry is a :class:`~sce_jax.data.dataset.Dataset`
subclass that says which sources it reads (``matches``; with ``data.format`` empty the first
match in this order is taken), the options it takes (``options()``: their defaults, the run
config's ``data.<name>`` sub-config, passed through whole) and how it opens one (``open``).
:func:`open_dataset` opens one and checks it as a whole (labels and targets in range).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from sce_jax.data.dataset import DataError, Dataset
from sce_jax.registry import Registry

DATA_SOURCES = Registry("data.format", {
    "folder": "sce_jax.data.folder:ImageFolderDataset",   # an image folder, recursively
    "squares": "sce_jax.demos.squares:SquaresDataset",     # an .npz with the squares' boxes
    "npz": "sce_jax.data.npz:NpzDataset",                  # images (+ labels) arrays in an .npz
    "csv": "sce_jax.data.csv_list:CsvDataset",             # path,target[,region][,label] rows
})


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
      format: a name of :data:`sce_jax.data.sources.DATA_SOURCES`; "" takes the first source
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
    source = os.fspath(source)
    for name, kind in DATA_SOURCES.items():
        if kind.matches(source):
            return name
    if not os.path.exists(source):
        raise DataError(f"data source {source} does not exist (expected an image folder, "
                        "an .npz or a .csv file)")
    raise DataError(f"data source {source} is neither a folder nor an .npz or .csv file")


def _source_kind(name: str) -> type[Dataset]:
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
