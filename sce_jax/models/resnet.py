"""ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) in Flax NNX,
layer for layer as torchvision's ``resnet18/34/50/101/152``, ``resnext*`` and
``wide_resnet*`` (inference only).

Sub-modules carry torchvision's names (``conv1``, ``bn1``, ``layer1.0.conv2``,
``layer2.0.downsample.0``, ``fc``), so :mod:`sce_jax.weights.torch_layout` maps a torchvision
state dict onto a port strictly. Images are NHWC and already normalised.

Semantics that matter for parity with torchvision:

- stem: 7x7 convolution, stride 2, padding 3, no bias -> batch norm -> ReLU -> 3x3 max pool,
  stride 2, padding 1 (the padding never wins the max: it is ``-inf``);
- ``Bottleneck`` is "ResNet v1.5": the stride of a stage's first block sits on the 3x3
  convolution (``conv2``), not on the first 1x1; its inner width is
  ``int(planes * width_per_group / 64) * groups`` and its output ``4 * planes``;
- a block gets a projection shortcut ``downsample = [1x1 conv with the block's stride, batch
  norm]`` when its stride is not 1 or its input width differs from its output width;
- head: global average pool -> ``fc``.

Batch normalisation always uses its running statistics: there is no training mode, so the
examples of a batch never influence each other (a counterfactual search relies on this).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.conv import conv_general_dilated
from sce_jax.weights.model_config import ConfigError

Array = jax.Array
BlockType = Literal["basic", "bottleneck"]
EXPANSION = {"basic": 1, "bottleneck": 4}

# torchvision constructor name -> (block, layers per stage, groups, width_per_group)
TORCHVISION_RESNETS: dict[str, tuple[BlockType, tuple[int, ...], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": ("bottleneck", (3, 4, 23, 3), 64, 4),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
}


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """The architecture of a ResNet.

    Attributes:
      block: ``"basic"`` (two 3x3 convolutions; ResNet-18/34) or ``"bottleneck"``
        (1x1 -> 3x3 -> 1x1, output 4x wider; ResNet-50 and deeper).
      layers: blocks per stage; stage ``i`` is the attribute ``layer{i+1}``.
      num_classes: outputs of the ``fc`` head.
      in_channels: channels of the input image (3 for RGB, 1 for grey).
      widths: ``planes`` of each stage; the stem has ``widths[0]`` channels (torchvision:
        64, 128, 256, 512). Smaller widths give tiny ResNets for tests and demos.
      groups: groups of the bottleneck 3x3 convolution (ResNeXt: 32 or 64).
      width_per_group: bottleneck inner width per group at ``planes = 64`` (Wide ResNet: 128).
    """

    block: BlockType = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 1000
    in_channels: int = 3
    widths: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 1
    width_per_group: int = 64

    def __post_init__(self):
        if self.block not in EXPANSION:
            raise ConfigError(f"ResNetConfig.block must be one of {sorted(EXPANSION)}, got {self.block!r}")
        if not self.layers or any(int(n) < 1 for n in self.layers):
            raise ConfigError(f"ResNetConfig.layers must be one or more positive counts, got {self.layers}")
        if len(self.widths) != len(self.layers):
            raise ConfigError(f"ResNetConfig.widths {self.widths} must have one entry per stage "
                              f"(layers {self.layers})")
        if any(int(w) < 1 for w in self.widths):
            raise ConfigError(f"ResNetConfig.widths must be positive, got {self.widths}")
        if self.num_classes < 1:
            raise ConfigError(f"ResNetConfig.num_classes must be >= 1, got {self.num_classes}")
        if self.in_channels < 1:
            raise ConfigError(f"ResNetConfig.in_channels must be >= 1, got {self.in_channels}")
        if self.groups < 1 or self.width_per_group < 1:
            raise ConfigError(f"ResNetConfig.groups and width_per_group must be >= 1, got "
                              f"{self.groups} and {self.width_per_group}")
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ConfigError("ResNetConfig: basic blocks support only groups=1 and width_per_group=64 "
                              f"(as torchvision), got {self.groups} and {self.width_per_group}")

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features: ``widths[-1] * expansion``."""
        return self.widths[-1] * EXPANSION[self.block]


