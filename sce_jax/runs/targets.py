"""How a dataset run chooses each search's target: the ``targets.kind`` registry.

A run kind names the search's target kind (:data:`sce_jax.search.targets.KINDS`, which is also
the ``target_kind`` of its manifest records) and how a data batch becomes searches:

``"other"``       leave the predicted class: target -1 (the search takes the prediction)
``"class"``       reach ``targets.class_index`` (needs a class)
``"flip"``        flip attribute ``targets.class_index`` (default 0) of a multilabel head
``"all_others"``  reach every class but the prediction: ``num_outputs - 1`` searches per image
``"csv"``         reach the CSV's ``target`` column; a row without one is skipped with a reason
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from sce_jax.explainer import all_other_classes
from sce_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class BatchTargets:
    """The searches of one data batch.

    Attributes:
      rows: (S,) the batch row each search explains (a row may be searched several times).
      targets: (S,) int32 target of each search.
      valid: (B,) bool, the batch rows still searched (a row without a target is not).
      no_target: batch rows dropped because they have no target (each gets a skip record).
      no_target_reason: the skip records' reason.
    """
    rows: np.ndarray
    targets: np.ndarray
    valid: np.ndarray
    no_target: np.ndarray
    no_target_reason: str = ""


@dataclasses.dataclass(frozen=True)
class TargetChoice:
    """The inputs a run kind chooses targets from (one data batch)."""
    batch_targets: np.ndarray  # (B,) the data's own targets (CSV), -1 where none
    valid: np.ndarray          # (B,) bool
    class_index: int           # targets.class_index (-1: not given)
    num_outputs: int           # the classifier's outputs
    predict: Callable[[], np.ndarray]  # the classifier's (B,) predicted classes, on demand


@dataclasses.dataclass(frozen=True)
class RunTargetKind:
    """One ``targets.kind``.

    Attributes:
      search_kind: the search's target kind (and the records' ``target_kind``).
      takes_class: ``targets.class_index`` / ``class_name`` mean something for this kind.
      needs_class: ... and must be given.
      searches_per_image: ``num_outputs -> searches`` of one image.
      choose: :class:`TargetChoice` -> :class:`BatchTargets`.
    """
    search_kind: str
    choose: Callable[[TargetChoice], BatchTargets]
    takes_class: bool = False
    needs_class: bool = False
    searches_per_image: Callable[[int], int] = lambda num_outputs: 1


def _every_row(c: TargetChoice, value: int) -> BatchTargets:
    b = c.valid.shape[0]
    return BatchTargets(np.arange(b), np.full(b, value, np.int32), c.valid,
                        np.zeros(0, np.int64))


def _all_others(c: TargetChoice) -> BatchTargets:
    """One search per class other than the prediction (:func:`sce_jax.explainer.all_other_classes`)."""
    rows, targets = all_other_classes(c.predict(), c.num_outputs)
    return BatchTargets(rows, targets, c.valid, np.zeros(0, np.int64))


def _from_data(c: TargetChoice) -> BatchTargets:
    targets = np.asarray(c.batch_targets, np.int32)
    missing = c.valid & (targets < 0)
    valid = c.valid & ~missing
    targets = np.where(valid, targets, 0).astype(np.int32)  # padding: any class, never searched
    return BatchTargets(np.arange(targets.shape[0]), targets, valid, np.flatnonzero(missing),
                        "the CSV gives no target for this image")


RUN_TARGET_KINDS: Registry[RunTargetKind] = Registry("targets.kind", {
    "other": RunTargetKind("other", lambda c: _every_row(c, -1)),
    "class": RunTargetKind("class", lambda c: _every_row(c, c.class_index),
                           takes_class=True, needs_class=True),
    "flip": RunTargetKind("flip", lambda c: _every_row(c, max(c.class_index, 0)),
                          takes_class=True),
    "all_others": RunTargetKind("class", _all_others,
                                searches_per_image=lambda num_outputs: num_outputs - 1),
    "csv": RunTargetKind("class", _from_data),
})
