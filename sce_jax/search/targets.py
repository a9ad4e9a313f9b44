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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

KINDS = ("class", "other", "flip")


def _take(logits, target):
    return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]


def target_loss(logits, target, value, *, kind: str, temperature: float, class_loss: str = "ce"):
    """Per-example classification loss (B,) that the search minimises."""
    scaled = logits / temperature
    if kind == "class":
        if class_loss == "logit":
            return -_take(logits, target)
        return optax.softmax_cross_entropy_with_integer_labels(scaled, target)
    if kind == "other":
        others = jnp.where(jax.nn.one_hot(target, logits.shape[-1], dtype=bool), -jnp.inf, scaled)
        return jax.nn.logsumexp(scaled, axis=-1) - jax.nn.logsumexp(others, axis=-1)
    if kind == "flip":
        return optax.sigmoid_binary_cross_entropy(_take(scaled, target), value)
    raise ValueError(f"unknown target kind {kind!r}; one of {KINDS}")


def target_probability(logits, target, value, *, kind: str):
    """Probability (B,) of the target decision at temperature 1."""
    if kind == "class":
        return _take(jax.nn.softmax(logits, axis=-1), target)
    if kind == "other":
        return 1.0 - _take(jax.nn.softmax(logits, axis=-1), target)
    if kind == "flip":
        p = jax.nn.sigmoid(_take(logits, target))
        return jnp.where(value > 0.5, p, 1.0 - p)
    raise ValueError(f"unknown target kind {kind!r}; one of {KINDS}")


def target_reached(logits, target, value, *, kind: str, goal_probability: float = 0.0):
    """Whether the classifier gives the target decision (B,) bool."""
    p = target_probability(logits, target, value, kind=kind)
    if kind == "class":
        decided = jnp.argmax(logits, axis=-1) == target
    elif kind == "other":
        decided = jnp.argmax(logits, axis=-1) != target
    else:
        decided = p > 0.5
    return decided & (p >= goal_probability)