def resnet_config(arch: str, *, num_classes: int = 1000, in_channels: int = 3) -> ResNetConfig:
    """The config of a torchvision ResNet constructor by name (``"resnet50"``, ...)."""
    if arch not in TORCHVISION_RESNETS:
        raise ConfigError(f"unknown ResNet architecture {arch!r}; known: {sorted(TORCHVISION_RESNETS)}")
    block, layers, groups, width_per_group = TORCHVISION_RESNETS[arch]
    return ResNetConfig(block=block, layers=layers, num_classes=num_classes, in_channels=in_channels,
                        groups=groups, width_per_group=width_per_group)


def torchvision_resnet_name(config: ResNetConfig) -> str | None:
    """The torchvision constructor that builds ``config``'s architecture, if there is one."""
    if config.widths != ResNetConfig.widths:
        return None
    for name, (block, layers, groups, width_per_group) in TORCHVISION_RESNETS.items():
        if (config.block, tuple(config.layers), config.groups, config.width_per_group) == \
                (block, layers, groups, width_per_group):
            return name
    return None


def max_pool_padded(x: Array, window: int, stride: int, padding: int) -> Array:
    """PyTorch's ``MaxPool2d(window, stride, padding)`` on NHWC: the border is padded with
    ``-inf``, so a padded cell never wins the max; output size ``floor((H + 2p - k) / s) + 1``."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max,
                                 (1, window, window, 1), (1, stride, stride, 1), pad)


def global_average_pool(x: Array) -> Array:
    """``AdaptiveAvgPool2d(1)`` + flatten: (N, H, W, C) -> (N, C), the mean over H and W."""
    return jnp.mean(x, axis=(1, 2))


class InferenceBatchNorm(nnx.BatchNorm):
    """Batch norm that always normalises with its running statistics:
    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``.

    ``model.train()`` cannot switch it to batch statistics: the call fixes
    ``use_running_average=True``. Its variables (and PyTorch names) are those of
    ``nnx.BatchNorm``.
    """

    def __init__(self, num_features: int, *, epsilon: float = 1e-5, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        super().__init__(num_features, use_running_average=True, epsilon=epsilon, rngs=rngs,
                         dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: Array, use_running_average: bool | None = None, **kwargs) -> Array:
        del use_running_average  # always True
        return super().__call__(x, use_running_average=True, **kwargs)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
          groups: int = 1, **kw) -> nnx.Conv:
    return nnx.Conv(in_channels, out_channels, (kernel, kernel), strides=stride,
                    padding=((padding, padding), (padding, padding)), feature_group_count=groups,
                    use_bias=False, conv_general_dilated=conv_general_dilated, **kw)


class BasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions;
    ``conv1`` carries the stride."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, **kw):
        self.conv1 = _conv(in_channels, planes, 3, stride, 1, **kw)
        self.bn1 = InferenceBatchNorm(planes, **kw)
        self.conv2 = _conv(planes, planes, 3, 1, 1, **kw)
        self.bn2 = InferenceBatchNorm(planes, **kw)
        self.downsample = _shortcut(in_channels, planes, stride, **kw)

    def __call__(self, x: Array) -> Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return jax.nn.relu(out + _apply_shortcut(self.downsample, x))


class Bottleneck(nnx.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``: 1x1 -> 3x3
    (stride, groups) -> 1x1 to ``4 * planes`` channels (ResNet v1.5)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, *, groups: int = 1,
                 width_per_group: int = 64, **kw):
        width = int(planes * (width_per_group / 64.0)) * groups
        out_channels = planes * self.expansion
        self.conv1 = _conv(in_channels, width, 1, 1, 0, **kw)
        self.bn1 = InferenceBatchNorm(width, **kw)
        self.conv2 = _conv(width, width, 3, stride, 1, groups, **kw)
        self.bn2 = InferenceBatchNorm(width, **kw)
        self.conv3 = _conv(width, out_channels, 1, 1, 0, **kw)
        self.bn3 = InferenceBatchNorm(out_channels, **kw)
        self.downsample = _shortcut(in_channels, out_channels, stride, **kw)

    def __call__(self, x: Array) -> Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return jax.nn.relu(out + _apply_shortcut(self.downsample, x))


def _shortcut(in_channels: int, out_channels: int, stride: int, **kw) -> nnx.List | None:
    """torchvision's ``downsample``: ``[1x1 conv (stride), batch norm]`` where shapes change."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nnx.List([_conv(in_channels, out_channels, 1, stride, 0, **kw),
                     InferenceBatchNorm(out_channels, **kw)])


