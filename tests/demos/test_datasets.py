"""The demo datasets: squares (determinism, confounder rate, factors) and the Fashion-MNIST reader."""

import gzip
import os

import numpy as np
import pytest

from sce_jax import data
from sce_jax.demos import fashion_mnist, squares

# ----------------------------------------------------------------------------- squares


@pytest.fixture(scope="module")
def many_squares():
    return squares.generate(4000, seed=7, confounder_rate=0.9)


def test_squares_are_deterministic_and_prefix_stable(many_squares):
    again = squares.generate(1000, seed=7, confounder_rate=0.9)  # same seed: the same examples
    assert np.array_equal(again.images, many_squares.images[:1000])
    assert np.array_equal(again.labels, many_squares.labels[:1000])
    assert np.array_equal(again.background, many_squares.background[:1000])
    prefix = squares.generate(50, seed=7, confounder_rate=0.9)
    np.testing.assert_array_equal(prefix.images, many_squares.images[:50])
    np.testing.assert_array_equal(prefix.boxes, many_squares.boxes[:50])
    other = squares.generate(50, seed=8, confounder_rate=0.9)
    assert not np.array_equal(other.labels, prefix.labels)


@pytest.mark.parametrize("rate", [0.9, 0.5])
def test_confounder_rate_is_measured(many_squares, rate):
    d = many_squares if rate == 0.9 else squares.generate(4000, seed=3, confounder_rate=rate)
    agreement = np.mean(d.labels == d.background)
    tolerance = 4 * np.sqrt(rate * (1 - rate) / 4000)  # 4 standard deviations
    assert abs(agreement - rate) < tolerance
    assert abs(np.mean(d.labels) - 0.5) < 4 * np.sqrt(0.25 / 4000)


def test_square_pixels_carry_the_class_and_the_rest_the_background(many_squares):
    d = many_squares
    n = 300
    inside = squares.box_masks(d.boxes[:n], 64)
    assert d.images.shape == (4000, 64, 64, 3) and d.images.dtype == np.float32
    top, left, height, width = d.boxes.T
    assert np.all(height == width) and height.min() >= 16 and height.max() <= 32
    assert top.min() >= 0 and left.min() >= 0 and np.max(top + height) <= 64 and np.max(left + width) <= 64
    assert height.min() == 16 and height.max() == 32  # both ends are reached
    np.testing.assert_array_equal(inside.sum(axis=(1, 2)), height[:n] * width[:n])
    for i in range(n):
        square = d.images[i][inside[i]]
        background = d.images[i][~inside[i]]
        # Flat colours, each within the jitter of its class's base colour.
        assert np.ptp(square, axis=0).max() == 0 and np.ptp(background, axis=0).max() == 0
        assert np.abs(square[0] - squares.SQUARE_RGB[d.labels[i]]).max() <= 0.08 + 1e-6
        assert np.abs(background[0] - squares.BACKGROUND_RGB[d.background[i]]).max() <= 0.08 + 1e-6
    red, green = (d.images[:n][inside][:, :2].T)
    assert (red > green).sum() == np.sum(inside.sum(axis=(1, 2))[d.labels[:n] == 0])


def test_factor_masks_partition_the_image(many_squares):
    masks = squares.factor_masks(many_squares.boxes[:10])
    assert masks.shape == (10, 2, 64, 64)
    np.testing.assert_array_equal(masks.sum(axis=1), 1.0)
    np.testing.assert_array_equal(masks[:, 0].sum(axis=(1, 2)),
                                  many_squares.boxes[:10, 2] * many_squares.boxes[:10, 3])


def test_squares_test_set_reads_back_through_the_data_pipeline(tmp_path):
    path = str(tmp_path / "squares.npz")
    record = squares.write_test_set(path, num=12, seed=4, confounder_rate=0.75)
    original = squares.generate(12, seed=4, confounder_rate=0.75)
    assert record["num_images"] == 12 and record["file"] == "squares.npz"
    assert record["measured_agreement"] == float(np.mean(original.labels == original.background))
    ds = data.open_dataset(path, image_size=(64, 64), channels=3, num_classes=2)
    np.testing.assert_array_equal(ds.labels, original.labels)
    batch = next(data.iterate_batches(ds, 12))
    np.testing.assert_allclose(batch.images, original.images, atol=0.5 / 255 + 1e-6)
    with np.load(path) as f:
        np.testing.assert_array_equal(f["boxes"], original.boxes)
        np.testing.assert_array_equal(f["background"], original.background)


