"""DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017) in Flax
NNX, layer for layer as torchvision's ``densenet121/161/169/201`` (inference only).

The module tree is torchvision's: ``features.conv0``, ``features.norm0``,
``features.denseblock1.denselayer1.norm1/conv1/norm2/conv2``, ``features.transition1.norm/conv``,
..., ``features.norm5`` and ``classifier``, so :mod:`sce_jax.weights.torch_layout` maps a
torchvision state dict onto a port strictly. Images are NHWC and already normalised.

The computation, as torchvision's:

- stem: 7x7 convolution (stride 2, padding 3, no bias) -> batch norm -> ReLU -> 3x3 max pool
  (stride 2, padding 1);
- dense layer on the concatenation ``h`` of all earlier outputs of its block:
  ``conv2(relu(norm2(conv1(relu(norm1(h))))))``, ``bn_size * growth_rate`` channels after the
  1x1 ``conv1``, ``growth_rate`` new channels after the 3x3 ``conv2``; the block's output is the
  concatenation of its input and every new feature map;
- transition between blocks: ``avg_pool_2x2(conv(relu(norm(x))))``, halving the channels;
- ``norm5``, then (in the model's forward, not in torchvision's ``features`` Sequential) ReLU,
  global average pool and ``classifier``.

One naming difference: torchvision's ``features`` is the convolutional trunk returning a feature
map. Here ``features`` is the same trunk (same sub-modules, same state-dict names), but calling
it returns the *pooled* penultimate features ``mean_hw(relu(norm5(...)))`` (N, D), the
``features(x)`` every classifier in :mod:`sce_jax.models` exposes;
``features.feature_map(x)`` is torchvision's ``features(x)``.

Batch normalisation always uses its running statistics (there is no training mode) and dropout
is not part of inference, so the examples of a batch never influence each other.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.conv import conv_general_dilated
from sce_jax.models.resnet import InferenceBatchNorm, global_average_pool, max_pool_padded
from sce_jax.weights.model_config import ConfigError

Array = jax.Array

# torchvision constructor name -> (growth_rate, block_config, num_init_features)
TORCHVISION_DENSENETS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}

# Checkpoints written by old torchvision versions (including its own densenet download files)
# name the dense-layer tensors ``norm.1``/``conv.2`` instead of ``norm1``/``conv2``.
_LEGACY_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var"
    r"|num_batches_tracked))$")


def densenet_legacy_key(key: str) -> str:
    """Maps an old torchvision dense-layer key to the current name, other keys to themselves:
    ``features.denseblock1.denselayer1.norm.1.weight -> features.denseblock1.denselayer1.norm1.weight``.
    """
    match = _LEGACY_DENSE_LAYER_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


@dataclasses.dataclass(frozen=True)
class DenseNetConfig:
    """The architecture of a DenseNet-BC, with torchvision's constructor argument names.

    Attributes:
      growth_rate: channels each dense layer adds (``k`` in the paper).
      block_config: dense layers per block; block ``i`` is ``features.denseblock{i+1}``.
      num_init_features: channels of the stem convolution.
      bn_size: the 1x1 bottleneck has ``bn_size * growth_rate`` channels.
      num_classes: outputs of the ``classifier`` head.
      in_channels: channels of the input image (3 for RGB, 1 for grey).
    """

    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self):
        if not self.block_config or any(int(n) < 1 for n in self.block_config):
            raise ConfigError(f"DenseNetConfig.block_config must be one or more positive counts, "
                              f"got {self.block_config}")
        for name in ("growth_rate", "num_init_features", "bn_size", "num_classes", "in_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DenseNetConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        """Channels after the last block (1024 for DenseNet-121): every block adds
        ``layers * growth_rate`` channels, every transition halves (floor) the count."""
        channels = self.num_init_features
        for i, layers in enumerate(self.block_config):
            channels += layers * self.growth_rate
            if i != len(self.block_config) - 1:
                channels //= 2
        return channels


def densenet_config(arch: str, *, num_classes: int = 1000, in_channels: int = 3) -> DenseNetConfig:
    """The config of a torchvision DenseNet constructor by name (``"densenet121"``, ...)."""
    if arch not in TORCHVISION_DENSENETS:
        raise ConfigError(f"unknown DenseNet architecture {arch!r}; known: {sorted(TORCHVISION_DENSENETS)}")
    growth_rate, block_config, num_init_features = TORCHVISION_DENSENETS[arch]
    return DenseNetConfig(growth_rate=growth_rate, block_config=block_config,
                          num_init_features=num_init_features, num_classes=num_classes,
                          in_channels=in_channels)


def torchvision_densenet_name(config: DenseNetConfig) -> str | None:
    """The torchvision constructor that builds ``config``'s architecture, if there is one."""
    if config.bn_size != 4:
        return None
    for name, (growth_rate, block_config, num_init_features) in TORCHVISION_DENSENETS.items():
        if (config.growth_rate, tuple(config.block_config), config.num_init_features) == \
                (growth_rate, block_config, num_init_features):
            return name
    return None


def avg_pool_2x2(x: Array) -> Array:
    """PyTorch's ``AvgPool2d(2, 2)`` on NHWC: means of 2x2 cells; an odd last row/column is
    dropped (floor)."""
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1),
                                  (1, 2, 2, 1), "VALID")
    return total / 4


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int, **kw) -> nnx.Conv:
    return nnx.Conv(in_channels, out_channels, (kernel, kernel), strides=stride,
                    padding=((padding, padding), (padding, padding)), use_bias=False,
                    conv_general_dilated=conv_general_dilated, **kw)


