"""The data sources a run reads, by the name ``data.format`` takes: the registry.

Each entry is a :class:`sce_jax.data.Dataset` subclass that says which sources it reads
(``matches``; with ``data.format`` empty the first match in this order is taken), the options
it takes (``options()``: their defaults, the run config's ``data.<name>`` sub-config, passed
through whole) and how it opens one (``open``). See :mod:`sce_jax.data` for the formats.
"""

from __future__ import annotations

from sce_jax.registry import Registry

DATA_SOURCES = Registry("data.format", {
    "folder": "sce_jax.data:ImageFolderDataset",         # an image folder, recursively
    "squares": "sce_jax.datasets.squares:SquaresDataset",  # an .npz with the squares' boxes
    "npz": "sce_jax.data:NpzDataset",                    # images (+ labels) arrays in an .npz
    "csv": "sce_jax.data:CsvDataset",                    # path,target[,region][,label] rows
})
