"""Image files in and out: decoding any common file to float pixels, 8-bit PNGs, heat maps.

Reading (:func:`read_image`) turns a file into float32 pixels in [0, 1], shape (H, W, C) with
C = 1 (grey) or 3 (RGB), whatever the file's mode:

- 8-bit grey / RGB are divided by 255; 1-bit images give 0 or 1;
- 16-bit grey (PNG, TIFF: Pillow modes ``I;16*``) and 32-bit integer images (mode ``I``)
  are divided by 65535, so a 16-bit PNG keeps its full precision;
- 32-bit float images (mode ``F``) are taken as they are and clipped to [0, 1];
- palette images are expanded through their palette;
- CMYK, YCbCr, LAB and HSV are converted to RGB by Pillow;
- an alpha channel is **composited on white**: ``rgb * a + 1 * (1 - a)`` (a transparent
  pixel reads as white, as a page behind the image would show it);
- the EXIF orientation tag of photographs is applied;
- a multi-frame file (GIF, TIFF) gives its first frame.

A file that cannot be decoded raises :class:`ImageDecodeError` with the reason; the data
pipeline turns it into a skip record rather than stopping a run. A path that is not a regular
file (a FIFO, a socket, a device) raises :class:`NotRegularFileError` without being opened:
reading a FIFO would wait for a writer forever, a device may never end. The kind is checked
with ``os.stat`` before opening and again with ``fstat`` on the descriptor, opened
non-blocking, so a file swapped for a FIFO in between cannot block either.

Writing (:func:`write_png`) quantises to 8 bits (:func:`to_uint8`: ``round(clip(x, 0, 1) * 255)``)
and replaces the destination atomically (a temporary file in the same folder, then
``os.replace``), so a killed run never leaves a half-written PNG under the final name.

:func:`difference_heatmap` shows where a counterfactual differs from its original::

    d(p) = sum_c |cf(p, c) - x(p, c)|,    t(p) = min(d(p) / vmax, 1)

coloured with :func:`heat_colours` (dark violet -> red -> orange -> pale yellow) and, by
default, laid over the grey original with opacity ``sqrt(t)`` (unchanged pixels show the
original; the square root keeps changes of a tenth of the maximum visible).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import IO, Iterator

import numpy as np
from PIL import Image, ImageOps

from sce_jax.data.geometry import convert_channels

# Anchor colours of the heat map at t = 0, 0.25, 0.5, 0.75, 1 (linearly interpolated).
HEAT_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
HEAT_RGB = np.array([
    [0.05, 0.02, 0.20],   # dark violet
    [0.55, 0.05, 0.45],   # magenta
    [0.95, 0.20, 0.10],   # red
    [1.00, 0.65, 0.05],   # orange
    [1.00, 1.00, 0.70],   # pale yellow
])

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_CONVERT_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")


class ImageDecodeError(ValueError):
    """A file that is not a decodable image (the message says why)."""


class NotRegularFileError(OSError):
    """A path to a FIFO, a socket or a device: never opened (``kind`` says which)."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file; it was not opened")
        self.path, self.kind = path, kind


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_file_kind(mode: int) -> str:
    """What an ``st_mode`` is in words when it is neither a regular file nor a folder, else ""."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "a special file")


def _open_regular(path: str) -> IO[bytes]:
    """Opens a regular file for reading; a FIFO, socket or device is refused unopened."""
    mode = os.stat(path).st_mode  # follows links: a dangling one raises FileNotFoundError
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if special_file_kind(mode):
        raise NotRegularFileError(path, special_file_kind(mode))
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | nonblocking))
    try:
        kind = special_file_kind(os.fstat(f.fileno()).st_mode)
        if kind:  # replaced between the two looks
            raise NotRegularFileError(path, kind)
        if nonblocking:
            os.set_blocking(f.fileno(), True)
    except BaseException:
        f.close()
        raise
    return f


def _with_alpha_on_white(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C+1) colour + alpha in [0, 1] -> (H, W, C) composited on white."""
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    return colour * alpha + (1.0 - alpha)