def _apply_shortcut(downsample: nnx.List | None, x: Array) -> Array:
    if downsample is None:
        return x
    conv, bn = downsample
    return bn(conv(x))


class ResNet(nnx.Module):
    """A torchvision-layout ResNet on NHWC images.

    ``features(x)`` is the globally average-pooled output of the last stage, (N, feature_dim);
    ``__call__(x) = fc(features(x))``, the logits (N, num_classes).
    """

    config_class = ResNetConfig

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        stem = config.widths[0]
        self.conv1 = _conv(config.in_channels, stem, 7, 2, 3, **kw)
        self.bn1 = InferenceBatchNorm(stem, **kw)
        block_kw = {} if config.block == "basic" else dict(
            groups=config.groups, width_per_group=config.width_per_group)
        block_cls = BasicBlock if config.block == "basic" else Bottleneck
        in_channels = stem
        self.num_stages = len(config.layers)
        for i, (planes, count) in enumerate(zip(config.widths, config.layers)):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(in_channels, planes, stride, **block_kw, **kw))
                in_channels = planes * block_cls.expansion
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        self.fc = nnx.Linear(in_channels, config.num_classes, **kw)

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features` (512 for ResNet-18/34, 2048 for ResNet-50 and deeper)."""
        return self.config.feature_dim

    def stages(self) -> list[nnx.List]:
        """The residual stages ``layer1, layer2, ...`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def feature_map(self, x: Array) -> Array:
        """The last stage's output (N, h, w, feature_dim) before pooling; h = ceil(H / 32) for
        four stages."""
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = max_pool_padded(x, 3, 2, 1)
        for stage in self.stages():
            for block in stage:
                x = block(x)
        return x

    def features(self, x: Array) -> Array:
        """Pooled penultimate features (N, feature_dim) of NHWC images ``x``."""
        return global_average_pool(self.feature_map(x))

    def __call__(self, x: Array) -> Array:
        """Logits (N, num_classes) of NHWC images ``x``."""
        return self.fc(self.features(x))

    def replace_head(self, num_classes: int, *, rngs: nnx.Rngs) -> "ResNet":
        """Swaps ``fc`` for a freshly initialised Linear(feature_dim, num_classes), in place;
        ``config.num_classes`` follows. Returns the model."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.fc = nnx.Linear(self.feature_dim, num_classes, rngs=rngs, dtype=self.fc.dtype,
                             param_dtype=self.fc.param_dtype)
        return self


def _build(arch: str, num_classes: int, in_channels: int, rngs: nnx.Rngs | None, dtype,
           param_dtype) -> ResNet:
    config = resnet_config(arch, num_classes=num_classes, in_channels=in_channels)
    return ResNet(config, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype,
                  param_dtype=param_dtype)


def resnet18(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
             dtype=jnp.float32, param_dtype=jnp.float32) -> ResNet:
    """torchvision's ``resnet18`` layout (basic blocks (2, 2, 2, 2)), randomly initialised; fill it
    with :func:`sce_jax.models.torchvision_import.load_torchvision_classifier`."""
    return _build("resnet18", num_classes, in_channels, rngs, dtype, param_dtype)


def resnet34(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
             dtype=jnp.float32, param_dtype=jnp.float32) -> ResNet:
    """torchvision's ``resnet34`` layout (basic blocks (3, 4, 6, 3)), randomly initialised."""
    return _build("resnet34", num_classes, in_channels, rngs, dtype, param_dtype)


def resnet50(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
             dtype=jnp.float32, param_dtype=jnp.float32) -> ResNet:
    """torchvision's ``resnet50`` layout (bottleneck blocks (3, 4, 6, 3)), randomly initialised."""
    return _build("resnet50", num_classes, in_channels, rngs, dtype, param_dtype)


def resnet101(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
              dtype=jnp.float32, param_dtype=jnp.float32) -> ResNet:
    """torchvision's ``resnet101`` layout (bottleneck blocks (3, 4, 23, 3)), randomly initialised."""
    return _build("resnet101", num_classes, in_channels, rngs, dtype, param_dtype)


def resnet152(num_classes: int = 1000, *, in_channels: int = 3, rngs: nnx.Rngs | None = None,
              dtype=jnp.float32, param_dtype=jnp.float32) -> ResNet:
    """torchvision's ``resnet152`` layout (bottleneck blocks (3, 8, 36, 3)), randomly initialised."""
    return _build("resnet152", num_classes, in_channels, rngs, dtype, param_dtype)
