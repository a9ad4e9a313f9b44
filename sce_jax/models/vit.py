"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) in Flax
NNX, layer for layer as torchvision's ``VisionTransformer`` (``vit_b_16``, ``vit_b_32``,
``vit_l_16``, ``vit_l_32``, ``vit_h_14``; inference only).

Sub-modules carry torchvision's names (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_3.self_attention.in_proj_weight``, ``...mlp.0``, ``encoder.ln``,
``heads.head``), so :mod:`sce_jax.weights.torch_layout` maps a torchvision state dict onto a
port strictly. Images are NHWC, already normalised, ``image_size`` x ``image_size``.

The computation, for patch size ``p`` and width ``D``::

    x = conv_proj(image)                         (p x p kernel, stride p) -> (N, (H/p)^2, D)
    x = [class_token; x] + pos_embedding         (N, (H/p)^2 + 1, D)
    per layer:  x = x + MHA(ln_1(x));  x = x + mlp(ln_2(x))   (mlp: Linear, exact GELU, Linear)
    features = ln(x)[:, 0];  logits = heads.head(features)   (or head(tanh(pre_logits(.))))

with pre-norm layer norms of eps 1e-6 and ``nn.MultiheadAttention``'s packed input projection
(``in_proj_weight`` = [W_q; W_k; W_v], (3D, D)) and scale ``1/sqrt(D / heads)``.

Other image sizes: the learned position embeddings of a checkpoint trained at one size are
resampled to the model's grid when the weights are imported, as torchvision's
``interpolate_embeddings`` does (:func:`interpolate_position_embedding`: bicubic with
``align_corners=True`` on the patch grid; the class token's embedding is kept).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.models.attention import attention
from sce_jax.models.conv import conv_general_dilated
from sce_jax.models.vae_blocks import Activation, Dropout
from sce_jax.weights.model_config import ConfigError

Array = jax.Array
LAYER_NORM_EPS = 1e-6
BICUBIC_A = -0.75    # PyTorch's cubic convolution coefficient (upsample_bicubic2d)

# torchvision constructor name -> (patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
TORCHVISION_VITS: dict[str, tuple[int, int, int, int, int]] = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
}


