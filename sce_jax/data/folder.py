"""An image folder as a data source, searched recursively.

Files ending in ``.png .jpg .jpeg .webp .bmp .tif .tiff .gif`` (GIF: the first frame) and the
other image formats of :data:`OTHER_IMAGE_EXTENSIONS` (HEIC, AVIF, SVG, RAW, ...: explained if
Pillow decodes them, else skipped with the reason), any letter case; names starting with ``.``
are left out. Sorted by their path relative to the folder. No labels.
"""

from __future__ import annotations

import os

import numpy as np

from sce_jax.data.dataset import NO_LABEL, DataError, Dataset, read_file_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Image formats a folder may hold that Pillow may not decode: they are examples too, so a file
# that cannot be decoded is a skip record with its reason, never silently left out.
OTHER_IMAGE_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".jp2", ".svg", ".ico", ".psd",
                          ".dng", ".raw", ".cr2", ".nef", ".arw", ".pgm", ".ppm", ".pbm", ".tga")


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
        return read_file_image(self.sources[example_id]), None


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
