"""A figure of a finished run's counterfactuals for the README: one row per image.

    .venv/bin/python scripts/demo_figure.py --workdir=runs/ablation/full --out=docs/fashion_mnist.png
    .venv/bin/python scripts/demo_figure.py --workdir=runs/ablation_squares/full \\
        --out=docs/squares.png --examples=0,1,2,5,9,13

Each row: the original, then per attempt the counterfactual and its edit mask, enlarged with
nearest-neighbour pixels; a thin bar under a counterfactual is green where the record's
outcome is "found" and grey otherwise. Reads the workdir's manifest.jsonl and PNGs only.
"""

import os
import sys

import numpy as np
from absl import app, flags
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax.launch import command_line  # noqa: E402
from sce_jax.workdir import layout as workdir_files  # noqa: E402

flags.DEFINE_string("workdir", None, "A finished run's workdir (scripts/explain.py --workdir).")
flags.DEFINE_string("out", None, "The PNG to write.")
flags.DEFINE_list("examples", [], "Example ids to show (default: the first six).")
flags.DEFINE_integer("cell", 96, "Pixels per image in the figure.")
FLAGS = flags.FLAGS

GAP, BAR = 6, 5
FOUND, OTHER, BACKGROUND = (40, 160, 60), (170, 170, 170), (255, 255, 255)


def _tile(path: str, cell: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((cell, cell), Image.NEAREST))


def figure(workdir: str, example_ids: list[int], cell: int) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (see the module docstring)."""
    records = workdir_files.read_manifest(workdir)
    ok = [r for r in records if r.get("status") == "ok"]
    ids = example_ids or sorted({r["example_id"] for r in ok})[:6]
    rows = []
    for example_id in ids:
        mine = sorted((r for r in ok if r["example_id"] == example_id), key=lambda r: r["attempt"])
        if not mine:
            raise ValueError(f"{workdir}: no counterfactual of example {example_id}")
        tiles = [_tile(os.path.join(workdir, mine[0]["files"]["original"]), cell)]
        for r in mine:
            cf = _tile(os.path.join(workdir, r["files"]["counterfactual"]), cell)
            bar = np.zeros((BAR, cell, 3), np.uint8) + np.uint8(FOUND if r.get("outcome") == "found"
                                                                  else OTHER)
            tiles.append(np.concatenate([cf, bar], 0))
            mask = r["files"].get("mask")
            if mask:
                tiles.append(_tile(os.path.join(workdir, mask), cell))
        height = max(t.shape[0] for t in tiles)
        padded = [np.pad(t, ((0, height - t.shape[0]), (0, GAP), (0, 0)), constant_values=255)
                  for t in tiles]
        rows.append(np.pad(np.concatenate(padded, 1), ((0, GAP), (0, 0), (0, 0)),
                           constant_values=255))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                                  constant_values=255) for r in rows], 0)


def main(argv):
    if len(argv) > 1:
        return command_line.error(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir or not FLAGS.out:
        return command_line.error("--workdir and --out are required")
    try:
        image = figure(FLAGS.workdir, [int(i) for i in FLAGS.examples], FLAGS.cell)
    except (OSError, ValueError, KeyError) as e:
        return command_line.error(str(e))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    Image.fromarray(image).save(FLAGS.out)
    print(f"figure: {os.path.abspath(FLAGS.out)}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=command_line.parse_flags)
