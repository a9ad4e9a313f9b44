"""The inputs of a dataset-wide run: image folders, ``.npz`` arrays and CSV lists, in batches.

- :mod:`~sce_jax.data.dataset`: :class:`Dataset` (examples decoded on demand), the error and
  skip-record types;
- :mod:`~sce_jax.data.sources`: the registry of source kinds and :func:`open_dataset`;
  the kinds themselves are :mod:`~sce_jax.data.folder`, :mod:`~sce_jax.data.npz` and
  :mod:`~sce_jax.data.csv_list` (and the squares demo's test set,
  :mod:`sce_jax.demos.squares`);
- :mod:`~sce_jax.data.geometry`: channels, crop and resize to the run's size;
- :mod:`~sce_jax.data.batching`: fixed-shape batches, decoded in a thread pool;
- :mod:`~sce_jax.data.image_io`: reading and writing image files, atomically.

The names below are the ones a run and its tests use; each lives in the module named.
"""

from sce_jax.data.batching import iterate_batches, max_num_batches, num_batches
from sce_jax.data.csv_list import CSV_OPTIONAL_COLUMNS, CSV_REQUIRED_COLUMNS, CsvDataset
from sce_jax.data.dataset import NO_LABEL, Batch, DataError, Dataset, DecodedExample, SkipRecord
from sce_jax.data.folder import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS, ImageFolderDataset
from sce_jax.data.geometry import center_crop_box, convert_channels, fit_image, fit_region
from sce_jax.data.npz import NpzDataset, write_npz
from sce_jax.data.sources import DATA_SOURCES, open_configured, open_dataset, source_format

__all__ = [
    "Batch", "CSV_OPTIONAL_COLUMNS", "CSV_REQUIRED_COLUMNS", "CsvDataset", "DATA_SOURCES",
    "DataError", "Dataset", "DecodedExample", "IMAGE_EXTENSIONS", "ImageFolderDataset",
    "NO_LABEL", "NpzDataset", "OTHER_IMAGE_EXTENSIONS", "SkipRecord", "center_crop_box",
    "convert_channels", "fit_image", "fit_region", "iterate_batches", "max_num_batches",
    "num_batches", "open_configured", "open_dataset", "source_format", "write_npz",
]
