"""Builds the :class:`Generator`, :class:`Classifier` and :class:`Prior` a run config names."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from sce_jax.classifier import Classifier, Preprocessing
from sce_jax.generator import Generator
from sce_jax.models.checkpoint import load_model
from sce_jax.models.registry import (
    CLASSIFIER_NETWORKS,
    DIFFUSERS_PRIORS,
    DTYPE_NAMES,
    GENERATOR_KINDS,
    PRIOR_NETWORKS,
)
from sce_jax.prior import Prior
from sce_jax.priors.prompt_embeddings import load_prompt_embeddings

DTYPES = {name: getattr(jnp, name) for name in DTYPE_NAMES}


def load_generator(config: ml_collections.ConfigDict) -> Generator:
    """From ``config.generator``: an orbax checkpoint of any generator kind, or a local
    diffusers folder / repo id read as ``generator.kind``
    (:data:`sce_jax.models.registry.GENERATOR_KINDS`)."""
    dtype = DTYPES[config.dtype]
    if config.checkpoint:
        model = load_model(config.checkpoint, expect=tuple(GENERATOR_KINDS.values()), dtype=dtype)
    else:
        model = GENERATOR_KINDS[config.kind].from_pretrained(config.diffusers, dtype=dtype)
    return Generator.from_autoencoder(model)


def load_classifier(config: ml_collections.ConfigDict) -> Classifier:
    """From ``config.classifier``: an orbax checkpoint of a ported network + preprocessing."""
    model = load_model(config.checkpoint, expect=tuple(CLASSIFIER_NETWORKS.values()))
    preprocessing = Preprocessing(
        input_size=tuple(config.input_size) or None,
        channels=int(config.channels) or None,
        mean=tuple(float(v) for v in config.mean),
        std=tuple(float(v) for v in config.std))
    names = tuple(config.class_names) or None
    classifier = Classifier.from_nnx(model, preprocessing=preprocessing, head=config.head)
    if names is not None and len(names) != classifier.num_outputs:
        raise ValueError(f"classifier.class_names lists {len(names)} names but the classifier "
                         f"{config.checkpoint} ({classifier.name}) has {classifier.num_outputs} "
                         "outputs; give one name per output, or none")
    return dataclasses.replace(classifier, class_names=names)


def load_prior(config: ml_collections.ConfigDict) -> Prior | None:
    """From ``config.prior``: an orbax checkpoint of a velocity model, a diffusers transformer
    of architecture ``prior.kind`` (``prior.diffusers``; :data:`sce_jax.models.registry.
    DIFFUSERS_PRIORS`), or None when neither is set."""
    if config.diffusers:
        return DIFFUSERS_PRIORS[config.kind](config.diffusers, DTYPES[config.dtype])
    if not config.checkpoint:
        return None
    model = load_model(config.checkpoint, expect=tuple(PRIOR_NETWORKS.values()))
    return Prior.from_nnx(model)


def load_prior_context(config: ml_collections.ConfigDict, prior: Prior | None) -> Any:
    """The context ``prior`` is called with: ``prior.context``'s prompt embeddings, or None.

    Raises:
      ValueError: for a prior that needs a context when ``prior.context`` is empty, and every
        problem of the file (:class:`~sce_jax.priors.prompt_embeddings.PromptEmbeddingsError`).
    """
    if prior is None:
        return None
    if config.context:
        return load_prompt_embeddings(config.context)
    if prior.needs_context:
        raise ValueError(
            f"prior.context is empty, but the {prior.name} prior needs prompt embeddings: write "
            "them with scripts/encode_prompt.py --pipeline=<pipeline folder> --out=<file>.npz "
            "and set --config.prior.context=<file>.npz")
    return None


def check_prior_inputs(prior: Prior, latent_shape: tuple[int, int, int], context: Any) -> None:
    """Traces one velocity call on shapes only (no compute), so that latents or a context the
    prior cannot take (embeddings of another model's width, a latent its position grid does not
    cover) stop the run before any work, with the model's own message (ValueError)."""
    import jax

    z = jax.ShapeDtypeStruct((1,) + tuple(latent_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    if context is not None:
        context = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape[1:], a.dtype),
                               context)
    jax.eval_shape(prior.velocity_fn, prior.params, z, t, context)
