"""The PNG files of one explained image, as the dataset run and ``save_explanation`` write them.

Per example folder ``images/<id:07d>/``: ``original.png`` and, per attempt ``a`` of target
``t``, ``cf_t<t>_a<a>.png`` (the 8-bit counterfactual), ``diff_t<t>_a<a>.png`` (difference heat
map, :func:`sce_jax.data.image_io.difference_heatmap`) and ``mask_t<t>_a<a>.png`` (edit mask); the
names are :func:`sce_jax.workdir.layout.image_file`'s. Every file is written atomically
(:func:`sce_jax.data.image_io.write_png`).
"""

from __future__ import annotations

import os

import numpy as np

from sce_jax.data import image_io
from sce_jax.workdir.layout import Files, example_folder, image_file


def write_example_files(workdir: str, example_id: int, original: np.ndarray,
                        counterfactuals: np.ndarray, masks: np.ndarray | None, target: int, *,
                        heatmaps: bool = True, write_masks: bool = True,
                        write_original: bool = True) -> list[Files]:
    """Writes one (example, target)'s PNGs; returns per attempt its files (workdir-relative).

    Args:
      original: (H, W, C) float image in [0, 1].
      counterfactuals: (K, H, W, C) uint8 counterfactuals as written.
      masks: (K, H, W, 1) edit masks in [0, 1] (None: none written).
      write_original: False when another target of the same example wrote it already.
    """
    os.makedirs(os.path.join(workdir, example_folder(example_id)), exist_ok=True)
    original_file = image_file(example_id, "original")
    if write_original:
        image_io.write_png(os.path.join(workdir, original_file), original)
    written = []
    for a in range(counterfactuals.shape[0]):
        files = Files(original=original_file,
                      counterfactual=image_file(example_id, "counterfactual", target, a))
        image_io.write_png(os.path.join(workdir, files["counterfactual"]), counterfactuals[a])
        if heatmaps:
            files["difference"] = image_file(example_id, "difference", target, a)
            image_io.write_png(os.path.join(workdir, files["difference"]), image_io.difference_heatmap(
                original, counterfactuals[a].astype(np.float32) / 255.0))
        if write_masks and masks is not None:
            files["mask"] = image_file(example_id, "mask", target, a)
            image_io.write_png(os.path.join(workdir, files["mask"]), masks[a])
        written.append(files)
    return written
