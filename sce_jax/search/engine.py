"""The whole search for a batch: encode, K diversified attempts, distances. Pure and jittable.

:func:`explain_batch` is the function :class:`sce_jax.Explainer` compiles; it can also be used
directly inside a user's own ``jax.jit`` (only ``params`` and ``batch`` are traced)::

    models = SearchModels(generator.spec, classifier.logits_fn, prior.velocity_fn)  # prior: or None
    params = SearchParams(generator.params, classifier.params, prior.params)
    fn = jax.jit(functools.partial(explain_batch, models=models, settings=settings, kind="class"))
    explanation = fn(params, batch)

Diversification: attempt ``k`` may only change pixels outside the union of the regions
changed by the successful attempts before it::

    allowed_k = region * (1 - locked_k)
    locked_{k+1} = max(locked_k, success_k * changed_k)
    changed_k = dilate_r([d'_k >= tau] * [d_k > 0]),   d_k = sum_c |x_cf_k - x|

(``d'`` is the blurred change map divided by its maximum, as for the edit mask; the square
dilation by ``r = mask.lock_margin`` pixels keeps the next attempt off the border of what
was changed).
A failed attempt locks nothing. ``settings.lock = False`` turns the lock off (the ablation of
diversification): the K attempts then differ only in their noise samples.

An attempt after the first whose change is a spot painted into empty background
(:mod:`sce_jax.search.background_spots`) has found no second reason: it reports
``no_second_reason``, returns the original image, counts as no success and locks nothing
(``reject_background_spots = False`` keeps such spots).

Near the boundary: an original whose decision probability beats the target decision's by less
than ``boundary_margin`` (``p_decision - p_target < margin``) is flagged ``near_boundary``: a
tiny change flips it, and what the search returns for it is not an explanation.

Randomness: example ``b`` with target ``t`` in attempt ``k`` uses
``fold_in(fold_in(fold_in(key(seed), example_id_b), t), k)``, so its result does not depend on
the batch size, the batch composition, the device count or the resume point.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sce_jax.search import background_spots, masks, objectives, prior_step, targets
from sce_jax.search.config import SearchSettings
from sce_jax.search.generator_spec import GeneratorSpec
from sce_jax.search.loop import AttemptResult, run_attempt
from sce_jax.search.smoothing import StepInputs

# fold_in tag of the prior's noise (apart from the smoothing noise, keyed by step numbers).
PRIOR_NOISE_TAG = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class SearchModels:
    """The static functions a search runs (hashable; closed over by ``jax.jit``).

    Attributes:
      generator: the generator's spec (:attr:`sce_jax.Generator.spec`).
      logits_fn: the classifier, ``(params, images) -> logits``.
      velocity_fn: the prior, ``(params, z_t, t, context) -> v`` (:class:`sce_jax.prior.Prior`),
        or None for a search without one.
    """

    generator: GeneratorSpec
    logits_fn: Callable
    velocity_fn: Callable | None = None


class SearchParams(NamedTuple):
    """The parameters of the models (a pytree; ``prior`` is None without a prior)."""

    generator: Any
    classifier: Any
    prior: Any = None


class Batch(NamedTuple):
    """One batch of searches (leading axis B)."""

    images: jax.Array        # (B, H, W, C) float32 in [0, 1]
    targets: jax.Array       # (B,) int32: class, attribute, or the class to leave ("other"; -1: predicted)
    example_ids: jax.Array   # (B,) int32 global ids (randomness is keyed on them)
    regions: jax.Array       # (B, H, W, 1) float32, 1 where the image may change
    valid: jax.Array         # (B,) bool, False for padding
    latents: jax.Array | None = None  # (B, h, w, c) starting latents (generators without encoder)
    context: Any = None      # per-example conditioning pytree (leading axis B) for decoder and prior


class Explanation(NamedTuple):
    """Results; per-attempt fields have leading axes (B, K)."""

    image: jax.Array          # (B, K, H, W, C) counterfactuals
    latent: jax.Array         # (B, K, h, w, c)
    mask: jax.Array           # (B, K, H, W, 1)
    success: jax.Array        # (B, K) bool (float image; re-check on 8-bit when writing)
    no_second_reason: jax.Array  # (B, K) bool: flipped only by a spot in empty background (k > 0)
    nonfinite: jax.Array      # (B, K) bool: failed on NaN/inf
    stalled: jax.Array        # (B, K) bool: ended early without progress (search/loop.py)
    steps: jax.Array          # (B, K) int32 steps used
    prob_after: jax.Array     # (B, K) target probability on the counterfactual
    prediction_after: jax.Array  # (B, K) decision on the counterfactual (argmax class; multiclass)
    latent_l1: jax.Array      # (B, K)
    latent_l2: jax.Array
    pixel_l1: jax.Array
    pixel_l2: jax.Array
    target: jax.Array         # (B,) resolved target
    target_value: jax.Array   # (B,) desired decision of a flipped attribute (flip only)
    prediction: jax.Array     # (B,) decision on the original (argmax class)
    prob_prediction: jax.Array  # (B,) probability of that decision
    prob_before: jax.Array    # (B,) target probability on the original
    near_boundary: jax.Array  # (B,) bool: the original is within boundary_margin of the target
    reconstruction: jax.Array  # (B, H, W, C) D(z0), for diagnostics


class Encoded(NamedTuple):
    """What every attempt of a search needs about its original (leading axis B)."""

    x: jax.Array              # (B, H, W, C) float32 original
    z0: jax.Array             # (B, h, w, c) starting latent
    decoded0: jax.Array       # (B, H, W, C) D(z0)
    logits0: jax.Array        # (B, K) classifier on the original
    target: jax.Array         # (B,) resolved target
    value: jax.Array          # (B,) desired decision of a flipped attribute
    prediction: jax.Array     # (B,)
    prob_prediction: jax.Array  # (B,)
    prob_before: jax.Array    # (B,)
    near_boundary: jax.Array  # (B,) bool
    empty: jax.Array | None   # (B, H, W, 1) the original's empty background (spot rejection), or None


def check_search(models: SearchModels, settings: SearchSettings, kind: str) -> None:
    """Refuses a target kind or a prior setting the models cannot run."""
    targets.KINDS.get(kind)  # an unknown kind raises, naming the known ones
    if settings.prior.active and models.velocity_fn is None:
        raise ValueError("search.prior is enabled but no prior was given: pass a Prior "
                         "(run config: prior.checkpoint) or set search.prior.enabled = False")


def encode(params: SearchParams, batch: Batch, *, models: SearchModels,
           settings: SearchSettings, kind: str) -> Encoded:
    """Encodes the originals, classifies them and resolves the targets (no search yet)."""
    spec = models.generator
    x = batch.images.astype(jnp.float32)
    if batch.latents is not None:
        z0 = batch.latents.astype(jnp.float32)
    elif spec.encode_fn is None:
        raise ValueError(f"{spec.name} has no encoder: pass starting latents in the batch")
    else:
        z0 = spec.encode_fn(params.generator, x)
    decoded0 = spec.decode(params.generator, z0, batch.context)
    logits0 = models.logits_fn(params.classifier, x)
    probs0 = jax.nn.softmax(logits0, axis=-1)
    prediction = jnp.argmax(logits0, axis=-1)
    target = batch.targets.astype(jnp.int32)
    if kind == "other":
        target = jnp.where(target < 0, prediction, target)
    attribute_on = jnp.take_along_axis(logits0, jnp.clip(target, 0)[:, None], axis=-1)[:, 0] > 0
    value = jnp.where(attribute_on, 0.0, 1.0).astype(jnp.float32)
    if kind == "flip":
        prob_prediction = jax.nn.sigmoid(jnp.abs(
            jnp.take_along_axis(logits0, target[:, None], axis=-1)[:, 0]))
    else:
        prob_prediction = jnp.max(probs0, axis=-1)
    prob_before = targets.target_probability(logits0, target, value, kind=kind)
    near_boundary = (prob_prediction - prob_before) < settings.boundary_margin
    # The original's empty background, once for all attempts (spot rejection only).
    empty = background_spots.empty_background(x) if settings.reject_background_spots else None
    return Encoded(x, z0, decoded0, logits0, target, value, prediction, prob_prediction,
                   prob_before, near_boundary, empty)


def attempt_keys(seed: int, example_ids: jax.Array, target: jax.Array, attempt) -> jax.Array:
    """``fold_in(fold_in(fold_in(key(seed), example_id), target), attempt)`` per example;
    ``attempt`` is one index or one per example."""
    root = jax.random.key(seed)
    attempt = jnp.broadcast_to(jnp.asarray(attempt, jnp.uint32), example_ids.shape)
    return jax.vmap(lambda e, t, k: jax.random.fold_in(
        jax.random.fold_in(jax.random.fold_in(root, e), t), k))(
        example_ids.astype(jnp.uint32), target.astype(jnp.uint32), attempt)


def projection(params: SearchParams, keys: jax.Array, latent_shape, context, *,
               models: SearchModels, settings: SearchSettings) -> Callable | None:
    """``z -> P(z)`` with the attempt's prior noise (see search/prior_step.py), or None."""
    if not settings.prior.active:
        return None
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, PRIOR_NOISE_TAG),
                                               latent_shape))(keys)
    velocity = functools.partial(models.velocity_fn, params.prior)
    p = settings.prior
    return lambda z: prior_step.clean_prediction(
        velocity, z, eps, strength=p.strength, steps=p.denoise_steps, shift=p.shift,
        context=context)


