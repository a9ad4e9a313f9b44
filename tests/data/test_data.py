"""Data input: folders, npz and CSV sources, decoding, skip records, run-level errors, batches."""

import os

import numpy as np
import pytest
from PIL import Image

from sce_jax import data
from sce_jax.data import DataError, SkipRecord, image_io


def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def _solid(h, w, rgb):
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def _open(source, **kwargs):
    kwargs.setdefault("image_size", (8, 8))
    kwargs.setdefault("channels", 3)
    return data.open_dataset(str(source), **kwargs)


# ----------------------------------------------------------------------------- folders


def test_folder_is_searched_recursively_sorted_and_filtered(tmp_path):
    root = tmp_path / "imgs"
    _png(str(root / "b.png"), _solid(4, 4, (10, 20, 30)))
    _png(str(root / "a" / "z.PNG"), _solid(4, 4, (0, 0, 0)))
    Image.fromarray(_solid(4, 4, (1, 2, 3))).save(root / "a" / "y.jpeg")
    Image.fromarray(_solid(4, 4, (1, 2, 3))).save(root / "c.webp")
    (root / "notes.txt").write_text("ignored")
    _png(str(root / ".hidden.png"), _solid(4, 4, (0, 0, 0)))
    _png(str(root / ".cache" / "x.png"), _solid(4, 4, (0, 0, 0)))
    Image.fromarray(_solid(4, 4, (40, 40, 40))).save(root / "d.gif")
    (root / "e.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # an image Pillow cannot decode
    ds = _open(root)
    rel = [os.path.relpath(s, root).replace(os.sep, "/") for s in ds.sources]
    assert rel == ["a/y.jpeg", "a/z.PNG", "b.png", "c.webp", "d.gif", "e.heic"]
    assert ds.num_examples == 6 and ds.max_label is None and ds.num_classes_seen is None
    # a GIF is explained (its first frame); another image format is skipped with the reason
    np.testing.assert_allclose(ds.load(4).image, np.full((8, 8, 3), 40 / 255), atol=1e-6)
    assert ds.load(5).reason.startswith("cannot decode image: ")
    example = ds.load(2)
    assert example.image.shape == (8, 8, 3)
    np.testing.assert_allclose(example.image, np.broadcast_to(np.array([10, 20, 30]) / 255, (8, 8, 3)),
                               atol=1e-6)
    np.testing.assert_array_equal(example.region, np.ones((8, 8, 1)))


def test_opening_decodes_nothing_and_batches_decode_lazily(tmp_path, monkeypatch):
    for i in range(7):
        _png(str(tmp_path / f"{i}.png"), _solid(4, 4, (i, i, i)))
    calls = []
    real = image_io.read_image
    monkeypatch.setattr(image_io, "read_image", lambda p: calls.append(p) or real(p))
    ds = _open(tmp_path)
    assert calls == []
    batches = data.iterate_batches(ds, 3, num_threads=0)
    assert calls == []
    next(batches)
    assert len(calls) == 3


def test_channel_conversion_uses_bt601_luma_and_repeats_grey(tmp_path):
    _png(str(tmp_path / "rgb.png"), _solid(4, 4, (255, 0, 0)))
    _png(str(tmp_path / "zgrey.png"), np.full((4, 4), 51, np.uint8))
    grey = _open(tmp_path, channels=1)
    np.testing.assert_allclose(grey.load(0).image, np.full((8, 8, 1), 0.299), atol=1e-6)
    rgb = _open(tmp_path, channels=3)
    np.testing.assert_allclose(rgb.load(1).image, np.full((8, 8, 3), 0.2), atol=1e-6)


def test_resize_is_antialiased_and_crop_takes_the_centre(tmp_path):
    board = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    _png(str(tmp_path / "a_board.png"), board)
    wide = np.zeros((16, 32, 3), np.uint8)
    wide[:, :8] = (255, 0, 0)
    wide[:, 8:24] = (0, 255, 0)
    wide[:, 24:] = (0, 0, 255)
    _png(str(tmp_path / "b_wide.png"), wide)
    ds = _open(tmp_path, channels=1, image_size=(8, 8))
    # A pixel checkerboard reduced 4x averages to grey; without antialiasing it would alias
    # to black or white.
    np.testing.assert_allclose(ds.load(0).image, 0.5, atol=0.02)
    cropped = _open(tmp_path, crop=True).load(1).image
    np.testing.assert_allclose(cropped, np.broadcast_to([0.0, 1.0, 0.0], (8, 8, 3)), atol=1e-6)
    squeezed = _open(tmp_path, crop=False).load(1).image
    assert squeezed[:, 0, 0].min() > 0.9 and squeezed[:, -1, 2].min() > 0.9  # red and blue kept


def test_center_crop_box():
    assert data.center_crop_box(16, 32, 8, 8) == (0, 8, 16, 16)
    assert data.center_crop_box(30, 10, 1, 1) == (10, 0, 10, 10)
    assert data.center_crop_box(20, 40, 10, 20) == (0, 0, 20, 40)


def test_16bit_and_rgba_files_through_the_pipeline(tmp_path):
    deep = np.full((8, 8), 1000, np.uint16)
    _png(str(tmp_path / "a.png"), deep)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent
    _png(str(tmp_path / "b.png"), rgba)
    ds = _open(tmp_path, channels=1)
    np.testing.assert_allclose(ds.load(0).image, 1000 / 65535, atol=1e-7)
    np.testing.assert_allclose(ds.load(1).image, 1.0)


# ----------------------------------------------------------------------------- skip records


def test_bad_files_become_skip_records_with_reasons(tmp_path):
    _png(str(tmp_path / "a_good.png"), _solid(16, 16, (9, 9, 9)))
    full = _png(str(tmp_path / "full.png"),
                np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with open(full, "rb") as f:
        blob = f.read()
    os.remove(tmp_path / "full.png")
    (tmp_path / "b_truncated.png").write_bytes(blob[:200])
    (tmp_path / "c_text.jpg").write_text("hello")
    (tmp_path / "d_empty.bmp").write_bytes(b"")
    ds = _open(tmp_path)
    batch = next(data.iterate_batches(ds, 8))
    np.testing.assert_array_equal(batch.valid, [True] + [False] * 7)
    reasons = {os.path.basename(s.source): s.reason for s in batch.skipped}
    assert set(reasons) == {"b_truncated.png", "c_text.jpg", "d_empty.bmp"}
    assert all(r.startswith("cannot decode image: ") for r in reasons.values())
    assert "truncated" in reasons["b_truncated.png"].lower()
    assert "cannot identify image file" in reasons["c_text.jpg"]
    assert [s.example_id for s in batch.skipped] == [1, 2, 3]
    np.testing.assert_array_equal(batch.example_ids[:4], [0, 1, 2, 3])
    assert batch.images[1:].max() == 0


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    path = _png(str(tmp_path / "locked.png"), _solid(4, 4, (1, 1, 1)))

    def denied(p):
        raise PermissionError(13, "Permission denied", p)

    monkeypatch.setattr(image_io, "read_image", denied)  # chmod 000 does not stop root
    record = _open(tmp_path).load(0)
    assert record == SkipRecord(0, path, f"cannot read file: [Errno 13] Permission denied: '{path}'")


# ----------------------------------------------------------------------------- npz


def test_npz_medmnist_layout(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    labels = np.array([[0], [2], [1], [2], [0]], np.uint8)
    path = str(tmp_path / "set.npz")
    np.savez(path, train_images=images, train_labels=labels, other=np.zeros(3))
    ds = data.open_dataset(path, image_size=(6, 6), channels=1, images_key="train_images",
                           labels_key="train_labels", num_classes=3)
    assert ds.sources[3] == f"{path}[3]"
    np.testing.assert_array_equal(ds.labels, [0, 2, 1, 2, 0])
    assert ds.max_label == 2 and ds.num_classes_seen == 3
    np.testing.assert_array_equal(ds.load(3).image[..., 0], images[3] / np.float32(255))
    rgb = data.open_dataset(path, image_size=(12, 12), channels=3, images_key="train_images",
                            labels_key=None, limit=2)
    assert rgb.num_examples == 2 and rgb.load(1).image.shape == (12, 12, 3)
    assert rgb.max_label is None


def test_npz_colour_float_and_16bit(tmp_path):
    colour = np.random.default_rng(1).random((3, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "c.npz", images=colour, labels=np.arange(3))
    ds = data.open_dataset(str(tmp_path / "c.npz"), image_size=(4, 4), channels=3)
    np.testing.assert_array_equal(ds.load(2).image, colour[2])
    deep = np.full((1, 4, 4), 65535, np.uint16)
    np.savez(tmp_path / "d.npz", images=deep, labels=[0])
    np.testing.assert_array_equal(
        data.open_dataset(str(tmp_path / "d.npz"), image_size=(4, 4), channels=1).load(0).image, 1.0)


def test_write_npz_round_trip(tmp_path):
    path = str(tmp_path / "sub" / "w.npz")
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data.write_npz(path, images=images, labels=[1, 0], names=np.array(["a", "b"]))
    with np.load(path, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["images"], images)
        assert list(f["names"]) == ["a", "b"]
    assert os.listdir(tmp_path / "sub") == ["w.npz"]
    with pytest.raises(ValueError, match="dtype object"):
        data.write_npz(path, images=images, extra=np.array([{}, 1], dtype=object))


# ----------------------------------------------------------------------------- CSV


def test_csv_with_targets_labels_and_regions(tmp_path):
    _png(str(tmp_path / "img" / "a.png"), _solid(16, 16, (200, 100, 50)))
    _png(str(tmp_path / "img" / "b.png"), _solid(16, 16, (10, 10, 10)))
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    _png(str(tmp_path / "img" / "a_mask.png"), mask)
    (tmp_path / "list.csv").write_text(
        "path,target,region,label\nimg/a.png,3,img/a_mask.png,1\nimg/b.png,,,\n\nimg/a.png,0,,2\n")
    ds = _open(tmp_path / "list.csv", num_classes=4)
    assert ds.sources == [str(tmp_path / "img" / "a.png"), str(tmp_path / "img" / "b.png"),
                          str(tmp_path / "img" / "a.png")]
    np.testing.assert_array_equal(ds.targets, [3, -1, 0])
    np.testing.assert_array_equal(ds.labels, [1, -1, 2])
    batch = next(data.iterate_batches(ds, 4))
    expected_region = np.zeros((8, 8, 1), np.float32)
    expected_region[:, 4:] = 1.0
    np.testing.assert_array_equal(batch.regions[0], expected_region)
    np.testing.assert_array_equal(batch.regions[1], np.ones((8, 8, 1)))
    np.testing.assert_array_equal(batch.targets, [3, -1, 0, -1])
    np.testing.assert_array_equal(batch.labels, [1, -1, 2, -1])
    np.testing.assert_array_equal(batch.valid, [True, True, True, False])
    assert batch.sources[3] == "" and batch.example_ids[3] == -1


def test_csv_example_problems_are_skips(tmp_path):
    _png(str(tmp_path / "a.png"), _solid(16, 16, (1, 2, 3)))
    _png(str(tmp_path / "small_mask.png"), np.ones((8, 8), np.uint8))
    _png(str(tmp_path / "empty_mask.png"), np.zeros((16, 16), np.uint8))
    tiny = np.zeros((16, 16), np.uint8)
    tiny[0, 0] = 1
    _png(str(tmp_path / "tiny_mask.png"), tiny)
    os.mkdir(tmp_path / "folder.png")
    (tmp_path / "list.csv").write_text(
        "path,target,region\nmissing.png,1,\nfolder.png,1,\na.png,1,small_mask.png\n"
        "a.png,1,empty_mask.png\na.png,1,tiny_mask.png\na.png,1,no_mask.png\n")
    ds = _open(tmp_path / "list.csv")
    reasons = [ds.load(i).reason for i in range(ds.num_examples)]
    assert reasons[0] == f"file not found: {tmp_path / 'missing.png'}"
    assert reasons[1].startswith("cannot read file: ") and "directory" in reasons[1]
    assert reasons[2] == (f"region mask {tmp_path / 'small_mask.png'} is 8x8 (width x height) but "
                          "the image is 16x16; they must have the same size")
    assert reasons[3] == (f"region mask {tmp_path / 'empty_mask.png'} is empty (no nonzero pixel): "
                          "nothing may change")
    assert reasons[4] == ("region mask is empty after resizing to 8x8: its nonzero area is too "
                          "small")
    assert reasons[5] == f"region mask not found: {tmp_path / 'no_mask.png'}"


# ----------------------------------------------------------------------------- run-level errors


def test_run_level_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match=r"data source .*nowhere does not exist"):
        _open(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"image folder .*empty holds no image files"):
        _open(empty)
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(DataError, match="neither a folder nor an .npz or .csv file"):
        _open(tmp_path / "list.txt")
    with pytest.raises(DataError, match=r"npz file .*absent.npz does not exist"):
        _open(tmp_path / "absent.npz")
    with pytest.raises(DataError, match=r"channels=2: expected 1 \(grey\) or 3 \(RGB\)"):
        _open(empty, channels=2)
    with pytest.raises(DataError, match=r"image_size=\(0, 8\)"):
        _open(empty, image_size=(0, 8))


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "no_images.npz", train_images=np.zeros((2, 4, 4), np.uint8),
             train_labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError) as e:
        _open(tmp_path / "no_images.npz")
    assert str(e.value) == (f"{tmp_path / 'no_images.npz'} has no array 'images' (it holds: "
                            "train_images, train_labels); choose the images key "
                            "(config: data.npz.images_key)")
    with pytest.raises(DataError, match=r"has no array 'labels' .*data.npz.labels_key=''"):
        _open(tmp_path / "no_images.npz", images_key="train_images")
    nan = np.zeros((4, 4, 4), np.float32)
    nan[2, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", images=nan, labels=np.zeros(4, int))
    # one bad image is skipped with its reason (as a bad file of a folder), not the whole run
    ds = _open(tmp_path / "nan.npz")
    skipped = ds.load(2)
    assert skipped == data.SkipRecord(2, f"{tmp_path / 'nan.npz'}[2]", "the image holds NaN or "
                                      f"infinite pixels ({tmp_path / 'nan.npz'}[2])")
    assert ds.load(1).image.shape == (8, 8, 3)
    np.savez(tmp_path / "all_nan.npz", images=np.full((2, 4, 4), np.inf, np.float32), labels=[0, 0])
    with pytest.raises(DataError, match=r"holds NaN or infinite pixels in every image"):
        _open(tmp_path / "all_nan.npz")
    np.savez(tmp_path / "range.npz", images=np.zeros((3, 4, 4), np.uint8), labels=[0, 1, 5])
    with pytest.raises(DataError) as e:
        _open(tmp_path / "range.npz", num_classes=3)
    assert str(e.value) == (f"{tmp_path / 'range.npz'}: label 5 of {tmp_path / 'range.npz'}[2] is "
                            "out of range for 3 classes (valid: 0..2); 1 example(s) affected")
    np.savez(tmp_path / "float.npz", images=np.full((1, 4, 4), 255.0), labels=[0])
    with pytest.raises(DataError, match=r"must lie in \[0, 1\], found \[255, 255\]"):
        _open(tmp_path / "float.npz")
    np.savez(tmp_path / "multi.npz", images=np.zeros((2, 4, 4), np.uint8),
             labels=np.zeros((2, 14), np.uint8))
    with pytest.raises(DataError, match=r"shape \(2, 14\); expected \(N,\) or \(N, 1\)"):
        _open(tmp_path / "multi.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 4, 4, 5), np.uint8), labels=[0, 0])
    with pytest.raises(DataError, match=r"has shape \(2, 4, 4, 5\); expected \(N, H, W\)"):
        _open(tmp_path / "shape.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read .*broken.npz as an .npz file"):
        _open(tmp_path / "broken.npz")


def test_csv_errors(tmp_path):
    def csv(name, text):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    with pytest.raises(DataError) as e:
        _open(csv("a.csv", "path,region\nx.png,\n"))
    assert str(e.value) == (f"{tmp_path / 'a.csv'}: missing column(s) target (header: path,region); "
                            "expected the header path,target[,region][,label]")
    with pytest.raises(DataError, match=r"unknown column\(s\) colour"):
        _open(csv("b.csv", "path,target,colour\nx.png,1,red\n"))
    with pytest.raises(DataError, match=r"b2.csv line 3: target 'cat' is a name, but the classifier "
                                         r"has no class names"):
        _open(csv("b2.csv", "path,target\nx.png,1\ny.png,cat\n"))
    with pytest.raises(DataError, match=r"c.csv line 2: 3 fields, the header has 2"):
        _open(csv("c.csv", "path,target\nx.png,1,extra\n"))
    with pytest.raises(DataError, match=r"d.csv is empty; expected a header"):
        _open(csv("d.csv", ""))
    with pytest.raises(DataError, match=r"e.csv lists no images \(only a header\)"):
        _open(csv("e.csv", "path,target\n"))
    with pytest.raises(DataError, match=r"f.csv line 2: target -1 is negative"):
        _open(csv("f.csv", "path,target\nx.png,-1\n"))
    with pytest.raises(DataError, match=r"target 7 of .*x.png is out of range for 5 classes"):
        _open(csv("g.csv", "path,target\nx.png,7\n"), num_classes=5)


# ----------------------------------------------------------------------------- batching


@pytest.fixture(scope="module")
def grey_npz(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("npz") / "grey.npz")
    images = (np.arange(23)[:, None, None] * np.ones((1, 4, 4))).astype(np.uint8)
    np.savez(path, images=images, labels=np.arange(23) % 4)
    return data.open_dataset(path, image_size=(4, 4), channels=1)


@pytest.mark.parametrize("process_count", [1, 3])
def test_shards_cover_every_id_once_with_fixed_shapes(grey_npz, process_count):
    skip = {4, 5, 17}
    seen = []
    counts = []
    for p in range(process_count):
        batches = list(data.iterate_batches(grey_npz, 5, process_index=p,
                                            process_count=process_count, skip_ids=skip))
        counts.append(len(batches))
        assert len(batches) == data.num_batches(grey_npz, 5, process_index=p,
                                                process_count=process_count, skip_ids=skip)
        for b in batches:
            assert b.images.shape == (5, 4, 4, 1) and b.regions.shape == (5, 4, 4, 1)
            assert b.example_ids.shape == b.valid.shape == b.labels.shape == (5,)
            ids = b.example_ids[b.valid]
            assert np.all(ids % process_count == p)
            # Each image holds its own id as pixel value and its label is id % 4.
            np.testing.assert_allclose(b.images[b.valid][:, 0, 0, 0], ids / 255.0, atol=1e-6)
            np.testing.assert_array_equal(b.labels[b.valid], ids % 4)
            assert not b.valid[len(ids):].any()  # padding only at the end
            seen.extend(ids.tolist())
        assert grey_npz.count_remaining(skip, process_index=p, process_count=process_count) == \
            sum(b.num_valid for b in batches)
    assert sorted(seen) == sorted(set(range(23)) - skip)
    assert max(counts) == data.max_num_batches(grey_npz, 5, process_count=process_count,
                                               skip_ids=skip)


def test_padding_to_a_common_batch_count(grey_npz):
    batches = list(data.iterate_batches(grey_npz, 4, process_index=1, process_count=2,
                                        pad_to_num_batches=5))
    assert len(batches) == 5
    assert [b.num_valid for b in batches] == [4, 4, 3, 0, 0]
    assert (batches[-1].example_ids == -1).all()
    with pytest.raises(ValueError, match="pad_to_num_batches=1 is less than the 3 batches"):
        data.iterate_batches(grey_npz, 4, process_index=1, process_count=2, pad_to_num_batches=1)
    with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
        data.iterate_batches(grey_npz, 4, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        data.iterate_batches(grey_npz, 0)


def test_threaded_and_synchronous_decoding_agree_and_stop_early(grey_npz):
    plain = list(data.iterate_batches(grey_npz, 6, num_threads=0))
    threaded = list(data.iterate_batches(grey_npz, 6, num_threads=3, prefetch=2))
    for a, b in zip(plain, threaded, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.example_ids, b.example_ids)
    iterator = data.iterate_batches(grey_npz, 2, num_threads=2)
    first = next(iterator)
    iterator.close()  # a caller that stops early (preemption) leaves no thread running
    np.testing.assert_array_equal(first.example_ids, [0, 1])
