"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016) in Flax NNX, layer for layer as torchvision's ``inception_v3`` (inference only).

Sub-modules carry torchvision's names (``Conv2d_1a_3x3.conv``, ``Mixed_5b.branch5x5_2.bn``,
``AuxLogits.fc``, ``fc``), so :mod:`sce_jax.weights.torch_layout` maps a torchvision state
dict onto it strictly. Images are NHWC. Batch normalisation uses its running statistics
(``eps = 1e-3`` as torchvision), dropout is the identity, and the auxiliary classifier is not
part of the forward pass (torchvision runs it only in training); its parameters are kept so
checkpoints load strictly, and :meth:`InceptionV3.aux_logits` evaluates it on ``Mixed_6e``
features.

:meth:`InceptionV3.features` is the 2048-d global average pool before the classifier, the
representation FID is computed on. Note: the FID literature uses the TensorFlow Inception
graph as ported by pytorch-fid (``FIDInceptionA/C/E`` blocks, which average-pool without
counting padding and max-pool in one branch of the last block, plus its own weights); that
variant is not ported here, so FID values from this network are not comparable with
published ones. The smallest input is 75 x 75.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sce_jax.models.conv import conv_general_dilated

Array = jax.Array
MIN_SIZE = 75


@dataclasses.dataclass(frozen=True)
class InceptionV3Config:
    """torchvision ``Inception3`` constructor arguments that change the network.

    ``transform_input``: re-normalise ImageNet-normalised input to the [-1, 1] scaling of the
    original Google weights (torchvision sets it with its pretrained weights).
    """

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def max_pool(x: Array, window: int, stride: int) -> Array:
    """Max pooling without padding (NHWC)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), "VALID")


def avg_pool(x: Array, window: int, stride: int, padding: int = 0) -> Array:
    """Average pooling with zero padding counted in the divisor (PyTorch's default)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, window, 1),
                                  (1, stride, stride, 1), pad)
    return total / (window * window)


def transform_input(x: Array) -> Array:
    """ImageNet-normalised input -> the [-1, 1] scaling of the original weights, per channel:
    ``x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5`` with torchvision's ImageNet mean and std."""
    scale = jnp.asarray((0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5), x.dtype)
    shift = jnp.asarray(((0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5), x.dtype)
    return x * scale + shift


class BasicConv2d(nnx.Module):
    """Convolution (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 *, stride: int = 1, padding: int | tuple[int, int] = 0, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(in_channels, out_channels, _pair(kernel_size), strides=stride,
                             padding=((ph, ph), (pw, pw)), use_bias=False, rngs=rngs,
                             dtype=dtype, param_dtype=param_dtype,
                             conv_general_dilated=conv_general_dilated)
        self.bn = nnx.BatchNorm(out_channels, use_running_average=True, epsilon=1e-3,
                                rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        return jax.nn.relu(self.bn(self.conv(x)))


class InceptionA(nnx.Module):
    """35 x 35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_features: int, **kw):
        self.branch1x1 = BasicConv2d(in_channels, 64, 1, **kw)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1, **kw)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1, **kw)

    def __call__(self, x: Array) -> Array:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(avg_pool(x, 3, 1, 1))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int, **kw):
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

    def __call__(self, x: Array) -> Array:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
    """17 x 17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int, **kw):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1, **kw)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1, **kw)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1, **kw)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, **kw)

    def __call__(self, x: Array) -> Array:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(avg_pool(x, 3, 1, 1))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int, **kw):
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1, **kw)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1, **kw)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

    def __call__(self, x: Array) -> Array:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
    """8 x 8 block with split 1x3 / 3x1 branches."""

    def __init__(self, in_channels: int, **kw):
        self.branch1x1 = BasicConv2d(in_channels, 320, 1, **kw)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1, **kw)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, **kw)

    def __call__(self, x: Array) -> Array:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        bp = self.branch_pool(avg_pool(x, 3, 1, 1))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nnx.Module):
    """Auxiliary classifier on the 17 x 17 ``Mixed_6e`` output (5x5/3 avgpool, 1x1, 5x5, fc)."""

    def __init__(self, in_channels: int, num_classes: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.conv0 = BasicConv2d(in_channels, 128, 1, **kw)
        self.conv1 = BasicConv2d(128, 768, 5, **kw)
        self.fc = nnx.Linear(768, num_classes, **kw)

    def __call__(self, x: Array) -> Array:
        x = self.conv1(self.conv0(avg_pool(x, 5, 3)))
        return self.fc(jnp.mean(x, axis=(1, 2)))


class InceptionV3(nnx.Module):
    """torchvision's ``Inception3`` for inference; ``__call__`` gives logits (N, classes)."""

    config_class = InceptionV3Config

    def __init__(self, config: InceptionV3Config, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
        self.Mixed_5b = InceptionA(192, pool_features=32, **kw)
        self.Mixed_5c = InceptionA(256, pool_features=64, **kw)
        self.Mixed_5d = InceptionA(288, pool_features=64, **kw)
        self.Mixed_6a = InceptionB(288, **kw)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, **kw)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, **kw)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, **kw)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, **kw)
        self.AuxLogits = InceptionAux(768, config.num_classes, **kw) if config.aux_logits else None
        self.Mixed_7a = InceptionD(768, **kw)
        self.Mixed_7b = InceptionE(1280, **kw)
        self.Mixed_7c = InceptionE(2048, **kw)
        self.fc = nnx.Linear(2048, config.num_classes, **kw)

    def mixed_6e(self, x: Array) -> Array:
        """The 17 x 17 (at 299 px) ``Mixed_6e`` output, input of the auxiliary classifier."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"InceptionV3 takes (N, H, W, 3) images, got shape {x.shape}")
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"InceptionV3 needs images of at least {MIN_SIZE} x {MIN_SIZE} "
                             f"pixels, got {x.shape[1]} x {x.shape[2]}")
        if self.config.transform_input:
            x = transform_input(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = max_pool(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = max_pool(x, 3, 2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        return x

    def features(self, x: Array) -> Array:
        """The 2048-d global average pool of ``Mixed_7c``: ``(N, 2048)``."""
        x = self.mixed_6e(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return jnp.mean(x, axis=(1, 2))

    def aux_logits(self, x: Array) -> Array:
        """The auxiliary classifier's logits (needs ``aux_logits`` and >= 17 x 17 at Mixed_6e)."""
        if self.AuxLogits is None:
            raise ValueError("this InceptionV3 was built with aux_logits=False")
        return self.AuxLogits(self.mixed_6e(x))

    def __call__(self, x: Array) -> Array:
        return self.fc(self.features(x))
