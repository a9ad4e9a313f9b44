"""Smoothed gradients of the search objective.

With ``g(x) = cls(f(x) / T, t)`` the classification loss of an image and ``x_cf(z)`` the output
image, the smoothed objective is ``E_eps[g(x_cf(z) + sigma eps)]`` (pixel space) or
``E_eps[g(x_cf(z + sigma eps))]`` (latent space), ``eps ~ N(0, I)``, estimated with ``N``
samples drawn under ``jax.vmap``:

pixel space (one decoder forward and one VJP, ``N`` classifier passes)::

    grad_z = J_{x_cf}(z)^T  (1/N) sum_n grad_x g(x_cf(z) + sigma eps_n)

latent space (``N`` decoder passes)::

    grad_z = (1/N) sum_n grad_z g(x_cf(z + sigma eps_n))

The proximity terms are added exactly (unsmoothed). With ``N = 1, sigma = 0`` both equal
``jax.grad`` of the plain objective. Samples are evaluated ``chunk_size`` at a time inside a
``lax.fori_loop``, so memory grows with the chunk, not with ``N``.

Noise for example ``b`` at its step ``s_b``, sample ``n`` is drawn from
``fold_in(fold_in(key_b, s_b), n)``: it does not depend on the batch or slot it is in.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sce_jax.search import objectives, targets
from sce_jax.search.config import SearchSettings


class StepInputs(NamedTuple):
    """What one gradient evaluation needs besides the current latent (all batched on axis 0)."""

    x: jax.Array          # (B, H, W, C) original images
    z0: jax.Array         # (B, h, w, c) starting latents
    decoded0: jax.Array   # (B, H, W, C) D(z0)
    mask: jax.Array       # (B, H, W, 1) current soft pixel mask
    target: jax.Array     # (B,) int32
    value: jax.Array      # (B,) float32, desired decision of a flipped attribute
    keys: jax.Array       # (B,) typed PRNG keys, one per example


class StepOutputs(NamedTuple):
    grad: jax.Array       # (B, h, w, c) gradient of the (smoothed) objective
    x_cf: jax.Array       # (B, H, W, C) output image at z
    decoded: jax.Array    # (B, H, W, C) D(z)
    logits: jax.Array     # (B, K) classifier on the judged x_cf (no noise; 8-bit rounded when judge_8bit)
    loss: jax.Array       # (B,) objective at z (no noise)


def _noise(keys, step, index, shape):
    """Per-example standard normal noise of ``shape`` (without batch axis); ``step`` is one
    step for the batch or each example's own (B,)."""
    def one(key, example_step):
        return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, example_step), index), shape)
    return jax.vmap(one)(keys, jnp.broadcast_to(jnp.asarray(step), keys.shape))


def _mean_over_samples(sample_fn: Callable[[jax.Array], jax.Array], num_samples: int,
                       chunk_size: int, like: jax.Array) -> jax.Array:
    """``(1/N) sum_n sample_fn(n)``, evaluating ``chunk`` samples at once under vmap."""
    chunk = num_samples if chunk_size <= 0 else min(chunk_size, num_samples)
    num_chunks = math.ceil(num_samples / chunk)

    def chunk_sum(c):
        idx = c * chunk + jnp.arange(chunk)
        weights = (idx < num_samples).astype(like.dtype)
        grads = jax.vmap(sample_fn)(jnp.minimum(idx, num_samples - 1))
        return jnp.tensordot(weights, grads, axes=1)

    if num_chunks == 1:
        total = chunk_sum(0)
    else:
        total = jax.lax.fori_loop(0, num_chunks, lambda c, acc: acc + chunk_sum(c),
                                  jnp.zeros_like(like))
    return total / num_samples


def objective_gradient(z, step, inp: StepInputs, *, decode: Callable, logits_fn: Callable,
                       settings: SearchSettings, kind: str) -> StepOutputs:
    """The (smoothed) gradient of the objective w.r.t. ``z`` and what the step reports."""
    space = settings.smoothing.space
    num_samples = settings.smoothing.num_samples if space != "none" else 1
    sigma = settings.smoothing.sigma if space != "none" else 0.0

    def forward(latent):
        decoded = decode(latent)
        x_cf = objectives.compose_output(inp.x, decoded, inp.decoded0, inp.mask,
                                         mode=settings.output_mode)
        return x_cf, decoded

    def class_loss_sum(images):
        return jnp.sum(targets.target_loss(logits_fn(images), inp.target, inp.value, kind=kind,
                                           temperature=settings.temperature,
                                           class_loss=settings.class_loss))

    def pixel_term_sum(x_cf):
        return jnp.sum(objectives.pixel_proximity(x_cf, inp.x, pixel_l1=settings.pixel_l1))

    def latent_term_sum(latent):
        return jnp.sum(objectives.latent_proximity(latent, inp.z0, l1=settings.l1, l2=settings.l2))

    if space in ("pixel", "none"):
        x_cf, pullback, decoded = jax.vjp(forward, z, has_aux=True)

        def sample_grad(n):
            eps = _noise(inp.keys, step, n, x_cf.shape[1:])
            return jax.grad(class_loss_sum)(x_cf + sigma * eps)

        g_x = _mean_over_samples(sample_grad, num_samples, settings.smoothing.chunk_size, x_cf)
        if settings.pixel_l1:
            g_x = g_x + jax.grad(pixel_term_sum)(x_cf)
        (grad,) = pullback(g_x)
    elif space == "latent":
        def sample_grad(n):
            eps = _noise(inp.keys, step, n, z.shape[1:])
            return jax.grad(lambda lat: class_loss_sum(forward(lat)[0]))(z + sigma * eps)

        grad = _mean_over_samples(sample_grad, num_samples, settings.smoothing.chunk_size, z)
        if settings.pixel_l1:
            x_cf, pullback, decoded = jax.vjp(forward, z, has_aux=True)
            grad = grad + pullback(jax.grad(pixel_term_sum)(x_cf))[0]
        else:
            x_cf, decoded = forward(z)
    else:
        raise ValueError(f"unknown smoothing space {space!r}")
    if settings.l1 or settings.l2:
        grad = grad + jax.grad(latent_term_sum)(z)
    clean_logits = logits_fn(objectives.judged_image(x_cf, judge_8bit=settings.judge_8bit))
    loss = (targets.target_loss(clean_logits, inp.target, inp.value, kind=kind,
                                temperature=settings.temperature, class_loss=settings.class_loss)
            + objectives.latent_proximity(z, inp.z0, l1=settings.l1, l2=settings.l2)
            + objectives.pixel_proximity(x_cf, inp.x, pixel_l1=settings.pixel_l1))
    return StepOutputs(grad, x_cf, decoded, clean_logits, loss)
