"""What a target means for each head: its loss, its probability and when it is reached.

All functions take per-example logits ``l`` of shape (B, K), an integer ``target`` (B,) and,
for attribute flips, the desired decision ``value`` (B,) in {0, 1}. ``kind`` is static:

``"class"`` (softmax head, reach class t)
    loss ``CE(l / T, t) = logsumexp(l / T) - l_t / T``  (or ``-l_t`` with ``class_loss="logit"``);
    probability ``softmax(l)_t``; reached when ``argmax l = t`` and ``p >= goal``.
``"other"`` (softmax head, leave class t for any other)
    loss ``-log(1 - softmax(l / T)_t) = logsumexp(l / T) - logsumexp_{j != t}(l_j / T)``;
    probability ``1 - softmax(l)_t``; reached when ``argmax l != t`` and ``p >= goal``.
``"flip"`` (sigmoid head, set attribute t to ``value``)
    loss ``BCE(l_t / T, value)``; probability ``sigmoid(l_t)`` if ``value = 1`` else
    ``1 - sigmoid(l_t)``; reached when ``p > 1/2`` and ``p >= goal``.

:data:`HEADS` says, per classifier head type, which of these kinds a search uses.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from sce_jax.registry import Registry


def _take(logits, target):
    return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class TargetKind:
    """One target kind: what the search minimises and when the target is reached.

    Attributes:
      head: the classifier head the kind is for (``sce_jax.classifier.HEADS``).
      loss: ``(logits, target, value, temperature, class_loss) -> (B,)`` loss.
      probability: ``(logits, target, value) -> (B,)`` probability of the target decision.
      decided: ``(logits, target, value, p) -> (B,) bool``: the classifier gives the target
        decision (before the goal probability is asked for).
    """

    head: str
    loss: Callable
    probability: Callable
    decided: Callable


def _class_loss(logits, target, value, temperature, class_loss):
    if class_loss == "logit":
        return -_take(logits, target)
    return optax.softmax_cross_entropy_with_integer_labels(logits / temperature, target)


def _other_loss(logits, target, value, temperature, class_loss):
    scaled = logits / temperature
    others = jnp.where(jax.nn.one_hot(target, logits.shape[-1], dtype=bool), -jnp.inf, scaled)
    return jax.nn.logsumexp(scaled, axis=-1) - jax.nn.logsumexp(others, axis=-1)


def _flip_loss(logits, target, value, temperature, class_loss):
    return optax.sigmoid_binary_cross_entropy(_take(logits / temperature, target), value)


def _flip_probability(logits, target, value):
    p = jax.nn.sigmoid(_take(logits, target))
    return jnp.where(value > 0.5, p, 1.0 - p)


# The search's target kinds (static arguments of the compiled search).
KINDS: Registry[TargetKind] = Registry("target kind", {
    "class": TargetKind(
        "multiclass", _class_loss,
        lambda logits, target, value: _take(jax.nn.softmax(logits, axis=-1), target),
        lambda logits, target, value, p: jnp.argmax(logits, axis=-1) == target),
    "other": TargetKind(
        "multiclass", _other_loss,
        lambda logits, target, value: 1.0 - _take(jax.nn.softmax(logits, axis=-1), target),
        lambda logits, target, value, p: jnp.argmax(logits, axis=-1) != target),
    "flip": TargetKind(
        "multilabel", _flip_loss, _flip_probability,
        lambda logits, target, value, p: p > 0.5),
})


def target_loss(logits, target, value, *, kind: str, temperature: float, class_loss: str = "ce"):
    """Per-example classification loss (B,) that the search minimises."""
    return KINDS[kind].loss(logits, target, value, temperature, class_loss)


def target_probability(logits, target, value, *, kind: str):
    """Probability (B,) of the target decision at temperature 1."""
    return KINDS[kind].probability(logits, target, value)


def target_reached(logits, target, value, *, kind: str, goal_probability: float = 0.0):
    """Whether the classifier gives the target decision (B,) bool."""
    p = target_probability(logits, target, value, kind=kind)
    return KINDS[kind].decided(logits, target, value, p) & (p >= goal_probability)


# ----------------------------------------------------------------------------- heads


@dataclasses.dataclass(frozen=True)
class Head:
    """What a head type means for targets and labels.

    Attributes:
      output: what one output is, in messages (``"class"`` or ``"attribute"``).
      default_kind: the search's target kind when none is asked for
        (:data:`KINDS`; the API's ``explain(images)``).
      kind_with_targets: ... and when targets are given.
      labels_index_outputs: a dataset's labels are indices of the outputs (checked against
        their number).
    """

    output: str
    default_kind: str
    kind_with_targets: str
    labels_index_outputs: bool


HEADS: Registry[Head] = Registry("classifier.head", {
    "multiclass": Head("class", "other", "class", labels_index_outputs=True),  # softmax
    "multilabel": Head("attribute", "flip", "flip", labels_index_outputs=False),  # sigmoids
})