def attempt_outcome(res: AttemptResult, enc: Encoded, attempt, locked: jax.Array, *,
                    settings: SearchSettings) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Spot rejection, the lock after an attempt, and its distances (per example).

    ``attempt`` is the attempt's index (one, or one per example); returns the new lock and the
    attempt's fields of :class:`Explanation`.
    """
    x = enc.x
    if settings.reject_background_spots:
        spot = res.success & (jnp.asarray(attempt) > 0) & background_spots.is_background_spot(
            x, res.image, enc.empty)
        res = res._replace(success=res.success & ~spot,
                           image=objectives.tree_select(spot, x, res.image),
                           latent=objectives.tree_select(spot, enc.z0, res.latent),
                           logits=objectives.tree_select(spot, enc.logits0, res.logits),
                           prob_after=jnp.where(spot, enc.prob_before, res.prob_after))
    else:
        spot = jnp.zeros_like(res.success)
    change = masks.change_map(res.image, x)
    significant = masks.threshold_mask(change, blur_sigma=settings.mask.blur_sigma,
                                       threshold=settings.mask.threshold) * (change > 0)
    changed = masks.dilate(significant, settings.mask.lock_margin)
    if settings.lock:
        locked = jnp.maximum(locked, changed * res.success.reshape(-1, 1, 1, 1))
    d = objectives.distances(res.latent, enc.z0, res.image, x)
    out = dict(image=res.image, latent=res.latent, mask=res.mask, success=res.success,
               no_second_reason=spot, nonfinite=res.nonfinite, stalled=res.stalled, steps=res.steps,
               prob_after=res.prob_after, prediction_after=jnp.argmax(res.logits, axis=-1), **d)
    return locked, out


def explanation(enc: Encoded, per_attempt: dict[str, jax.Array]) -> Explanation:
    """An :class:`Explanation` from the encoding and the attempts' fields (axes (B, K))."""
    return Explanation(**per_attempt, target=enc.target, target_value=enc.value,
                       prediction=enc.prediction, prob_prediction=enc.prob_prediction,
                       prob_before=enc.prob_before, near_boundary=enc.near_boundary,
                       reconstruction=enc.decoded0)


