"""An image folder as a data source, searched recursively.

Files ending in ``.png .jpg .jpeg .webp .bmp .tif .tiff .gif`` (GIF: the first frame) and the
other image formats of :data:`OTHER_IMAGE_EXTENSIONS` (HEIC, AVIF, SVG, RAW, ...: explained if
Pillow decodes them, else skipped with the reason), any letter case. Sorted by their path
relative to the folder. No labels.

A FIFO, socket or device under an image name is listed like any file and becomes a skip record
with the reason (it is never opened: :mod:`sce_jax.data.image_io`).

Hidden names (starting with ``.``) are left out, files and folders alike: what they hold is
not the user's data but what tools leave beside it (macOS ``._photo.png`` metadata files,
``.ipynb_checkpoints/`` copies of the images, ``.git/``, editors' temporary files); reading
them would skip or explain the same images twice. They are not examples, so they get no id
(ids and a resumed workdir's input set stay as they were); what was left out is kept in
``ImageFolderDataset.hidden`` (relative paths, a folder with a trailing ``/``, not searched)
and logged once when the folder is opened. Rename a file to explain it.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

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
        found, hidden = _find_images(folder)
        relative, self.hidden = sorted(found), sorted(hidden)
        if self.hidden:
            logging.info("%s: left out %d hidden file(s) or folder(s) (names starting with "
                         "'.'; rename one to explain it): %s", folder,
                         len(self.hidden), _shown(self.hidden))
        if not relative:
            raise DataError(f"image folder {folder} holds no image files "
                            f"(looked for {' '.join(IMAGE_EXTENSIONS)}, recursively"
                            + (f"; left out the hidden {_shown(self.hidden)}" if self.hidden
                               else "") + ")")
        paths = [os.path.join(folder, r) for r in relative]
        none = np.full(len(paths), NO_LABEL, np.int32)
        super().__init__(folder, paths, none, none, **options)

    def _read(self, example_id):
        return read_file_image(self.sources[example_id]), None


def _shown(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _find_images(folder: str) -> tuple[list[str], list[str]]:
    """Relative paths of the image files under ``folder`` (symlinked folders followed once),
    and of the hidden image files and hidden folders left out (folders end in ``/``)."""
    found, hidden, seen = [], [], set()
    extensions = IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS

    def relative(root, name):
        return os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")

    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink cycle or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        hidden.extend(relative(root, d) + "/" for d in dirs if d.startswith("."))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.lower().endswith(extensions):
                (hidden if name.startswith(".") else found).append(relative(root, name))
    return found, hidden
