"""The model kinds a run config may name, one registry each (:class:`sce_jax.registry.Registry`).

``GENERATOR_KINDS`` (``generator.kind``)
    autoencoder ports a diffusers folder is read into. An entry is an NNX module class in
    diffusers' conventions (images in [-1, 1], raw latents; ``encode`` returns a posterior with
    ``mode()`` or the latents, ``decode`` the images) with ``from_pretrained(path, dtype=)`` and
    a ``config`` carrying ``latent_channels`` and the latent scaling
    (:meth:`sce_jax.generator.Generator.from_autoencoder` wraps it). An orbax checkpoint of any
    of these classes loads as a generator.
``CLASSIFIER_NETWORKS``
    the ported networks an orbax classifier checkpoint may hold.
``PRIOR_NETWORKS``
    the velocity models an orbax prior checkpoint may hold.
``DIFFUSERS_PRIORS`` (``prior.kind``)
    ``(diffusers folder / pipeline folder / cached repo id, compute dtype) -> Prior``.
``OTHER_MODELS``
    networks a checkpoint may hold that a run does not load (the realism metric's Inception).

:func:`model_classes` (what a checkpoint's recorded class may be, by class name; explicit,
fails early) is the union of these, so a class registered here is loadable from a checkpoint as well.
"""

from __future__ import annotations

from sce_jax.registry import Registry

GENERATOR_KINDS = Registry("generator.kind", {
    "kl": "sce_jax.models.autoencoder_kl:AutoencoderKL",        # diffusers AutoencoderKL
    "tiny": "sce_jax.models.autoencoder_tiny:AutoencoderTiny",  # diffusers AutoencoderTiny (TAESD)
})

CLASSIFIER_NETWORKS = Registry("classifier network", {
    "ResNet": "sce_jax.models.resnet:ResNet",
    "DenseNet": "sce_jax.models.densenet:DenseNet",
    "SmallCNN": "sce_jax.models.small_cnn:SmallCNN",
    "VisionTransformer": "sce_jax.models.vit:VisionTransformer",
})

PRIOR_NETWORKS = Registry("prior network", {
    "LatentFlowTransformer": "sce_jax.models.latent_flow:LatentFlowTransformer",
})

DIFFUSERS_PRIORS = Registry("prior.kind", {
    "sd3": "sce_jax.priors.sd3:from_diffusers",  # SD3 / SD3.5 MMDiT
    "flux": "sce_jax.priors.flux:from_diffusers",  # FLUX.1 dev / schnell
})

OTHER_MODELS = Registry("model", {
    "InceptionV3": "sce_jax.models.inception:InceptionV3",
})

# What the run config's dtype keys (generator.dtype, prior.dtype) may name.
DTYPE_NAMES = ("float32", "bfloat16")


def model_classes() -> dict[str, type]:
    """Every registered model class by its class name (the name a checkpoint records)."""
    registries = (GENERATOR_KINDS, CLASSIFIER_NETWORKS, PRIOR_NETWORKS, OTHER_MODELS)
    return {cls.__name__: cls for registry in registries for cls in registry.values()}


def model_class(name: str, *, where: str = "") -> type:
    """The registered class named ``name``; a ValueError naming ``where`` and the known names."""
    classes = model_classes()
    if name not in classes:
        raise ValueError(f"{where}: unknown model class {name!r}; known: {sorted(classes)}")
    return classes[name]
