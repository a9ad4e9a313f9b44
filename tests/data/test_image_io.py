"""Image decoding of every supported mode, 8-bit PNG writing, and the difference heat map."""

import os

import numpy as np
import pytest
from PIL import Image

from sce_jax.data import image_io
from sce_jax.data.geometry import LUMA_WEIGHTS


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return str(path)


# ----------------------------------------------------------------------------- reading


def test_8bit_grey_and_rgb_are_divided_by_255(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    x = image_io.read_image(_save(tmp_path / "g.png", Image.fromarray(grey)))
    assert x.shape == (6, 8, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], grey.astype(np.float32) / 255.0)
    for ext in ("png", "bmp", "tiff"):
        y = image_io.read_image(_save(tmp_path / f"c.{ext}", Image.fromarray(rgb)))
        np.testing.assert_array_equal(y, rgb.astype(np.float32) / 255.0)
    webp = image_io.read_image(_save(tmp_path / "c.webp", Image.fromarray(rgb), lossless=True))
    np.testing.assert_array_equal(webp, rgb.astype(np.float32) / 255.0)


def test_16bit_png_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 257, 1000], [30000, 65534, 65535, 12345]], np.uint16)
    path = _save(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    x = image_io.read_image(path)
    np.testing.assert_allclose(x[..., 0], values / 65535.0, rtol=0, atol=1e-7)
    assert x[0, 0, 0] != x[0, 1, 0]  # 1/65535 apart: lost at 8 bits


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 102]]], np.uint8)
    x = image_io.read_image(_save(tmp_path / "a.png", Image.fromarray(rgba)))
    a = 102 / 255.0
    expected = np.array([[[1, 0, 0], [1, 1, 1], [1 - a, 1 - a, 1]]], np.float32)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    la = np.array([[[0, 255], [0, 0], [200, 51]]], np.uint8)
    y = image_io.read_image(_save(tmp_path / "la.png", Image.fromarray(la, mode="LA")))
    expected = np.array([[[0.0], [1.0], [200 / 255 * 0.2 + 0.8]]], np.float32)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_palette_is_expanded_and_its_transparency_honoured(tmp_path):
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 0] + [0] * (768 - 9))
    image.putdata([0, 1, 2])
    x = image_io.read_image(_save(tmp_path / "p.png", image))
    np.testing.assert_allclose(x[0], np.array([[10, 20, 30], [200, 100, 0], [0, 0, 0]]) / 255.0)
    y = image_io.read_image(_save(tmp_path / "pt.png", image, transparency=2))
    np.testing.assert_allclose(y[0, 2], [1.0, 1.0, 1.0])  # transparent index -> white
    np.testing.assert_allclose(y[0, 0], np.array([10, 20, 30]) / 255.0)


def test_one_bit_cmyk_and_float_modes(tmp_path):
    bits = Image.fromarray(np.array([[True, False, True]]))
    x = image_io.read_image(_save(tmp_path / "b.png", bits.convert("1")))
    np.testing.assert_array_equal(x[..., 0], [[1.0, 0.0, 1.0]])
    # CMYK with K = 0: R = 255 - C, G = 255 - M, B = 255 - Y.
    cmyk = np.array([[[0, 255, 255, 0], [255, 0, 255, 0], [40, 80, 120, 0]]], np.uint8)
    y = image_io.read_image(_save(tmp_path / "c.tiff", Image.fromarray(cmyk, mode="CMYK")))
    np.testing.assert_allclose(y, (255.0 - cmyk[..., :3]) / 255.0, atol=1e-6)
    f = np.array([[0.25, 1.5, -0.5]], np.float32)
    z = image_io.read_image(_save(tmp_path / "f.tiff", Image.fromarray(f, mode="F")))
    np.testing.assert_allclose(z[..., 0], [[0.25, 1.0, 0.0]])


