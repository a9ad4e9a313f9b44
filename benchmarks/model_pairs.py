"""The same generator and classifier, with the same weights, in sce_jax and in PyTorch.

``sd_pair``: a Stable-Diffusion-architecture AutoencoderKL and a ResNet-50 (random weights,
torch's initialisers, copied into the ports); ``demo_pair``: the shipped Fashion-MNIST demo
models (or the same architectures with random weights). The inputs are the demo's test
images when there are enough, else :func:`smooth_images`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import settings as bench_settings
from benchmarks.torch_setup import torch_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(ROOT, "sce_jax", "assets", "fashion_mnist")


@dataclasses.dataclass
class ModelPair:
    """The same generator and classifier (same weights) in both frameworks, and the inputs."""

    jax_generator: Any
    jax_classifier: Any
    torch_generator: Any
    torch_classifier: Any
    images: np.ndarray         # (B, H, W, C) in [0, 1]
    targets: np.ndarray        # (B,)
    kind: str
    autoencoder_state: dict    # PyTorch-layout weights, to rebuild the port in bfloat16
    autoencoder_config: Any


def smooth_images(batch: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Random images with structure at several scales, (B, size, size, C) in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, (batch, 4, 4, channels)).astype(np.float32)
    fine = rng.uniform(-0.1, 0.1, (batch, size, size, channels)).astype(np.float32)
    up = np.asarray(jax.image.resize(coarse, (batch, size, size, channels), "linear"))
    return np.clip(up + fine, 0.0, 1.0)


def port_autoencoder(state: dict, config, dtype=jnp.float32):
    """sce_jax's AutoencoderKL of ``config`` computing in ``dtype``, holding PyTorch-layout
    weights ``state``."""
    from flax import nnx

    from sce_jax.models.autoencoder_kl import AutoencoderKL
    from sce_jax.weights.strict import load_torch_state_dict_into
    port = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0), dtype=dtype))
    return load_torch_state_dict_into(port, state, what="the benchmark autoencoder")


def _numpy_state(module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def sd_pair(setting) -> ModelPair:
    """SD-architecture VAE + ResNet-50, random weights (torch's initialisers), both frameworks."""
    import diffusers
    import torch
    import torchvision
    from flax import nnx

    from benchmarks.torch_search import TorchClassifier, TorchGenerator
    from sce_jax import Classifier, Generator
    from sce_jax.classifier import IMAGENET
    from sce_jax.models.autoencoder_kl import AutoencoderKLConfig
    from sce_jax.models.resnet import resnet50
    from sce_jax.weights.strict import load_torch_state_dict_into

    device = torch_device()
    torch.manual_seed(0)
    ae_config = dict(bench_settings.SD_VAE, sample_size=setting.image_size)
    vae = diffusers.AutoencoderKL(**ae_config).eval()
    net = torchvision.models.resnet50(weights=None, num_classes=1000).eval()
    vae_state, net_state = _numpy_state(vae), _numpy_state(net)
    config = AutoencoderKLConfig(**ae_config)
    port = port_autoencoder(vae_state, config)
    jax_net = nnx.eval_shape(lambda: resnet50(num_classes=1000))
    load_torch_state_dict_into(jax_net, net_state, what="ResNet-50")
    images = smooth_images(setting.batch, setting.image_size, 3)
    return ModelPair(
        Generator.from_autoencoder(port), Classifier.from_nnx(jax_net, preprocessing=IMAGENET),
        TorchGenerator.from_diffusers(vae.to(device)),
        TorchClassifier.from_preprocessing(net.to(device), IMAGENET),
        images, np.full((setting.batch,), 1, np.int32), "class", vae_state, config)


def demo_pair(setting) -> ModelPair:
    """The shipped demo models (or the same architectures with random weights)."""
    import diffusers
    import torch
    from flax import nnx

    from benchmarks.torch_search import TorchClassifier, TorchGenerator, TorchSmallCNN
    from sce_jax import Classifier, Generator, Preprocessing
    from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
    from sce_jax.models.checkpoint import load_model
    from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
    from sce_jax.weights.torch_layout import nnx_to_torch_state_dict

    device = torch_device()
    if setting.models == "demo":
        port = load_model(os.path.join(DEMO_DIR, "autoencoder"), expect=AutoencoderKL)
        classifier = load_model(os.path.join(DEMO_DIR, "classifier"), expect=SmallCNN)
        vae = diffusers.AutoencoderKL.from_pretrained(
            os.path.join(DEMO_DIR, "autoencoder_diffusers"))
        subset = os.path.join(DEMO_DIR, "test_subset.npz")
        images = (np.load(subset)["images"] if os.path.exists(subset) else None)
    else:
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKL(**bench_settings.DEMO_VAE)
        port = port_autoencoder(_numpy_state(vae), AutoencoderKLConfig(**bench_settings.DEMO_VAE))
        classifier = SmallCNN(SmallCNNConfig(in_channels=1,
                                             num_classes=bench_settings.DEMO_NUM_CLASSES,
                                             widths=bench_settings.DEMO_CLASSIFIER_WIDTHS),
                              rngs=nnx.Rngs(0))
        images = None
    if images is None or len(images) < setting.batch:
        images = smooth_images(setting.batch, setting.image_size, 1)
    images = np.asarray(images[:setting.batch], np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.max() > 1.0:
        images = images / 255.0
    cfg = classifier.config
    net = TorchSmallCNN(cfg.in_channels, cfg.num_classes, cfg.widths, cfg.activation)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         nnx_to_torch_state_dict(classifier).items()})
    plain = Preprocessing()
    return ModelPair(
        Generator.from_autoencoder(port), Classifier.from_nnx(classifier, preprocessing=plain),
        TorchGenerator.from_diffusers(vae.eval().to(device)),
        TorchClassifier.from_preprocessing(net.to(device), plain),
        images, np.full((setting.batch,), -1, np.int32), "other", _numpy_state(vae), port.config)


def model_pair(setting) -> ModelPair:
    """The pair a setting's ``models`` names."""
    return sd_pair(setting) if setting.models == "sd" else demo_pair(setting)


def demo_missing() -> str | None:
    """Why the shipped demo cannot run, or None."""
    needed = ("autoencoder", "classifier", "autoencoder_diffusers")
    missing = [n for n in needed if not os.path.exists(os.path.join(DEMO_DIR, n))]
    if missing:
        return (f"demo assets missing in {DEMO_DIR} ({', '.join(missing)}); make them with "
                "`python scripts/train_demo_models.py --demo=fashion_mnist`, or run the setting "
                "demo_random (same architectures, random weights)")
    return None
