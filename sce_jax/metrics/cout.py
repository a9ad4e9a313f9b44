"""COUT, the counterfactual transition score (Khorram & Fuxin, "Cycle-Consistent
Counterfactuals by Latent Transformations", CVPR 2022), as used in the evaluation protocols of
DiME (Jeanneret et al., ACCV 2022) and ACE (Jeanneret et al., CVPR 2023).

It asks whether the pixels a counterfactual changes most are the ones that move the
classifier: pixels are copied from the counterfactual into the original one group at a time,
in decreasing order of change, and the classifier's probabilities are followed along the way.

Definition implemented (the published evaluation code's, restated):

1. Change map ``c_p = sum_c |x'_{p,c} - x_{p,c}|`` over the H W pixels; pixels ranked by
   decreasing ``c_p`` (ties in raster order).
2. Step ``s = max(1, floor(H W / num_steps))`` pixels (``num_steps = 50`` in the protocol);
   after ``k`` steps the top ``n_k = min(k s, H W)`` pixels come from the counterfactual:
   ``x^(k) = x + M_k (x' - x)`` for ``k = 0 .. ceil(H W / s)``, so ``x^(0) = x`` and the last
   is ``x'``.
3. Curves: ``P_src(k)``, the probability of the source decision, and ``P_tgt(k)``, of the
   target decision, on ``x^(k)``. For a softmax head, ``softmax(l)_source`` and
   ``softmax(l)_target``. For a sigmoid (attribute) head with attribute ``t``: the source
   decision is the classifier's decision on the original, ``b = [l_t(x) > 0]``,
   ``P_src = sigmoid(l_t)`` if ``b`` else ``1 - sigmoid(l_t)``, and ``P_tgt = 1 - P_src``.
4. Areas by the trapezoid rule over the fraction of inserted pixels ``f_k = n_k / (H W)``:
   ``AUC(P) = sum_k (f_k - f_{k-1}) (P(k) + P(k-1)) / 2``.
5. ``COUT = AUC(P_tgt) - AUC(P_src)``, in [-1, 1]; higher is better (the target decision
   takes over early, from the few most-changed pixels).

Assumptions and differences: the reference gives every step the width ``s / (H W)``, so when
``H W`` is not a multiple of ``s`` its last step is counted as full and its x-axis runs past 1
(for 128 x 128 images, ``s = 327`` and the axis ends at 51 * 327 / 16384 = 1.018); here the last
step has its true width and the axis ends at 1. The two agree when ``s`` divides ``H W``
(e.g. 10 x 10 images, ``s = 2``) and otherwise differ by less than ``s / (H W)``. The
reference's change map is min-max normalised first, which does not change the order. For
``"other"`` targets (leave class t), pass the class the classifier gives the counterfactual
as ``target``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sce_jax.metrics import _arrays
from sce_jax.metrics.batching import map_in_batches
from sce_jax.search.targets import HEADS


@jax.jit
def _pixel_ranks(x, x_cf):
    """Rank of each pixel (0 = largest change), (N, H, W); stable, raster order on ties."""
    change = jnp.sum(jnp.abs(x_cf - x), axis=-1).reshape(x.shape[0], -1)
    order = jnp.argsort(-change, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return ranks.reshape(x.shape[:3])


@jax.jit
def _insert(x, x_cf, ranks, count):
    mask = (ranks < count)[..., None].astype(x.dtype)
    return x + mask * (x_cf - x)


def _curves(logits, head, source, target, original_decision):
    logits = np.asarray(logits, np.float64)
    rows = np.arange(logits.shape[0])
    if head == "multiclass":
        z = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        return p[rows, source], p[rows, target]
    p = 1.0 / (1.0 + np.exp(-logits[rows, target]))
    p_src = np.where(original_decision, p, 1.0 - p)
    return p_src, 1.0 - p_src


def transition_curves(logits_fn: Callable[[Any], Any], original: Any, counterfactual: Any,
                      target: Any, source: Any = None, *, head: str = "multiclass",
                      num_steps: int = 50, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The curves behind COUT (steps 1-3 of the module docstring).

    Args:
      logits_fn: ``images (B, H, W, C) in [0, 1] -> logits (B, K)``.
      original, counterfactual: ``(N, H, W, C)``.
      target: ``(N,)`` target class (softmax head) or attribute index (sigmoid head).
      source: ``(N,)`` source class for a softmax head (the original decision); not used for a
        sigmoid head, where the source decision is read off the original.
      head: ``"multiclass"`` (softmax) or ``"multilabel"`` (sigmoid per attribute).
      num_steps: number of insertion steps (the step is ``max(1, H W // num_steps)`` pixels).
      batch_size: images per classifier call.

    Returns:
      ``{"fraction": (S + 1,), "source": (N, S + 1), "target": (N, S + 1)}``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    n, h, w, _ = _arrays.require_rank("original", original, 4, "N, H, W, C")
    _arrays.require_same_shape("original", original, "counterfactual", counterfactual)
    target = np.asarray(target, np.int64).reshape(-1)
    if target.shape != (n,):
        raise ValueError(f"target must have one entry per image ({n}), got shape {target.shape}")
    if head == "multiclass":
        if source is None:
            raise ValueError("a softmax head needs source: the original class of each image")
        source = np.asarray(source, np.int64).reshape(-1)
        if source.shape != (n,):
            raise ValueError(f"source must have one entry per image ({n}), got shape "
                             f"{source.shape}")
    elif source is not None:
        raise ValueError("a sigmoid head takes no source: the source decision is the "
                         "classifier's decision on the original")

    x = jnp.asarray(original, jnp.float32)
    x_cf = jnp.asarray(counterfactual, jnp.float32)
    pixels = h * w
    step = max(1, pixels // int(num_steps))
    counts = [min(k * step, pixels) for k in range(math.ceil(pixels / step) + 1)]
    ranks = _pixel_ranks(x, x_cf)

    def classify(images):
        logits = map_in_batches(logits_fn, images, batch_size)
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(f"logits_fn must return (batch, K) logits, got shape {logits.shape}")
        k = logits.shape[1]
        for name, idx in (("target", target), ("source", source)):
            if idx is not None and (np.any(idx < 0) or np.any(idx >= k)):
                raise ValueError(f"{name} index out of range for {k} outputs: "
                                 f"{sorted(set(idx.tolist()))}")
        return logits

    original_decision = None
    src_curve, tgt_curve = [], []
    for count in counts:
        logits = classify(_insert(x, x_cf, ranks, count))
        if original_decision is None and head == "multilabel":
            original_decision = logits[np.arange(n), target] > 0
        p_src, p_tgt = _curves(logits, head, source, target, original_decision)
        src_curve.append(p_src)
        tgt_curve.append(p_tgt)
    return {"fraction": np.asarray(counts, np.float64) / pixels,
            "source": np.stack(src_curve, axis=1), "target": np.stack(tgt_curve, axis=1)}


def area_under_curve(fraction: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Trapezoid rule ``sum_k (f_k - f_{k-1}) (P(k) + P(k-1)) / 2`` along the last axis."""
    widths = np.diff(fraction)
    return np.sum(widths * (curve[..., 1:] + curve[..., :-1]) / 2.0, axis=-1)


def cout(logits_fn: Callable[[Any], Any], original: Any, counterfactual: Any, target: Any,
         source: Any = None, *, head: str = "multiclass", num_steps: int = 50,
         batch_size: int = 64) -> np.ndarray:
    """COUT per counterfactual, ``AUC(P_tgt) - AUC(P_src)`` in [-1, 1]: ``(N,)``.

    Arguments as in :func:`transition_curves`.
    """
    curves = transition_curves(logits_fn, original, counterfactual, target, source, head=head,
                               num_steps=num_steps, batch_size=batch_size)
    return (area_under_curve(curves["fraction"], curves["target"])
            - area_under_curve(curves["fraction"], curves["source"]))