def test_exif_orientation_and_first_frame(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    path = _save(tmp_path / "photo.jpg", Image.new("RGB", (8, 4), (90, 90, 90)), exif=exif)
    assert image_io.read_image(path).shape == (8, 4, 3)
    frames = [Image.new("L", (4, 4), v) for v in (60, 200)]
    gif = _save(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(image_io.read_image(gif)[..., 0].mean(), 60 / 255.0, atol=1e-6)


def test_truncated_and_non_image_files_raise_decode_errors(tmp_path):
    good = _save(tmp_path / "good.png", Image.fromarray(np.random.default_rng(0).integers(
        0, 256, (32, 32, 3), dtype=np.uint8)))
    with open(good, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(image_io.ImageDecodeError, match="truncated|Truncated"):
        image_io.read_image(str(truncated))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(image_io.ImageDecodeError, match="cannot identify image file"):
        image_io.read_image(str(text))
    with pytest.raises(FileNotFoundError):
        image_io.read_image(str(tmp_path / "absent.png"))


def test_read_mask_counts_nonzero_opaque_pixels(tmp_path):
    rgba = np.array([[[0, 0, 0, 255], [255, 255, 255, 0], [0, 9, 0, 255], [0, 0, 0, 0]]], np.uint8)
    mask = image_io.read_mask(_save(tmp_path / "m.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(mask, [[False, False, True, False]])
    labels = Image.new("P", (3, 1))
    labels.putpalette([0, 0, 0] * 256)  # all-black palette: judged by index, not colour
    labels.putdata([0, 3, 0])
    np.testing.assert_array_equal(image_io.read_mask(_save(tmp_path / "l.png", labels)),
                                  [[False, True, False]])


# ----------------------------------------------------------------------------- writing


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 100.4 / 255, 1.0, 1.7, np.nan])
    np.testing.assert_array_equal(image_io.to_uint8(x), [0, 0, 0, 1, 100, 255, 255, 0])
    u = np.array([3, 250], np.uint8)
    assert image_io.to_uint8(u) is u
    np.testing.assert_array_equal(image_io.to_uint8(np.array([True, False])), [255, 0])


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_png_round_trip(tmp_path, shape):
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    path = str(tmp_path / "x.png")
    image_io.write_png(path, x)
    back = image_io.read_png(path)
    expected = image_io.to_uint8(x)
    np.testing.assert_array_equal(back, expected if expected.ndim == 3 else expected[..., None])
    assert os.listdir(tmp_path) == ["x.png"]  # no temporary file left behind


def test_png_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.png")
    image_io.write_png(path, np.zeros((4, 4), np.float32))
    with open(path, "rb") as f:
        before = f.read()

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        image_io.write_png(path, np.ones((4, 4), np.float32))
    with open(path, "rb") as f:
        assert f.read() == before
    assert os.listdir(tmp_path) == ["keep.png"]


def test_write_png_refuses_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"cannot write an image of shape \(4, 4, 2\)"):
        image_io.write_png(str(tmp_path / "bad.png"), np.zeros((4, 4, 2)))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- heat map


def test_heat_colours_hit_their_anchors_and_brighten_monotonically():
    np.testing.assert_allclose(image_io.heat_colours(image_io.HEAT_ANCHORS), image_io.HEAT_RGB,
                               atol=1e-6)
    luma = image_io.heat_colours(np.linspace(0, 1, 101)) @ np.asarray(LUMA_WEIGHTS, np.float32)
    assert np.all(np.diff(luma) > 0)


def test_difference_heatmap_follows_its_formula():
    x = np.full((2, 3, 3), 0.4, np.float32)
    cf = x.copy()
    cf[0, 0] += [0.3, 0.3, 0.3]          # d = 0.9: the maximum, full colour
    cf[0, 1, 0] += 0.225                 # d = 0.225 = 0.25 * 0.9
    plain = image_io.difference_heatmap(x, cf, overlay=False)
    rgb = image_io.HEAT_RGB
    np.testing.assert_array_equal(plain[0, 0], image_io.to_uint8(rgb[4]))
    np.testing.assert_array_equal(plain[0, 1], image_io.to_uint8(rgb[1]))
    np.testing.assert_array_equal(plain[1, 2], image_io.to_uint8(rgb[0]))
    over = image_io.difference_heatmap(x, cf)
    np.testing.assert_array_equal(over[1, 2], image_io.to_uint8(np.full(3, 0.4)))  # unchanged: grey
    np.testing.assert_array_equal(over[0, 0], image_io.to_uint8(rgb[4]))           # opacity 1
    np.testing.assert_array_equal(over[0, 1], image_io.to_uint8(rgb[1] * 0.5 + 0.4 * 0.5))  # sqrt(.25)


def test_difference_heatmap_does_not_blow_up_rounding_noise():
    x = np.full((2, 2, 1), 0.5, np.float32)
    cf = x + np.array([[[1 / 255], [0.0]], [[0.0], [0.0]]], np.float32)
    plain = image_io.difference_heatmap(x, cf, overlay=False)
    t = (1 / 255) / 0.1  # the default floor min_vmax = 0.1, not the tiny maximum
    np.testing.assert_array_equal(plain[0, 0], image_io.to_uint8(image_io.heat_colours(t)))
    with pytest.raises(ValueError, match="must both be"):
        image_io.difference_heatmap(x, np.zeros((2, 2, 3)))