@dataclasses.dataclass(frozen=True)
class VisionTransformerConfig:
    """The architecture of a torchvision ``VisionTransformer``.

    Attributes:
      image_size: input height = width; a multiple of ``patch_size``.
      patch_size: side of the square patches (and of ``conv_proj``'s kernel and stride).
      num_layers / num_heads / hidden_dim / mlp_dim: encoder depth, attention heads, width,
        MLP width (vit_b_16: 12, 12, 768, 3072).
      num_classes: outputs of ``heads.head``.
      in_channels: image channels (torchvision: 3; 1 for grey images with a converted stem).
      representation_size: width of the optional ``pre_logits`` layer (None: no such layer, as
        in every torchvision ViT constructor).
    """

    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000
    in_channels: int = 3
    representation_size: int | None = None

    def __post_init__(self):
        for name in ("image_size", "patch_size", "num_layers", "num_heads", "hidden_dim",
                     "mlp_dim", "num_classes", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"VisionTransformerConfig.{name} must be a positive integer, "
                                  f"got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"VisionTransformerConfig: image_size {self.image_size} is not a "
                              f"multiple of patch_size {self.patch_size}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"VisionTransformerConfig: hidden_dim {self.hidden_dim} is not a "
                              f"multiple of num_heads {self.num_heads}")
        if self.representation_size is not None and (
                not isinstance(self.representation_size, int) or self.representation_size < 1):
            raise ConfigError("VisionTransformerConfig.representation_size must be None or a "
                              f"positive integer, got {self.representation_size!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side: ``image_size / patch_size``."""
        return self.image_size // self.patch_size

    @property
    def seq_length(self) -> int:
        """Tokens: the patches and the class token."""
        return self.grid_size ** 2 + 1

    @property
    def feature_dim(self) -> int:
        return self.hidden_dim


def vit_config(arch: str, *, num_classes: int = 1000, in_channels: int = 3,
               image_size: int = 224) -> VisionTransformerConfig:
    """The config of a torchvision ViT constructor by name (``"vit_b_16"``, ...)."""
    if arch not in TORCHVISION_VITS:
        raise ConfigError(f"unknown ViT architecture {arch!r}; known: {sorted(TORCHVISION_VITS)}")
    patch, layers, heads, hidden, mlp = TORCHVISION_VITS[arch]
    return VisionTransformerConfig(image_size=image_size, patch_size=patch, num_layers=layers,
                                   num_heads=heads, hidden_dim=hidden, mlp_dim=mlp,
                                   num_classes=num_classes, in_channels=in_channels)


def torchvision_vit_name(config: VisionTransformerConfig) -> str | None:
    """The torchvision constructor that builds ``config``'s encoder, if there is one."""
    shape = (config.patch_size, config.num_layers, config.num_heads, config.hidden_dim, config.mlp_dim)
    for name, entry in TORCHVISION_VITS.items():
        if entry == shape and config.representation_size is None:
            return name
    return None


def vit_legacy_key(key: str) -> str:
    """Names of torchvision ViT files from before the MLP became an ``MLP`` (``_version`` 1):
    ``mlp.linear_1.*`` -> ``mlp.0.*``, ``mlp.linear_2.*`` -> ``mlp.3.*``; others unchanged."""
    for old, new in ((".mlp.linear_1.", ".mlp.0."), (".mlp.linear_2.", ".mlp.3.")):
        if old in key and key.startswith("encoder.layers."):
            return key.replace(old, new)
    return key


def _cubic_weights(t: np.ndarray, a: float = BICUBIC_A) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fractions ``t``."""
    def near(x):   # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):    # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): 1-d bicubic resampling with ``align_corners=True`` as PyTorch's
    ``upsample_bicubic2d``: source ``s = i (n_in - 1) / (n_out - 1)``, taps at
    ``floor(s) - 1 .. floor(s) + 2`` clamped to the border."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out, dtype=np.float64) * scale
    base = np.floor(src).astype(int)
    weights = _cubic_weights(src - base)
    matrix = np.zeros((n_out, n_in))
    for tap in range(4):
        idx = np.clip(base - 1 + tap, 0, n_in - 1)
        np.add.at(matrix, (np.arange(n_out), idx), weights[:, tap])
    return matrix


def interpolate_position_embedding(pos_embedding: np.ndarray, grid_size: int) -> np.ndarray:
    """torchvision's ``interpolate_embeddings`` for one tensor: (1, 1 + g^2, D) -> (1, 1 +
    grid_size^2, D); the patch embeddings, as a g x g grid, are resampled bicubically
    (``align_corners=True``, separable, in float64); the class token's row is kept.

    Raises:
      ValueError: a tensor that is not (1, 1 + square, D).
    """
    pos = np.asarray(pos_embedding)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"position embedding of shape {pos.shape}: expected (1, 1 + g^2, D)")
    old = int(round(math.sqrt(pos.shape[1] - 1)))
    if old * old != pos.shape[1] - 1:
        raise ValueError(f"position embedding of shape {pos.shape}: {pos.shape[1] - 1} patch "
                         "positions are not a square grid")
    if old == grid_size:
        return pos
    d = pos.shape[2]
    grid = pos[0, 1:].astype(np.float64).reshape(old, old, d)
    m = _bicubic_matrix(old, grid_size)
    resized = np.einsum("ij,jkd,lk->ild", m, grid, m).reshape(1, grid_size * grid_size, d)
    return np.concatenate([pos[:, :1], resized.astype(pos.dtype)], axis=1)


class MultiheadAttention(nnx.Module):
    """``nn.MultiheadAttention(D, heads, batch_first=True)`` as self-attention::

        [q; k; v] = x in_proj_weight^T + in_proj_bias
        a = softmax(q k^T / sqrt(D / heads)) v   (per head, :func:`sce_jax.models.attention.attention`)
        y = out_proj(a)

    ``in_proj_weight`` / ``in_proj_bias`` keep PyTorch's layout and names (raw parameters).
    """

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype, param_dtype):
        self.heads = heads
        self.dtype = dtype
        init = nnx.initializers.xavier_uniform()
        self.in_proj_weight = nnx.Param(init(rngs.params(), (3 * dim, dim), param_dtype))
        self.in_proj_bias = nnx.Param(jnp.zeros((3 * dim,), param_dtype))
        self.out_proj = nnx.Linear(dim, dim, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        b, s, d = x.shape
        w = self.in_proj_weight[...].astype(self.dtype)
        qkv = jnp.einsum("bsd,ed->bse", x.astype(self.dtype), w) + self.in_proj_bias[...].astype(self.dtype)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads) for t in jnp.split(qkv, 3, axis=-1))
        return self.out_proj(attention(q, k, v).reshape(b, s, d))


class EncoderBlock(nnx.Module):
    """torchvision ``EncoderBlock``: ``x + MHA(ln_1(x))``, then ``+ mlp(ln_2(.))``."""

    def __init__(self, config: VisionTransformerConfig, **kw):
        d = config.hidden_dim
        self.ln_1 = nnx.LayerNorm(d, epsilon=LAYER_NORM_EPS, **kw)
        self.self_attention = MultiheadAttention(d, config.num_heads, **kw)
        self.ln_2 = nnx.LayerNorm(d, epsilon=LAYER_NORM_EPS, **kw)
        # torchvision's MLPBlock: Linear, GELU, Dropout, Linear, Dropout
        self.mlp = nnx.List([nnx.Linear(d, config.mlp_dim, **kw), Activation("gelu"), Dropout(),
                             nnx.Linear(config.mlp_dim, d, **kw), Dropout()])

    def __call__(self, x: Array) -> Array:
        x = x + self.self_attention(self.ln_1(x))
        y = self.ln_2(x)
        for layer in self.mlp:
            y = layer(y)
        return x + y


class EncoderLayers(nnx.Module):
    """torchvision's ``encoder.layers``: an ``nn.Sequential`` of ``encoder_layer_<i>``."""

    def __init__(self, config: VisionTransformerConfig, **kw):
        self.count = config.num_layers
        for i in range(config.num_layers):
            setattr(self, f"encoder_layer_{i}", EncoderBlock(config, **kw))

    def __call__(self, x: Array) -> Array:
        for i in range(self.count):
            x = getattr(self, f"encoder_layer_{i}")(x)
        return x


