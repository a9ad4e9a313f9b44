"""Builds the :class:`Generator`, :class:`Classifier` and :class:`Prior` a run config names."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from sce_jax.classifier import Classifier, Preprocessing
from sce_jax.generator import Generator
from sce_jax.prior import Prior
from sce_jax.weights.checkpoint import load_model

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_generator(config: ml_collections.ConfigDict) -> Generator:
    """From ``config.generator``: an orbax checkpoint, or a local diffusers folder / repo id."""
    from sce_jax.models.autoencoder_kl import AutoencoderKL
    from sce_jax.models.autoencoder_tiny import AutoencoderTiny

    dtype = DTYPES[config.dtype]
    if config.checkpoint:
        model = load_model(config.checkpoint, expect=(AutoencoderKL, AutoencoderTiny), dtype=dtype)
    else:
        cls = AutoencoderKL if config.kind == "kl" else AutoencoderTiny
        model = cls.from_pretrained(config.diffusers, dtype=dtype)
    return Generator.from_autoencoder(model)


def load_classifier(config: ml_collections.ConfigDict) -> Classifier:
    """From ``config.classifier``: an orbax checkpoint of a ported network + preprocessing."""
    from sce_jax.models.densenet import DenseNet
    from sce_jax.models.resnet import ResNet
    from sce_jax.models.small_cnn import SmallCNN
    from sce_jax.models.vit import VisionTransformer

    model = load_model(config.checkpoint, expect=(ResNet, DenseNet, SmallCNN, VisionTransformer))
    preprocessing = Preprocessing(
        input_size=tuple(config.input_size) or None,
        channels=int(config.channels) or None,
        mean=tuple(float(v) for v in config.mean),
        std=tuple(float(v) for v in config.std))
    names = tuple(config.class_names) or None
    return Classifier.from_nnx(model, preprocessing=preprocessing, head=config.head,
                               class_names=names)


def load_prior(config: ml_collections.ConfigDict) -> Prior | None:
    """From ``config.prior``: an orbax checkpoint of a velocity model, or None when unset."""
    from sce_jax.models.latent_flow import LatentFlowTransformer

    if not config.checkpoint:
        return None
    model = load_model(config.checkpoint, expect=(LatentFlowTransformer,))
    return Prior.from_nnx(model)