def image_to_array(image: Image.Image) -> np.ndarray:
    """A Pillow image -> float32 (H, W, C) in [0, 1], C = 1 or 3 (see the module docstring)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "RGBa"):  # palette with alpha; premultiplied RGBA
        image = image.convert("RGBA")
    elif mode == "La":  # premultiplied grey + alpha
        image = image.convert("LA")
    elif mode in _CONVERT_TO_RGB:
        image = image.convert("RGB")
    mode = image.mode

    if mode == "1":
        pixels = np.asarray(image, dtype=bool).astype(np.float32)
    elif mode in ("L", "LA", "RGB", "RGBA", "RGBX"):
        pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0
        if mode == "RGBX":
            pixels = pixels[..., :3]
    elif mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.float32) / 65535.0
    elif mode == "I":
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.float32) / 65535.0
    elif mode == "F":
        pixels = np.asarray(image, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise ImageDecodeError("float image holds NaN or infinite pixels")
        pixels = np.clip(pixels, 0.0, 1.0)
    else:
        try:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0
        except Exception as e:  # noqa: BLE001 - any failure of an exotic mode is a decode error
            raise ImageDecodeError(f"unsupported image mode {mode!r}: {e}") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if mode in ("LA", "RGBA"):
        pixels = _with_alpha_on_white(pixels)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _open_decoded(path: str) -> Image.Image:
    """Opens and fully decodes the first frame, with EXIF orientation applied."""
    f = _open_regular(path)
    try:
        with f, Image.open(f) as image:
            image.seek(0)
            image.load()
            return ImageOps.exif_transpose(image)
    except Image.UnidentifiedImageError:  # its message would name the file object
        raise ImageDecodeError(f"UnidentifiedImageError: cannot identify image file {path!r}"
                               ) from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types on corrupt data
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from e


def read_image(path: str) -> np.ndarray:
    """Decodes an image file to float32 (H, W, C) in [0, 1], C = 1 or 3.

    Raises:
      FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be read.
      NotRegularFileError: a FIFO, socket or device (an ``OSError``), left unopened.
      ImageDecodeError: the file is not a decodable image (corrupt, truncated, not an image).
    """
    return image_to_array(_open_decoded(path))


def read_mask(path: str) -> np.ndarray:
    """Reads a region mask file: bool (H, W), True where a pixel is nonzero.

    A pixel counts as nonzero when any colour channel is nonzero; in files with an alpha
    channel, fully transparent pixels count as zero. Palette images are judged by their
    palette index (a label map with background index 0 works as is).
    """
    image = _open_decoded(path)
    if image.mode in ("P", "1", "L") or image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        values = np.asarray(image)
        return values != 0
    if image.mode in ("PA",):
        values = np.asarray(image)
        return (values[..., 0] != 0) & (values[..., 1] != 0)
    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        values = np.asarray(image)
        return (values[..., :-1] != 0).any(-1) & (values[..., -1] != 0)
    values = np.asarray(image.convert("RGB"))
    return (values != 0).any(-1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantises [0, 1] floats to uint8: ``round(clip(x, 0, 1) * 255)`` (halves to even); NaN -> 0.

    uint8 input is returned unchanged, bool input becomes 0/255. Any shape.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    x = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil_image(pixels: np.ndarray, path: str) -> Image.Image:
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(pixels))  # mode L, RGB or RGBA from the shape
    raise ValueError(f"{path}: cannot write an image of shape {pixels.shape}; "
                     "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", *, fsync: bool = False,
                 encoding: str | None = None) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success renames it to ``path``.

    The rename (``os.replace``) is atomic, so readers see the old file or the complete new
    one, never a part. On an exception the temporary file is removed. The file gets the
    usual permissions (the process umask applies).
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_png(path: str, image: np.ndarray, *, fsync: bool = False) -> None:
    """Writes an 8-bit PNG atomically.

    Args:
      path: destination; its folder must exist.
      image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); float in [0, 1] (quantised with
        :func:`to_uint8`), uint8, or bool.
      fsync: flush the file to disk before the rename (slower; for files that must survive
        a power loss, not just a killed process).
    """
    pil = _pil_image(to_uint8(image), path)
    with atomic_write(path, "wb", fsync=fsync) as f:
        pil.save(f, format="PNG")


def read_png(path: str) -> np.ndarray:
    """Reads back an 8-bit PNG as written by :func:`write_png`: uint8 (H, W, C), C = 1, 3 or 4."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ImageDecodeError(f"{path}: expected a PNG, found {image.format}")
        if image.mode not in ("L", "RGB", "RGBA"):
            raise ImageDecodeError(f"{path}: expected an 8-bit grey, RGB or RGBA PNG, found mode "
                                   f"{image.mode}")
        pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ImageDecodeError(f"{path}: expected 8-bit samples, found {pixels.dtype}")
    return pixels[..., None] if pixels.ndim == 2 else pixels


def heat_colours(t: np.ndarray) -> np.ndarray:
    """The heat colour map: values t in [0, 1] (any shape) -> RGB floats (..., 3)."""
    t = np.clip(np.nan_to_num(np.asarray(t, np.float32), nan=0.0), 0.0, 1.0)
    return np.stack([np.interp(t, HEAT_ANCHORS, HEAT_RGB[:, c]) for c in range(3)],
                    axis=-1).astype(np.float32)


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float -> (H, W, 1): BT.601 luma for RGB, unchanged for grey."""
    image = np.asarray(image, np.float32)
    if image.shape[-1] == 1:
        return image
    if image.shape[-1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {image.shape}")
    return convert_channels(image, 1)


def difference_map(original: np.ndarray, counterfactual: np.ndarray) -> np.ndarray:
    """``d = sum_c |counterfactual - original|``, float32 (H, W)."""
    original = np.asarray(original, np.float32)
    counterfactual = np.asarray(counterfactual, np.float32)
    if original.shape != counterfactual.shape or original.ndim != 3:
        raise ValueError(f"original {original.shape} and counterfactual {counterfactual.shape} "
                         "must both be (H, W, C)")
    return np.abs(counterfactual - original).sum(-1)


def difference_heatmap(original: np.ndarray, counterfactual: np.ndarray, *,
                       vmax: float | None = None, min_vmax: float = 0.1,
                       overlay: bool = True) -> np.ndarray:
    """The difference heat map as uint8 RGB (H, W, 3) (formula in the module docstring).

    Args:
      original, counterfactual: float (H, W, C) in [0, 1].
      vmax: the change shown at full colour; default ``max(max(d), min_vmax)``, so every map
        uses its full range while changes below ``min_vmax`` (e.g. 8-bit rounding noise) are
        not blown up to full colour.
      overlay: lay the colours over the grey original with opacity ``sqrt(t)``; otherwise the
        plain colour map.
    """
    d = difference_map(original, counterfactual)
    scale = float(vmax) if vmax is not None else max(float(d.max(initial=0.0)), min_vmax)
    if scale <= 0:
        raise ValueError(f"vmax must be positive, got {scale}")
    t = np.clip(d / scale, 0.0, 1.0)
    colours = heat_colours(t)
    if overlay:
        grey = to_grey(original)
        alpha = np.sqrt(t)[..., None]
        colours = colours * alpha + grey * (1.0 - alpha)
    return to_uint8(colours)
