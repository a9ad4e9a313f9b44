"""Paths that are not regular files (FIFOs, sockets, devices) and hidden names in the data sources.

A FIFO under an image name is skipped with its reason without being opened (opening one waits
for a writer forever); each check runs in a thread with a time limit, so a regression fails
instead of hanging the suite. Hidden names are left out of a folder, and said so.
"""

import contextlib
import logging
import os
import stat
import threading

import numpy as np
import pytest
from PIL import Image

from sce_jax import data
from sce_jax.data import DataError, image_io

LIMIT_S = 30


def _promptly(fn, *fifos):
    """``fn()``'s value (or its exception) within LIMIT_S seconds; else the test fails."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(LIMIT_S)
    if thread.is_alive():
        for fifo in fifos:  # a writer that closes at once gives a blocked reader its EOF
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"did not return within {LIMIT_S} s: blocked on a FIFO?")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _png(path, value=90):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)
    return str(path)


def _open(source):
    return data.open_dataset(str(source), image_size=(4, 4), channels=1)


def test_fifo_socket_and_device_in_a_folder_are_skipped_unopened(tmp_path):
    good = _png(tmp_path / "a.png")
    fifo = str(tmp_path / "b.png")
    os.mkfifo(fifo)
    os.mknod(tmp_path / "c.png", stat.S_IFSOCK | 0o600)
    os.symlink("/dev/zero", tmp_path / "d.png")  # a device that never ends
    ds = _promptly(lambda: _open(tmp_path), fifo)
    assert ds.sources == [good] + [str(tmp_path / n) for n in ("b.png", "c.png", "d.png")]
    batch = _promptly(lambda: next(data.iterate_batches(ds, 4, num_threads=2)), fifo)
    np.testing.assert_array_equal(batch.valid, [True, False, False, False])
    np.testing.assert_allclose(batch.images[0], 90 / 255, atol=1e-6)
    reasons = {os.path.basename(s.source): s.reason for s in batch.skipped}
    assert reasons == {
        "b.png": f"not a regular file: {fifo} is a FIFO (named pipe); it was not opened",
        "c.png": f"not a regular file: {tmp_path / 'c.png'} is a socket; it was not opened",
        "d.png": f"not a regular file: {tmp_path / 'd.png'} is a character device; it was not "
                 "opened"}


def test_a_file_swapped_for_a_fifo_after_the_first_look_is_refused(tmp_path, monkeypatch):
    fifo = str(tmp_path / "late.png")
    os.mkfifo(fifo)
    regular = os.stat(_png(tmp_path / "real.png"))
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p) == fifo
                        else real_stat(p, *a, **k))
    with pytest.raises(image_io.NotRegularFileError, match=r"late.png is a FIFO \(named pipe\)"):
        _promptly(lambda: image_io.read_image(fifo), fifo)


def test_csv_rows_naming_a_fifo_are_skipped_and_a_fifo_source_is_refused(tmp_path):
    _png(tmp_path / "a.png")
    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    (tmp_path / "list.csv").write_text("path,target,region\npipe.png,1,\na.png,1,pipe.png\n"
                                       "a.png,1,\n")
    ds = _open(tmp_path / "list.csv")
    records = _promptly(lambda: [ds.load(i) for i in range(3)], fifo)
    assert records[0].reason == f"not a regular file: {fifo} is a FIFO (named pipe); it was not opened"
    assert records[1].reason == (f"region mask is not a regular file: {fifo} is a FIFO (named "
                                 "pipe); it was not opened")
    assert records[2].image.shape == (4, 4, 1)
    for name, what in (("list2.csv", "CSV file"), ("set.npz", "npz file")):
        os.mkfifo(tmp_path / name)
        with pytest.raises(DataError, match=rf"{what} .*{name} is a FIFO \(named pipe\), not a "
                                            "regular file; it was not opened"):
            _promptly(lambda: _open(tmp_path / name), str(tmp_path / name))


def test_hidden_names_are_left_out_and_said_so(tmp_path, caplog):
    _png(tmp_path / "a.png")
    _png(tmp_path / ".hidden.png")
    _png(tmp_path / "sub" / "._b.png")
    _png(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png")
    (tmp_path / ".notes.txt").write_text("not an image: not listed")
    with caplog.at_level(logging.INFO):
        ds = _open(tmp_path)
    assert ds.sources == [str(tmp_path / "a.png")]
    assert ds.hidden == [".hidden.png", ".ipynb_checkpoints/", "sub/._b.png"]
    assert (f"{tmp_path}: left out 3 hidden file(s) or folder(s) (names starting with '.'; "
            "rename one to explain it): .hidden.png, .ipynb_checkpoints/, sub/._b.png"
            ) in caplog.messages
    only_hidden = tmp_path / "only_hidden"
    _png(only_hidden / ".x.png")
    with pytest.raises(DataError, match=r"holds no image files \(.*; left out the hidden \.x\.png\)"):
        _open(only_hidden)