def test_squares_argument_errors():
    with pytest.raises(ValueError, match=r"confounder_rate=1.5 must be in \[0, 1\]"):
        squares.generate(3, confounder_rate=1.5)
    with pytest.raises(ValueError, match="num=-1 must be >= 0"):
        squares.generate(-1)


# ----------------------------------------------------------------------------- Fashion-MNIST


def _idx(path, array, type_code=0x08, compress=True):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(str(path), "wb") as f:
        f.write(payload)
    return str(path)


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    _idx(tmp_path / "train-images-idx3-ubyte", images[:7], compress=False)  # plain files work too
    _idx(tmp_path / "train-labels-idx1-ubyte", labels[:7], compress=False)
    return str(tmp_path), images, labels


def test_reads_idx_files(tiny_fashion):
    folder, images, labels = tiny_fashion
    test = fashion_mnist.load_split("test", folder)
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)
    assert test.labels.dtype == np.int32
    train = fashion_mnist.load_split("train", folder)
    np.testing.assert_array_equal(train.images, images[:7])


def test_idx_types_and_malformed_files(tmp_path):
    values = np.array([[1, -2, 300], [70000, 0, -5]], np.int32)
    np.testing.assert_array_equal(fashion_mnist.read_idx(_idx(tmp_path / "i.gz", values, 0x0C)), values)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(3))
    with pytest.raises(fashion_mnist.FashionMnistError,
                       match=r"header says shape \(10,\) \(10 bytes of data\) but the file holds 3"):
        fashion_mnist.read_idx(str(short))
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(fashion_mnist.FashionMnistError, match=r"is not an idx file \(header bytes 504b0304\)"):
        fashion_mnist.read_idx(str(bad))


def test_missing_files_name_the_apt_package(tmp_path):
    with pytest.raises(fashion_mnist.FashionMnistError) as e:
        fashion_mnist.load_split("test", str(tmp_path))
    message = str(e.value)
    assert f"{tmp_path / 't10k-images-idx3-ubyte'}.gz is missing" in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(ValueError, match=r"split='val': expected one of \('train', 'test'\)"):
        fashion_mnist.load_split("val", str(tmp_path))


def test_balanced_subset_is_deterministic_and_padded(tiny_fashion, tmp_path):
    folder, images, labels = tiny_fashion
    path = str(tmp_path / "subset.npz")
    record = fashion_mnist.write_test_subset(path, per_class=3, seed=5, directory=folder)
    with np.load(path) as f:
        sub_images, sub_labels, indices = f["images"], f["labels"], f["source_indices"]
        assert list(f["class_names"]) == list(fashion_mnist.CLASS_NAMES)
    assert sub_images.shape == (30, 32, 32)
    np.testing.assert_array_equal(sub_labels, np.tile(np.arange(10), 3))  # interleaved classes
    np.testing.assert_array_equal(sub_labels, labels[indices])
    np.testing.assert_array_equal(sub_images[:, 2:30, 2:30], images[indices])
    assert sub_images[:, :2].max() == 0 and sub_images[:, :, 30:].max() == 0
    assert len(set(indices.tolist())) == 30
    assert record["source_indices"] == indices.tolist() and record["padding"] == 32
    again = str(tmp_path / "again.npz")
    fashion_mnist.write_test_subset(again, per_class=3, seed=5, directory=folder)
    with np.load(again) as f:
        np.testing.assert_array_equal(f["source_indices"], indices)
    raw = str(tmp_path / "raw.npz")
    fashion_mnist.write_test_subset(raw, per_class=1, seed=5, directory=folder, pad_to=None)
    assert data.open_dataset(raw, image_size=(28, 28), channels=1).load(0).image.shape == (28, 28, 1)
    with pytest.raises(ValueError, match="class 0 has 4 examples, fewer than per_class=5"):
        fashion_mnist.write_test_subset(raw, per_class=5, directory=folder)


@pytest.mark.skipif(not os.path.exists(os.path.join(fashion_mnist.DEFAULT_DIR, "t10k-images-idx3-ubyte.gz")),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split():
    test = fashion_mnist.load_split("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 1000))
    assert 60 < test.images.mean() < 90  # dark background, bright garments
