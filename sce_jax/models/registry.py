"""The model classes that checkpoints may name, by class name (explicit, fails early)."""

from __future__ import annotations


def model_classes() -> dict[str, type]:
    from sce_jax.models.autoencoder_kl import AutoencoderKL
    from sce_jax.models.autoencoder_tiny import AutoencoderTiny
    from sce_jax.models.densenet import DenseNet
    from sce_jax.models.inception import InceptionV3
    from sce_jax.models.latent_flow import LatentFlowTransformer
    from sce_jax.models.resnet import ResNet
    from sce_jax.models.small_cnn import SmallCNN
    from sce_jax.models.vit import VisionTransformer

    classes = (AutoencoderKL, AutoencoderTiny, ResNet, DenseNet, SmallCNN, InceptionV3,
               LatentFlowTransformer, VisionTransformer)
    return {cls.__name__: cls for cls in classes}


def model_class(name: str, *, where: str = "") -> type:
    classes = model_classes()
    if name not in classes:
        raise ValueError(f"{where}: unknown model class {name!r}; known: {sorted(classes)}")
    return classes[name]
