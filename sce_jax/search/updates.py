"""Per-example gradient processing and the optax optimizer.

Every operation acts on each example alone; nothing couples the examples of a batch:

normalising   ``g_b <- g_b / ||g_b||_2``  (a unit-length step direction; optional)
clipping      ``g_b <- g_b * min(1, c / ||g_b||_2)``
sparsifying   ``g_b <- g_b * [|g_b| >= s * max|g_b|]``
masking       ``g_b <- g_b * m_b`` (latent mask: locked and excluded cells get no gradient)

The optimizer is applied to the whole batch at once; SGD with momentum and Adam are
element-wise, and Adam's step count is the same for every example that is still running, so
this equals one optimizer per example.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from sce_jax.search.config import SearchSettings

NORM_FLOOR = 1e-12  # the clipped norm's floor: a zero gradient stays zero, never 0 / 0


def _norms(grad):
    flat = grad.reshape(grad.shape[0], -1)
    norm = jnp.sqrt(jnp.sum(flat * flat, axis=-1))
    return jnp.maximum(norm, NORM_FLOOR).reshape((-1,) + (1,) * (grad.ndim - 1))


def normalise_per_example(grad, enabled: bool):
    """Each example's gradient scaled to unit L2 norm (a zero gradient stays zero)."""
    return grad / _norms(grad) if enabled else grad


def clip_per_example(grad, max_norm: float):
    if max_norm <= 0:
        return grad
    return grad * jnp.minimum(1.0, max_norm / _norms(grad))


def sparsify_per_example(grad, fraction: float):
    if fraction <= 0:
        return grad
    peak = jnp.max(jnp.abs(grad.reshape(grad.shape[0], -1)), axis=-1)
    peak = peak.reshape((-1,) + (1,) * (grad.ndim - 1))
    return jnp.where(jnp.abs(grad) >= fraction * peak, grad, 0.0)


def process_gradient(grad, latent_mask, settings: SearchSettings):
    """Mask, normalise, clip and sparsify a batch of latent gradients, each example on its own."""
    grad = grad * latent_mask
    grad = normalise_per_example(grad, settings.normalize_gradient)
    grad = clip_per_example(grad, settings.clip_norm)
    return sparsify_per_example(grad, settings.sparsify)


def make_optimizer(settings: SearchSettings) -> optax.GradientTransformation:
    if settings.optimizer == "sgd":
        return optax.sgd(settings.learning_rate, momentum=settings.momentum or None)
    if settings.optimizer == "adam":
        return optax.adam(settings.learning_rate)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")