def explain_batch(params: SearchParams, batch: Batch, *, models: SearchModels,
                  settings: SearchSettings, kind: str,
                  progress: Callable | None = None) -> Explanation:
    """All K attempts of the search for one batch (see the module docstring)."""
    check_search(models, settings, kind)
    spec = models.generator
    enc = encode(params, batch, models=models, settings=settings, kind=kind)

    def decode(z):
        return spec.decode(params.generator, z, batch.context)

    def logits_of(images):
        return models.logits_fn(params.classifier, images)

    def attempt(locked, k):
        keys = attempt_keys(settings.seed, batch.example_ids, enc.target, k)
        allowed = batch.regions * (1.0 - locked)
        inp = StepInputs(enc.x, enc.z0, enc.decoded0, allowed, enc.target, enc.value, keys)
        project = projection(params, keys, enc.z0.shape[1:], batch.context, models=models,
                             settings=settings)
        res = run_attempt(inp, allowed, batch.valid, decode=decode, logits_fn=logits_of,
                          settings=settings, kind=kind, downsample=spec.downsample,
                          progress=progress, attempt=k, project=project)
        return attempt_outcome(res, enc, k, locked, settings=settings)

    locked0 = jnp.zeros_like(batch.regions)
    _, per_attempt = jax.lax.scan(attempt, locked0, jnp.arange(settings.attempts))
    return explanation(enc, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), per_attempt))
