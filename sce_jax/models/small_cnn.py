"""A small convolutional classifier for the shipped demos, trainable in JAX and fast on CPU.

Architecture, for ``widths = (w_1, ..., w_S)``:

    h_0 = x                                            (N, H, W, in_channels)
    h_s = act(conv3x3_s(h_{s-1}))                       stride 1, padding 1, with bias
    h_s = avg_pool_2x2(h_s)                             after every stage but the last
    features(x) = mean_hw(h_S)                          (N, w_S)
    logits = fc(features(x))                            (N, num_classes)

Design choices:

- No normalisation layer. With three to four convolutions, Adam trains the network well
  without one, and there are no batch statistics whose training/inference difference could
  couple the examples of a batch during a search.
- ``silu`` by default: a smooth activation gives input gradients that change continuously with
  the image, which a gradient-based counterfactual search follows more easily than ReLU's
  piecewise-constant ones (``relu`` is available).
- Average pooling (not max pooling) passes gradient to every pixel of a cell; global average
  pooling makes the network independent of the image size (28x28, 32x32, 64x64, ...).

PyTorch names: ``convs.{i}`` (``nn.Conv2d``) and ``fc`` (``nn.Linear``), so the layout rules of
:mod:`sce_jax.weights.torch_layout` map a twin written as ``nn.ModuleList`` of convolutions plus
``nn.Linear`` (see tests/models/test_small_cnn.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.conv import conv_general_dilated
from sce_jax.models.densenet import avg_pool_2x2
from sce_jax.models.resnet import global_average_pool
from sce_jax.weights.model_config import ConfigError

Array = jax.Array
Activation = Literal["silu", "relu"]
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"silu": jax.nn.silu, "relu": jax.nn.relu}
# He et al. (2015): kernel ~ N(0, 2 / fan_in) keeps the activation scale through ReLU-like layers.
HE_NORMAL = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


@dataclasses.dataclass(frozen=True)
class SmallCNNConfig:
    """The architecture of a :class:`SmallCNN`.

    Attributes:
      in_channels: channels of the input image (1 grey, 3 RGB).
      num_classes: outputs of the ``fc`` head.
      widths: output channels of each 3x3 convolution; one stage each.
      activation: ``"silu"`` or ``"relu"``.
    """

    in_channels: int = 3
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    activation: Activation = "silu"

    def __post_init__(self):
        if self.in_channels < 1:
            raise ConfigError(f"SmallCNNConfig.in_channels must be >= 1, got {self.in_channels}")
        if self.num_classes < 1:
            raise ConfigError(f"SmallCNNConfig.num_classes must be >= 1, got {self.num_classes}")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ConfigError(f"SmallCNNConfig.widths must be one or more positive channel counts, "
                              f"got {self.widths}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"SmallCNNConfig.activation must be one of {sorted(ACTIVATIONS)}, "
                              f"got {self.activation!r}")


class SmallCNN(nnx.Module):
    """Conv3x3-activation(-avg-pool) stages, global average pool, linear head; NHWC input."""

    config_class = SmallCNNConfig

    def __init__(self, config: SmallCNNConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.config = config
        channels = (config.in_channels,) + tuple(config.widths)
        self.convs = nnx.List([
            nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), kernel_init=HE_NORMAL, rngs=rngs,
                     dtype=dtype, param_dtype=param_dtype,
                     conv_general_dilated=conv_general_dilated)
            for cin, cout in zip(channels[:-1], channels[1:])])
        self.fc = nnx.Linear(channels[-1], config.num_classes, rngs=rngs, dtype=dtype,
                             param_dtype=param_dtype)

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features`: the last stage's channels."""
        return self.config.widths[-1]

    def features(self, x: Array) -> Array:
        """Pooled penultimate features (N, feature_dim) of NHWC images ``x``."""
        act = ACTIVATIONS[self.config.activation]
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = act(conv(x))
            if i != last:
                x = avg_pool_2x2(x)
        return global_average_pool(x)

    def __call__(self, x: Array) -> Array:
        """Logits (N, num_classes) of NHWC images ``x``."""
        return self.fc(self.features(x))

    def replace_head(self, num_classes: int, *, rngs: nnx.Rngs) -> "SmallCNN":
        """Swaps ``fc`` for a freshly initialised Linear(feature_dim, num_classes), in place;
        ``config.num_classes`` follows. Returns the model."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.fc = nnx.Linear(self.feature_dim, num_classes, rngs=rngs, dtype=self.fc.dtype,
                             param_dtype=self.fc.param_dtype)
        return self
