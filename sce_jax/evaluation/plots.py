"""The evaluation's PNG plots of one run (matplotlib, drawn off screen with its Agg canvas).

- ``distances.png``: histograms of the per-counterfactual distances (pixel L1 and L2, latent
  L1, changed fraction), valid and failed counterfactuals overlaid;
- ``flip_rate_per_class.png``: flip rate per target (the class to reach or to leave, or the
  attribute), with the number of counterfactuals on each bar;
- ``best_worst.png``: rows of (original, counterfactual) pairs: the valid counterfactuals
  closest to their originals (smallest pixel L1), the valid ones farthest from them, and the
  failed ones that changed the most.

No pyplot: each figure is a :class:`matplotlib.figure.Figure` saved directly, so nothing
global (backend, open figures) is touched.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sce_jax.data import image_io

ROW_INCHES = 1.45  # height of one row of best_worst.png: a 1-inch image and its caption
HISTOGRAMS = (("pixel_l1", "pixel L1 (mean |x' - x|)"), ("pixel_l2", "pixel L2 (||x' - x||)"),
              ("latent_l1", "latent L1 (mean |E(x') - E(x)|)"),
              ("changed_fraction", "share of pixels changed"))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: str) -> str:
    with image_io.atomic_write(path, "wb") as f:
        figure.savefig(f, format="png")
    return path


def distances(path: str, values: Mapping[str, np.ndarray], valid: np.ndarray) -> str:
    """Histograms of the distance fields present in ``values`` (per row), valid vs failed."""
    fields = [(k, label) for k, label in HISTOGRAMS if k in values]
    figure = _figure(3.2 * max(1, len(fields)), 2.8)
    axes = figure.subplots(1, max(1, len(fields)), squeeze=False)[0]
    for ax, (key, label) in zip(axes, fields):
        v = np.asarray(values[key], np.float64)
        finite = np.isfinite(v)
        bins = np.histogram_bin_edges(v[finite], bins=20) if finite.any() else 10
        for rows, name, colour in ((valid, "valid", "tab:green"), (~valid, "failed", "tab:red")):
            chosen = v[rows & finite]
            if chosen.size:
                ax.hist(chosen, bins=bins, alpha=0.6, color=colour, label=f"{name} ({chosen.size})")
        ax.set_xlabel(label)
        ax.set_ylabel("counterfactuals")
        if ax.has_data():
            ax.legend(fontsize="small")
    return _save(figure, path)


def flip_rate_per_class(path: str, per_class: Mapping[int, Mapping[str, Any]],
                        names: Callable[[int], str]) -> str:
    """Bars of ``per_class[t]["flip_rate"]`` with the counts written on them."""
    targets = sorted(per_class)
    figure = _figure(max(4.0, 0.7 * len(targets) + 1.5), 3.2)
    ax = figure.subplots()
    rates = [per_class[t]["flip_rate"] for t in targets]
    bars = ax.bar(range(len(targets)), rates, color="tab:blue")
    for bar, t in zip(bars, targets):
        ax.annotate(f"n={per_class[t]['count']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(targets)), [names(t) for t in targets], rotation=45, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("flip rate (8-bit images)")
    ax.set_xlabel("target (class to reach or to leave, or attribute)")
    return _save(figure, path)


def _shown(image: np.ndarray) -> tuple[np.ndarray, dict]:
    if image.shape[-1] == 1:
        return image[..., 0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.clip(image, 0.0, 1.0), {}


def best_worst(path: str, originals: np.ndarray, counterfactuals: np.ndarray,
               rows: Sequence[tuple[str, Sequence[int]]], captions: Sequence[str]) -> str:
    """One strip per ``(title, row indices)``: original and counterfactual side by side.

    ``captions[i]`` is written under counterfactual ``i``.
    """
    columns = max([len(r) for _, r in rows] + [1])
    # Each image cell is about 1 inch square; a row adds room for two caption lines only, so
    # the rows sit close together.
    figure = _figure(2.0 * columns + 0.4, ROW_INCHES * max(1, len(rows)))
    grid = figure.subplots(max(1, len(rows)), 2 * columns, squeeze=False)
    for line, (title, indices) in zip(grid, rows):
        for j, ax in enumerate(line):
            ax.set_axis_off()
            pair = j // 2
            if pair >= len(indices):
                continue
            i = indices[pair]
            image, style = _shown(originals[i] if j % 2 == 0 else counterfactuals[i])
            ax.imshow(image, interpolation="nearest", **style)
            ax.set_title("original" if j % 2 == 0 else captions[i], fontsize="x-small")
        line[0].text(-0.1, 0.5, title, transform=line[0].transAxes, rotation=90, ha="right",
                     va="center", fontsize="small")
    if not any(indices for _, indices in rows):
        grid[0][0].text(0, 0.5, "no counterfactuals", fontsize="small")
    return _save(figure, path)


def select_best_worst(pixel_l1: np.ndarray, valid: np.ndarray, count: int
                      ) -> list[tuple[str, list[int]]]:
    """Rows for :func:`best_worst`: closest valid, farthest valid, most-changed failed."""
    order = np.argsort(np.where(np.isfinite(pixel_l1), pixel_l1, np.inf), kind="stable")
    good = [int(i) for i in order if valid[i]]
    bad = [int(i) for i in order if not valid[i] and np.isfinite(pixel_l1[i])]
    rows = [("closest valid", good[:count]),
            ("farthest valid", good[::-1][:count] if len(good) > count else []),
            ("failed, most changed", bad[::-1][:count])]
    return [(title, indices) for title, indices in rows if indices]


def write_plots(folder: str, *, values: Mapping[str, np.ndarray], valid: np.ndarray,
                per_class: Mapping[int, Mapping[str, Any]], names: Callable[[int], str],
                originals: np.ndarray, counterfactuals: np.ndarray, captions: Sequence[str],
                count: int = 5) -> list[str]:
    """Writes the three plots into ``folder``; returns their paths (none without rows)."""
    if not len(valid):
        return []
    os.makedirs(folder, exist_ok=True)
    return [
        distances(os.path.join(folder, "distances.png"), values, valid),
        flip_rate_per_class(os.path.join(folder, "flip_rate_per_class.png"), per_class, names),
        best_worst(os.path.join(folder, "best_worst.png"), originals, counterfactuals,
                   select_best_worst(np.asarray(values["pixel_l1"]), valid, count), captions),
    ]