class Encoder(nnx.Module):
    """torchvision ``Encoder``: ``ln(layers(x + pos_embedding))``."""

    def __init__(self, config: VisionTransformerConfig, *, rngs: nnx.Rngs, **kw):
        self.pos_embedding = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (1, config.seq_length, config.hidden_dim),
                                     kw["param_dtype"]))
        self.layers = EncoderLayers(config, rngs=rngs, **kw)
        self.ln = nnx.LayerNorm(config.hidden_dim, epsilon=LAYER_NORM_EPS, rngs=rngs, **kw)

    def __call__(self, x: Array) -> Array:
        return self.ln(self.layers(x + self.pos_embedding[...].astype(x.dtype)))


class Heads(nnx.Module):
    """torchvision's ``heads``: ``head`` (or ``head(tanh(pre_logits(x)))``)."""

    def __init__(self, config: VisionTransformerConfig, **kw):
        width = config.representation_size or config.hidden_dim
        self.pre_logits = (nnx.Linear(config.hidden_dim, width, **kw)
                           if config.representation_size is not None else None)
        self.head = nnx.Linear(width, config.num_classes, **kw)

    def __call__(self, x: Array) -> Array:
        if self.pre_logits is not None:
            x = jnp.tanh(self.pre_logits(x))
        return self.head(x)


class VisionTransformer(nnx.Module):
    """A torchvision-layout ViT on NHWC images of ``config.image_size`` pixels square.

    ``features(x)`` is the class token after the final layer norm, (N, hidden_dim);
    ``__call__(x) = heads(features(x))``, the logits (N, num_classes).
    """

    config_class = VisionTransformerConfig

    def __init__(self, config: VisionTransformerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.config = config
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        p = config.patch_size
        self.conv_proj = nnx.Conv(config.in_channels, config.hidden_dim, (p, p), strides=(p, p),
                                  padding="VALID", conv_general_dilated=conv_general_dilated, **kw)
        self.class_token = nnx.Param(jnp.zeros((1, 1, config.hidden_dim), param_dtype))
        self.encoder = Encoder(config, **kw)
        self.heads = Heads(config, **kw)

    @property
    def feature_dim(self) -> int:
        return self.config.hidden_dim

    def features(self, x: Array) -> Array:
        """The class token's final representation (N, hidden_dim) of NHWC images ``x``."""
        n, h, w, c = x.shape
        size = self.config.image_size
        if (h, w) != (size, size) or c != self.config.in_channels:
            raise ValueError(f"VisionTransformer: expected ({size}, {size}, "
                             f"{self.config.in_channels}) NHWC images (its image_size; resample "
                             f"the position embeddings for another size), got {tuple(x.shape)}")
        x = self.conv_proj(x).reshape(n, -1, self.config.hidden_dim)
        token = jnp.broadcast_to(self.class_token[...].astype(x.dtype), (n, 1, x.shape[-1]))
        x = self.encoder(jnp.concatenate([token, x], axis=1))
        return x[:, 0]

    def __call__(self, x: Array) -> Array:
        """Logits (N, num_classes) of NHWC images ``x``."""
        return self.heads(self.features(x))


def vit_b_16(num_classes: int = 1000, *, image_size: int = 224, in_channels: int = 3,
             rngs: nnx.Rngs | None = None, dtype=jnp.float32, param_dtype=jnp.float32) -> VisionTransformer:
    """torchvision's ``vit_b_16`` layout (16 px patches, 12 layers, 12 heads, width 768),
    randomly initialised; fill it with
    :func:`sce_jax.models.torchvision_import.load_torchvision_classifier`."""
    config = vit_config("vit_b_16", num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size)
    return VisionTransformer(config, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype,
                             param_dtype=param_dtype)
