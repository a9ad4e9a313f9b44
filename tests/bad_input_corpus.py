"""The corpus of bad inputs, made on demand in a temporary folder (no committed files).

Two kinds of cases, each with what a user must see (docs/distributed.md, "Bad inputs", lists them):

- :func:`run_level_cases`: a data source, model, target, size, search value or workdir that
  cannot work. Each is a change of the tiny run config; the run must stop before any work,
  with nothing written to the workdir (no ``run_config.json``, no ``inputs.json``), with one
  of ``run.USER_ERRORS`` whose message matches (``scripts/explain.py``: ``error:``, exit 2).
- :func:`write_odd_folder`: files of one image folder; bad ones must become skip records
  with their reason, odd but valid ones must be explained.

Command-line-only cases (unknown flags and keys, ``--process_id`` without the rest, a cache
folder that cannot be made) are in test_bad_inputs.py; multi-process ones in
test_multiprocess.py; a changed input set on resume in test_run.py.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from tests.search_helpers import with_overrides

LUMA = np.array([0.299, 0.587, 0.114])


class Case(NamedTuple):
    name: str
    changes: dict[str, Any]  # dotted run-config keys -> values
    message: str              # a regular expression the error's message must match


def png_header_only(path: str, width: int, height: int) -> None:
    """A PNG whose header claims width x height (no pixel data): Pillow refuses it as a bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def write_odd_folder(folder: str) -> dict[str, Any]:
    """16 files; returns {name: expected 8-bit grey original, or the start of the skip reason}.

    The first 11 (``a_`` .. ``k_``) fill 6 batches of 2 in this order (tests rely on the ids).
    """
    os.makedirs(folder)
    rng = np.random.default_rng(3)
    expected: dict[str, Any] = {}

    def grey_of_rgb(rgb):
        return np.rint(np.clip(np.asarray(rgb, np.float64) / 255.0 @ LUMA, 0, 1) * 255)

    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(grey).save(os.path.join(folder, "a_grey.png"))
    expected["a_grey.png"] = grey
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(os.path.join(folder, "b_rgba.png"))
    alpha = rgba[..., 3:] / 255.0
    expected["b_rgba.png"] = grey_of_rgb(rgba[..., :3] * alpha + 255.0 * (1 - alpha))
    palette = Image.fromarray(rng.integers(0, 4, (16, 16), dtype=np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 250] + [0] * 756)
    palette.save(os.path.join(folder, "c_palette.png"))
    expected["c_palette.png"] = grey_of_rgb(np.asarray(palette.convert("RGB")))
    deep = rng.integers(0, 65536, (16, 16)).astype(np.uint16)
    Image.fromarray(deep).save(os.path.join(folder, "d_deep16.png"))
    expected["d_deep16.png"] = np.rint(deep / 65535.0 * 255)
    cmyk = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "CMYK")
    cmyk.save(os.path.join(folder, "e_cmyk.jpg"), quality=95)
    with Image.open(os.path.join(folder, "e_cmyk.jpg")) as image:
        assert image.mode == "CMYK"
        expected["e_cmyk.jpg"] = grey_of_rgb(np.asarray(image.convert("RGB")))
    Image.fromarray(np.full((1, 1), 77, np.uint8)).save(os.path.join(folder, "f_tiny.png"))
    expected["f_tiny.png"] = np.full((16, 16), 77)
    Image.fromarray(np.full((300, 500), 200, np.uint8)).save(os.path.join(folder, "g_large.png"))
    expected["g_large.png"] = np.full((16, 16), 200)
    png_header_only(os.path.join(folder, "h_bomb.png"), 20000, 20000)
    expected["h_bomb.png"] = "cannot decode image: DecompressionBombError"
    whole = open(os.path.join(folder, "g_large.png"), "rb").read()
    with open(os.path.join(folder, "i_truncated.png"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    expected["i_truncated.png"] = "cannot decode image: "
    with open(os.path.join(folder, "j_corrupt.png"), "wb") as f:
        f.write(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    expected["j_corrupt.png"] = "cannot decode image: UnidentifiedImageError: cannot identify image file"
    with open(os.path.join(folder, "k_text.jpg"), "w") as f:
        f.write("these are notes, not a photograph")
    expected["k_text.jpg"] = "cannot decode image: UnidentifiedImageError: cannot identify image file"
    # a GIF is explained (first frame); other image formats are listed, then skipped if
    # Pillow cannot decode them; an empty file and a link to nothing are skipped
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(os.path.join(folder, "l_plain.gif"))
    expected["l_plain.gif"] = np.full((16, 16), 120)
    with open(os.path.join(folder, "m_photo.heic"), "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")
    expected["m_photo.heic"] = "cannot decode image: UnidentifiedImageError: cannot identify image file"
    open(os.path.join(folder, "n_empty.png"), "wb").close()
    expected["n_empty.png"] = "cannot decode image: "
    os.symlink(os.path.join(folder, "gone.png"), os.path.join(folder, "o_dangling.png"))
    expected["o_dangling.png"] = "file not found: "
    # a FIFO under an image name is skipped unopened (reading it would wait forever)
    os.mkfifo(os.path.join(folder, "p_fifo.png"))
    expected["p_fifo.png"] = "not a regular file: "
    return expected


def run_level_cases(root: str, checkpoints: tuple[str, str]) -> list[Case]:
    """Every run-level bad input, its files made under ``root``."""
    os.makedirs(root, exist_ok=True)

    def path(name):
        return os.path.join(root, name)

    def npz(name, **arrays):
        np.savez(path(name), **arrays)
        return path(name)

    def text(name, content, mode="w"):
        with open(path(name), mode) as f:
            f.write(content)
        return path(name)

    os.makedirs(path("empty"), exist_ok=True)
    image = path("one.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    misfit = path("misfit")
    shutil.copytree(checkpoints[1], misfit, dirs_exist_ok=True)
    with open(os.path.join(misfit, "model.json")) as f:
        meta = json.load(f)
    meta["config"]["widths"] = [4, 16]
    with open(os.path.join(misfit, "model.json"), "w") as f:
        json.dump(meta, f)
    grey = np.zeros((2, 16, 16), np.uint8)
    src = "data.source"
    return [
        # data sources as a whole
        Case("empty folder", {src: path("empty")}, r"holds no image files"),
        Case("missing source", {src: path("nowhere")}, r"nowhere does not exist"),
        Case("source of another type", {src: text("notes.txt", "x")},
             r"neither a folder nor an .npz or .csv file"),
        Case("npz without images", {src: npz("a.npz", x_train=grey)},
             r"has no array 'images' \(it holds: x_train\)"),
        Case("npz without labels", {src: npz("b.npz", images=grey)},
             r"has no array 'labels' .*data.npz.labels_key=''"),
        Case("npz with NaN in every image", {src: npz("c.npz", images=np.full(
            (2, 16, 16), np.nan, np.float32), labels=[0, 1])}, r"NaN or infinite pixels in every image"),
        Case("npz label out of range", {src: npz("d.npz", images=grey, labels=[1, 3])},
             r"label 3 of .*d.npz\[1\] is out of range for 3 classes"),
        Case("npz negative label", {src: npz("e.npz", images=grey, labels=[0, -1])},
             r"holds a negative label \(-1\) at index 1"),
        Case("npz floats in 0..255", {src: npz("f.npz", images=np.full((2, 16, 16), 255.0),
                                              labels=[0, 1])}, r"must lie in \[0, 1\], found \[255, 255\]"),
        Case("npz of 5 channels", {src: npz("g.npz", images=np.zeros((2, 16, 16, 5), np.uint8),
                                            labels=[0, 1])}, r"has shape \(2, 16, 16, 5\)"),
        Case("npz of no images", {src: npz("h.npz", images=np.zeros((0, 16, 16), np.uint8),
                                           labels=np.zeros(0, int))}, r"holds no images"),
        Case("npz that is not a zip", {src: text("i.npz", "not a zip")}, r"cannot read .* as an .npz file"),
        Case("npz labels of another count", {src: npz("j.npz", images=grey, labels=[0])},
             r"1 labels for 2 images"),
        Case("npz of strings", {src: npz("k.npz", images=np.array([["a"]]), labels=[0])},
             r"has shape|has dtype"),
        Case("CSV without a target column", {src: text("a.csv", f"path\n{image}\n")},
             r"missing column\(s\) target"),
        Case("CSV with an unknown column", {src: text("b.csv", f"path,target,colour\n{image},1,red\n")},
             r"unknown column\(s\) colour"),
        Case("CSV target a name without class names",
             {src: text("c.csv", f"path,target\n{image},cat\n")},
             r"line 2: target 'cat' is a name, but the classifier has no class names"),
        Case("CSV negative target", {src: text("d.csv", f"path,target\n{image},-2\n")},
             r"line 2: target -2 is negative"),
        Case("CSV row of another length", {src: text("e.csv", f"path,target\n{image},1,x\n")},
             r"line 2: 3 fields, the header has 2"),
        Case("CSV empty path", {src: text("f.csv", "path,target\n,1\n")}, r"line 2: empty path"),
        Case("CSV header only", {src: text("g.csv", "path,target\n")}, r"lists no images"),
        Case("CSV empty file", {src: text("h.csv", "")}, r"is empty; expected a header"),
        Case("CSV target out of range", {src: text("i.csv", f"path,target\n{image},5\n")},
             r"target 5 of .*one.png is out of range for 3 classes"),
        Case("CSV not UTF-8", {src: text("j.csv", b"path,target\n\xff\xfe,1\n", "wb")},
             r"cannot read CSV file"),
        Case("negative limit", {"data.limit": -1}, r"data.limit=-1: must be in \[0, 2147483647\]"),
        # models
        Case("classifier checkpoint holds an autoencoder", {"classifier.checkpoint": checkpoints[0]},
             r"holds a AutoencoderKL, expected ResNet, DenseNet, SmallCNN"),
        Case("generator folder without model.json", {"generator.checkpoint": path("empty")},
             r"no model.json; not an sce_jax checkpoint"),
        Case("weights that do not fit the model", {"classifier.checkpoint": misfit},
             r"cannot be restored into a SmallCNN of this config"),
        Case("no classifier", {"classifier.checkpoint": ""}, r"classifier.checkpoint is empty"),
        Case("two generators", {"generator.diffusers": path("empty")},
             r"set only one of generator.checkpoint and generator.diffusers"),
        Case("unknown generator kind", {"generator.kind": "vq"},
             r"unknown generator.kind 'vq'; known: kl, tiny"),
        Case("unknown generator dtype", {"generator.dtype": "float16"},
             r"generator.dtype='float16': must be float32 or bfloat16"),
        Case("class names for another number of outputs", {"classifier.class_names": tuple("abcdefghij")},
             r"class_names lists 10 names but the classifier .*clf \(SmallCNN\) has 3 outputs"),
        # sizes and channels
        Case("size not a multiple of the downsampling", {"data.image_size": (15, 16)}, r"not a multiple"),
        Case("RGB data for a grey autoencoder", {"data.channels": 3},
             r"the generator .*ae \(AutoencoderKL\) makes 1-channel images but data.channels=3"),
        Case("RGB input for a grey classifier", {"classifier.channels": 3},
             r"the classifier .*clf \(SmallCNN\) cannot take 1-channel 16x16 images"),
        Case("two channels", {"data.channels": 2}, r"data.channels=2: must be 1 or 3"),
        Case("batch size 0", {"batch_size": 0}, r"batch_size=0: must be in \[1, 2147483647\]"),
        Case("memory limit NaN", {"max_memory_gb": float("nan")}, r"max_memory_gb=nan: must be a finite"),
        Case("a search larger than max_memory_gb", {"max_memory_gb": 1e-6},
             r"needs about [0-9.e+-]+ GB of memory, more than 1e-06 GB \(max_memory_gb=1e-06\)"),
        Case("classifier std 0", {"classifier.std": (0.0,)},
             r"classifier.std=\(0.0,\): value 0 \(0.0\) must be > 0"),
        Case("classifier std NaN", {"classifier.std": (float("nan"),)},
             r"classifier.std=\(nan,\): value 0 \(nan\) must be a finite number > 0"),
        Case("classifier mean for 2 channels", {"classifier.mean": (0.5, 0.5)},
             r"classifier.mean=\(0.5, 0.5\): must be 1 value or one per channel, each finite "
             r"\(the classifier's input has 1\); it holds 2"),
        Case("classifier input size 0x0", {"classifier.input_size": (0, 0)},
             r"classifier.input_size=\(0, 0\): value 0 \(0\) must be in \[1, 65536\]"),
        Case("classifier of 2 channels", {"classifier.channels": 2},
             r"classifier.channels=2: must be 0, 1 or 3"),
        Case("image side beyond 65536", {"data.image_size": (70000, 16)},
             r"data.image_size=\(70000, 16\): value 0 \(70000\) must be in \[1, 65536\]"),
        Case("negative slots", {"slots": -1}, r"slots=-1: must be in \[0, 2147483647\]"),
        Case("report of -1 examples", {"output.report_max_examples": -1},
             r"output.report_max_examples=-1: must be in \[0, 2147483647\]"),
        # targets
        Case("target class out of range", {"targets.kind": "class", "targets.class_index": 3},
             r"target class 3 is out of range: "),
        Case("kind class without a class", {"targets.kind": "class"},
             r"targets.kind='class' needs targets.class_index >= 0"),
        Case("unknown target kind", {"targets.kind": "nearest"},
             r"unknown targets.kind 'nearest'; known: other, class, flip, all_others, csv"),
        # search values
        Case("steps 0", {"search.steps": 0}, r"search config steps=0: must be in \[1, 2147483647\]"),
        Case("steps beyond the int32 step counter", {"search.steps": 3_000_000_000},
             r"search config steps=3000000000: must be in \[1, 2147483647\]"),
        Case("attempts 0", {"search.attempts": 0}, r"search config attempts=0: must be in \[1, "),
        Case("negative learning rate", {"search.learning_rate": -1.0}, r"learning_rate=-1.0: must be > 0"),
        Case("learning rate 0", {"search.learning_rate": 0.0}, r"learning_rate=0.0: must be > 0"),
        Case("momentum 1", {"search.momentum": 1.0}, r"momentum=1.0: must be in \[0, 1\)"),
        Case("sparsify above 1", {"search.sparsify": 1.5}, r"sparsify=1.5: must be in \[0, 1\]"),
        Case("l2 beyond float32", {"search.l2": 1e39},
             r"l2=1e\+39: must be a finite number >= 0 \(float32 holds up to 3.40282e\+38\)"),
        Case("NaN learning rate", {"search.learning_rate": float("nan")},
             r"learning_rate=nan: must be a finite number"),
        Case("infinite l2", {"search.l2": float("inf")}, r"l2=inf: must be a finite number"),
        Case("temperature 0", {"search.temperature": 0.0}, r"temperature=0.0: must be > 0"),
        Case("no smoothing samples", {"search.smoothing.num_samples": 0}, r"num_samples=0: must be in \[1, "),
        Case("negative smoothing sigma", {"search.smoothing.sigma": -1.0}, r"smoothing.sigma=-1.0: must be >= 0"),
        Case("unknown optimizer", {"search.optimizer": "rmsprop"}, r"optimizer='rmsprop': must be one of"),
        Case("unknown output mode", {"search.output_mode": "resid"}, r"output_mode='resid': must be one of"),
        Case("mask threshold above 1", {"search.mask.threshold": 2.0}, r"mask.threshold=2.0: must be in \[0, 1\]"),
        Case("mask period 0", {"search.mask.period": 0}, r"mask.period=0: must be in \[1, "),
        Case("mask blur wider than 4096 pixels", {"search.mask.blur_sigma": 5000.0},
             r"mask.blur_sigma=5000.0: must be in \[0, 4096\]"),
    ]


def apply(config, changes: dict[str, Any]):
    """Sets dotted keys of a run config (returns it)."""
    return with_overrides(config, **changes)