class DenseLayer(nnx.Module):
    """``conv2(relu(norm2(conv1(relu(norm1(x))))))``: ``growth_rate`` new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, **kw):
        inner = bn_size * growth_rate
        self.norm1 = InferenceBatchNorm(in_channels, **kw)
        self.conv1 = _conv(in_channels, inner, 1, 1, 0, **kw)
        self.norm2 = InferenceBatchNorm(inner, **kw)
        self.conv2 = _conv(inner, growth_rate, 3, 1, 1, **kw)

    def __call__(self, x: Array) -> Array:
        x = self.conv1(jax.nn.relu(self.norm1(x)))
        return self.conv2(jax.nn.relu(self.norm2(x)))


class DenseBlock(nnx.Module):
    """``denselayer1..N``; each sees the concatenation of the block input and all earlier
    new features, and the block returns the concatenation of all of them (channels last)."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, **kw):
        self.num_layers = num_layers
        for i in range(num_layers):
            setattr(self, f"denselayer{i + 1}",
                    DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, **kw))

    def __call__(self, x: Array) -> Array:
        features = [x]
        for i in range(self.num_layers):
            layer = getattr(self, f"denselayer{i + 1}")
            features.append(layer(jnp.concatenate(features, axis=-1)))
        return jnp.concatenate(features, axis=-1)


class Transition(nnx.Module):
    """``avg_pool_2x2(conv(relu(norm(x))))`` with a 1x1 ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, **kw):
        self.norm = InferenceBatchNorm(in_channels, **kw)
        self.conv = _conv(in_channels, out_channels, 1, 1, 0, **kw)

    def __call__(self, x: Array) -> Array:
        return avg_pool_2x2(self.conv(jax.nn.relu(self.norm(x))))


class DenseNetFeatures(nnx.Module):
    """torchvision's ``features`` trunk (conv0 ... norm5). Calling it gives the pooled features
    ``mean_hw(relu(feature_map(x)))`` (N, D); :meth:`feature_map` gives the trunk's output."""

    def __init__(self, config: DenseNetConfig, **kw):
        self.conv0 = _conv(config.in_channels, config.num_init_features, 7, 2, 3, **kw)
        self.norm0 = InferenceBatchNorm(config.num_init_features, **kw)
        channels = config.num_init_features
        self.num_blocks = len(config.block_config)
        for i, num_layers in enumerate(config.block_config):
            setattr(self, f"denseblock{i + 1}",
                    DenseBlock(num_layers, channels, config.growth_rate, config.bn_size, **kw))
            channels += num_layers * config.growth_rate
            if i != self.num_blocks - 1:
                setattr(self, f"transition{i + 1}", Transition(channels, channels // 2, **kw))
                channels //= 2
        self.norm5 = InferenceBatchNorm(channels, **kw)

    def feature_map(self, x: Array) -> Array:
        """torchvision's ``model.features(x)``: the output of ``norm5`` (no final ReLU),
        (N, H/32, W/32, D)."""
        x = max_pool_padded(jax.nn.relu(self.norm0(self.conv0(x))), 3, 2, 1)
        for i in range(self.num_blocks):
            x = getattr(self, f"denseblock{i + 1}")(x)
            if i != self.num_blocks - 1:
                x = getattr(self, f"transition{i + 1}")(x)
        return self.norm5(x)

    def __call__(self, x: Array) -> Array:
        """Pooled penultimate features (N, D): ``mean_hw(relu(feature_map(x)))``."""
        return global_average_pool(jax.nn.relu(self.feature_map(x)))


class DenseNet(nnx.Module):
    """A torchvision-layout DenseNet on NHWC images.

    ``features(x)`` is the pooled penultimate representation (N, feature_dim) (a sub-module,
    see the module docstring); ``__call__(x) = classifier(features(x))``, the logits.
    """

    config_class = DenseNetConfig

    def __init__(self, config: DenseNetConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.features = DenseNetFeatures(config, **kw)
        self.classifier = nnx.Linear(config.feature_dim, config.num_classes, **kw)

    @property
    def feature_dim(self) -> int:
        """Width of ``features(x)`` (1024 for DenseNet-121)."""
        return self.config.feature_dim

    def __call__(self, x: Array) -> Array:
        """Logits (N, num_classes) of NHWC images ``x``."""
        return self.classifier(self.features(x))

    def replace_head(self, num_classes: int, *, rngs: nnx.Rngs) -> "DenseNet":
        """Swaps ``classifier`` for a freshly initialised Linear(feature_dim, num_classes), in
        place (e.g. an attribute head on DenseNet features, as in STEEX); ``config.num_classes``
        follows. Returns the model."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.classifier = nnx.Linear(self.feature_dim, num_classes, rngs=rngs,
                                     dtype=self.classifier.dtype,
                                     param_dtype=self.classifier.param_dtype)
        return self


def densenet121(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
                dtype=jnp.float32, param_dtype=jnp.float32) -> DenseNet:
    """torchvision's ``densenet121`` layout (growth 32, blocks (6, 12, 24, 16), 64 stem
    channels), randomly initialised; fill it with
    sce_jax.models.torchvision_import.load_torchvision_classifier."""
    config = densenet_config("densenet121", num_classes=num_classes, in_channels=in_channels)
    return DenseNet(config, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype,
                    param_dtype=param_dtype)
