"""torchvision classifier checkpoints -> the NNX ports :class:`ResNet`, :class:`DenseNet` and
:class:`VisionTransformer`.

A checkpoint is any file :func:`sce_jax.weights.torch_files.read_state_dict` reads: a
``.pth``/``.pt`` state dict (``torch.save(model.state_dict(), path)``), a training checkpoint
that wraps it (``{"state_dict": ...}``, ``{"model": ...}``), with or without DataParallel's
``module.`` prefix, or a ``.safetensors`` file. Dense-layer names of old torchvision DenseNet
files (``norm.1``, ``conv.2``) and MLP names of old ViT files (``mlp.linear_1``) are renamed to
the current ones.

The architecture is named by the caller (``"resnet50"``, a config, or a model to fill) or, when
not named, read from the tensor names and shapes (:func:`infer_torchvision_config`); the number
of classes and of input channels are read from the head and the stem unless given. Loading is
strict: every tensor used, every parameter filled, every shape equal; otherwise the error lists
all missing, unexpected and mis-shaped tensors, and, when the file holds another architecture
than the one asked for, starts by saying which (:class:`ArchitectureMismatchError`).

A ViT's image size is read from its position embeddings unless ``image_size`` is given; a
model of another size gets the checkpoint's position embeddings resampled to its patch grid,
as torchvision's ``interpolate_embeddings`` does (the only tensor that is ever changed). A ViT
file does not record its number of heads: it is taken from the torchvision constructor with
the file's shapes (``vit_b_16`` ...); for other shapes name a config.

Typical use::

    model = load_torchvision_classifier("resnet50_chexpert.pth", "resnet50")
    vit = load_torchvision_classifier("vit_b_16.pth", "vit_b_16", image_size=384)
    save_model(model, "ckpt/classifier")          # sce_jax.models.checkpoint
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Union

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.models.densenet import (
    TORCHVISION_DENSENETS,
    DenseNet,
    DenseNetConfig,
    densenet_config,
    densenet_legacy_key,
    torchvision_densenet_name,
)
from sce_jax.models.resnet import (
    EXPANSION,
    TORCHVISION_RESNETS,
    ResNet,
    ResNetConfig,
    resnet_config,
    torchvision_resnet_name,
)
from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
from sce_jax.models.vit import (
    TORCHVISION_VITS,
    VisionTransformer,
    VisionTransformerConfig,
    interpolate_position_embedding,
    torchvision_vit_name,
    vit_config,
    vit_legacy_key,
)
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import WeightMismatchError, load_torch_state_dict_into
from sce_jax.weights.torch_files import read_state_dict

ClassifierConfig = Union[ResNetConfig, DenseNetConfig, SmallCNNConfig, VisionTransformerConfig]
ClassifierModel = Union[ResNet, DenseNet, SmallCNN, VisionTransformer]
MODEL_CLASSES: dict[type, type] = {ResNetConfig: ResNet, DenseNetConfig: DenseNet, SmallCNNConfig: SmallCNN,
                                   VisionTransformerConfig: VisionTransformer}
ARCHITECTURES = (tuple(sorted(TORCHVISION_RESNETS)) + tuple(sorted(TORCHVISION_DENSENETS))
                 + tuple(sorted(TORCHVISION_VITS)))

# (head weight, stem weight) as torchvision names them
_RESNET_KEYS = ("fc.weight", "conv1.weight")
_DENSENET_KEYS = ("classifier.weight", "features.conv0.weight")
_VIT_KEYS = ("heads.head.weight", "conv_proj.weight")
_VIT_POSITIONS = "encoder.pos_embedding"


class ArchitectureMismatchError(WeightMismatchError):
    """The checkpoint holds another architecture than the model it is loaded into.

    The message names both architectures, then lists every missing, unexpected and mis-shaped
    tensor as :class:`WeightMismatchError` does (its attributes are the same).
    """

    def __init__(self, headline: str, cause: WeightMismatchError):
        self.missing, self.unexpected, self.misshaped = cause.missing, cause.unexpected, cause.misshaped
        ValueError.__init__(self, f"{headline}\n{cause}")


def describe_architecture(config: ClassifierConfig) -> str:
    """A one-line description, e.g. ``resnet50 (bottleneck blocks (3, 4, 6, 3), 7 classes,
    3 input channels)``; architectures torchvision has no constructor for are spelt out."""
    io = f"{config.num_classes} classes, {config.in_channels} input channels"
    if isinstance(config, ResNetConfig):
        name = torchvision_resnet_name(config)
        body = f"{config.block} blocks {tuple(config.layers)}"
        if name is None:
            name = "a ResNet"
            body += f", widths {tuple(config.widths)}"
        if config.groups != 1 or config.width_per_group != 64:
            body += f", groups {config.groups}, width per group {config.width_per_group}"
        return f"{name} ({body}, {io})"
    if isinstance(config, DenseNetConfig):
        name = torchvision_densenet_name(config) or "a DenseNet"
        return (f"{name} (growth rate {config.growth_rate}, blocks {tuple(config.block_config)}, "
                f"{config.num_init_features} stem channels, bn_size {config.bn_size}, {io})")
    if isinstance(config, SmallCNNConfig):
        return f"a SmallCNN (widths {tuple(config.widths)}, {config.activation}, {io})"
    if isinstance(config, VisionTransformerConfig):
        name = torchvision_vit_name(config) or "a ViT"
        extra = (f", representation size {config.representation_size}"
                 if config.representation_size is not None else "")
        return (f"{name} ({config.image_size} px images in {config.patch_size} px patches, "
                f"{config.num_layers} layers, {config.num_heads} heads, width {config.hidden_dim}, "
                f"MLP {config.mlp_dim}{extra}, {io})")
    raise TypeError(f"not a classifier config: {type(config).__name__}")


def infer_num_classes(state_dict: Mapping[str, np.ndarray]) -> int:
    """The number of outputs of a torchvision classifier: rows of ``fc.weight`` (ResNet),
    ``classifier.weight`` (DenseNet) or ``heads.head.weight`` (ViT)."""
    for key in (_RESNET_KEYS[0], _DENSENET_KEYS[0], _VIT_KEYS[0]):
        if key in state_dict:
            return int(np.shape(state_dict[key])[0])
    raise ValueError(f"cannot read the number of classes: the checkpoint has none of "
                     f"{_RESNET_KEYS[0]!r} (ResNet head), {_DENSENET_KEYS[0]!r} (DenseNet head), "
                     f"{_VIT_KEYS[0]!r} (ViT head)")


def _count(state_dict: Mapping[str, np.ndarray], pattern: str, start: int) -> int:
    """How many consecutive indices ``start, start + 1, ...`` have ``pattern.format(i)`` in the
    state dict."""
    n = 0
    while pattern.format(start + n) in state_dict:
        n += 1
    return n


def _infer_resnet(sd: Mapping[str, np.ndarray]) -> ResNetConfig | None:
    stem = np.shape(sd["conv1.weight"])
    num_stages = _count(sd, "layer{}.0.conv1.weight", start=1)
    if num_stages == 0:
        return None
    block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    layers, widths = [], []
    for i in range(1, num_stages + 1):
        layers.append(_count(sd, f"layer{i}.{{}}.conv1.weight", start=0))
        last_conv = "conv3" if block == "bottleneck" else "conv1"   # its rows: planes * expansion
        widths.append(np.shape(sd[f"layer{i}.0.{last_conv}.weight"])[0] // EXPANSION[block])
    groups, width_per_group = 1, 64
    if block == "bottleneck":
        conv2 = np.shape(sd["layer1.0.conv2.weight"])  # (width, width / groups, 3, 3)
        groups = conv2[0] // conv2[1]
        width_per_group = (conv2[0] // groups) * 64 // widths[0]
    return ResNetConfig(block=block, layers=tuple(layers), num_classes=np.shape(sd["fc.weight"])[0],
                        in_channels=stem[1], widths=tuple(widths), groups=groups,
                        width_per_group=width_per_group)


def _infer_densenet(sd: Mapping[str, np.ndarray]) -> DenseNetConfig | None:
    stem = np.shape(sd["features.conv0.weight"])
    block_config = []
    i = 1
    while True:
        n = _count(sd, f"features.denseblock{i}.denselayer{{}}.conv1.weight", start=1)
        if n == 0:
            break
        block_config.append(n)
        i += 1
    if not block_config:
        return None
    inner = np.shape(sd["features.denseblock1.denselayer1.conv1.weight"])[0]
    growth_rate = np.shape(sd["features.denseblock1.denselayer1.conv2.weight"])[0]
    return DenseNetConfig(growth_rate=growth_rate, block_config=tuple(block_config),
                          num_init_features=stem[0], bn_size=max(1, inner // growth_rate),
                          num_classes=np.shape(sd["classifier.weight"])[0], in_channels=stem[1])


def _infer_vit(sd: Mapping[str, np.ndarray]) -> VisionTransformerConfig | None:
    """A torchvision ViT's config from its tensors; None when no constructor has its shapes
    (the number of heads is in no tensor)."""
    hidden, in_channels, patch, _ = np.shape(sd["conv_proj.weight"])
    positions = np.shape(sd[_VIT_POSITIONS])[1] - 1
    grid = int(round(positions ** 0.5))
    if grid * grid != positions:
        return None
    layers = _count(sd, "encoder.layers.encoder_layer_{}.ln_1.weight", start=0)
    mlp = np.shape(sd["encoder.layers.encoder_layer_0.mlp.0.weight"])[0]
    representation = (int(np.shape(sd["heads.pre_logits.weight"])[0])
                      if "heads.pre_logits.weight" in sd else None)
    for patch_, layers_, heads, hidden_, mlp_ in TORCHVISION_VITS.values():
        if (patch_, layers_, hidden_, mlp_) == (patch, layers, hidden, mlp):
            return VisionTransformerConfig(
                image_size=grid * patch, patch_size=patch, num_layers=layers, num_heads=heads,
                hidden_dim=hidden, mlp_dim=mlp, num_classes=np.shape(sd[_VIT_KEYS[0]])[0],
                in_channels=in_channels, representation_size=representation)
    return None


def _legacy_key(key: str) -> str:
    return vit_legacy_key(densenet_legacy_key(key))


def current_names(state_dict: Mapping[str, np.ndarray], *,
                  what: str = "the checkpoint") -> dict[str, np.ndarray]:
    """The state dict with old torchvision DenseNet names (``norm.1``, ``conv.2``) and ViT MLP
    names (``mlp.linear_1``) renamed to the current ones (:func:`densenet_legacy_key`,
    :func:`vit_legacy_key`); other names are kept. A file holding a tensor under both names
    raises :class:`WeightMismatchError`."""
    renamed: dict[str, np.ndarray] = {}
    duplicates = []
    for key, value in state_dict.items():
        new = _legacy_key(key)
        if new in renamed:
            duplicates.append(f"{key} (duplicate of {new})")
        renamed[new] = value
    if duplicates:
        raise WeightMismatchError(f"{what} (tensors under both their old and current names)",
                                  unexpected=duplicates)
    return renamed


def infer_torchvision_config(
        state_dict: Mapping[str, np.ndarray]) -> ResNetConfig | DenseNetConfig | VisionTransformerConfig | None:
    """The ResNet, DenseNet or ViT config whose torchvision state dict has these names and
    shapes, or None when the tensors are not those of any of these families.

    Read from: the stem (``conv1`` / ``features.conv0``: input channels and stem width), the
    number of ``layer{i}.{j}`` / ``denseblock{i}.denselayer{j}`` entries, the block type
    (a ``conv3`` means bottleneck), the widths of each stage's first block, the grouped 3x3
    convolution (ResNeXt: ``groups = width / weight.shape[1]``), and the head's rows; for a
    ViT, the patch projection, the position embeddings (image size) and the layer count, with
    the number of heads of the torchvision constructor of those shapes.
    """
    sd = {_legacy_key(k): v for k, v in state_dict.items()}
    try:
        if all(k in sd for k in _RESNET_KEYS):
            return _infer_resnet(sd)
        if all(k in sd for k in _DENSENET_KEYS):
            return _infer_densenet(sd)
        if all(k in sd for k in _VIT_KEYS + (_VIT_POSITIONS,)):
            return _infer_vit(sd)
    except (KeyError, IndexError, ValueError, ZeroDivisionError, ConfigError):
        return None
    return None


def _vit_image_size(state_dict: Mapping[str, np.ndarray], patch_size: int) -> int:
    """The image size a ViT checkpoint was trained at: sqrt(positions - 1) x patch size."""
    positions = state_dict.get(_VIT_POSITIONS)
    if positions is None:
        return 224
    return int(round((np.shape(positions)[1] - 1) ** 0.5)) * patch_size


# architecture name -> (config maker, (head, stem) tensor names)
_FAMILIES = {**{name: (resnet_config, _RESNET_KEYS) for name in TORCHVISION_RESNETS},
             **{name: (densenet_config, _DENSENET_KEYS) for name in TORCHVISION_DENSENETS},
             **{name: (vit_config, _VIT_KEYS) for name in TORCHVISION_VITS}}


def _target_config(architecture, state_dict, found, num_classes, in_channels, image_size,
                   path) -> ClassifierConfig:
    """The config to build from what the caller named and what the file holds."""
    if architecture is None:
        if found is None:
            raise ValueError(
                f"{path}: cannot tell which architecture this checkpoint holds (not a torchvision "
                f"ResNet, DenseNet or ViT state dict of a known shape); pass the architecture, "
                f"one of {ARCHITECTURES}, or a config")
        config = found
    elif isinstance(architecture, str):
        if architecture not in _FAMILIES:
            raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")
        make, keys = _FAMILIES[architecture]
        head, stem = (state_dict.get(k) for k in keys)
        if num_classes is None:
            num_classes = (int(np.shape(head)[0]) if head is not None
                           else found.num_classes if found is not None else infer_num_classes(state_dict))
        if in_channels is None:
            in_channels = (int(np.shape(stem)[1]) if stem is not None
                           else found.in_channels if found is not None else 3)
        if make is vit_config:
            if image_size is None:
                image_size = _vit_image_size(state_dict, TORCHVISION_VITS[architecture][0])
            return make(architecture, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size)
        return make(architecture, num_classes=num_classes, in_channels=in_channels)
    elif isinstance(architecture, tuple(MODEL_CLASSES)):
        config = architecture
    else:
        raise TypeError(f"architecture must be a name {ARCHITECTURES}, a ResNetConfig, DenseNetConfig, "
                        f"SmallCNNConfig or VisionTransformerConfig, a model, or None; got "
                        f"{type(architecture).__name__}")
    changes = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels),
                                 ("image_size", image_size)) if v is not None}
    return dataclasses.replace(config, **changes) if changes else config


def _fit_position_embedding(state_dict: dict[str, np.ndarray],
                            config: VisionTransformerConfig) -> dict[str, np.ndarray]:
    """The state dict with its ViT position embeddings resampled to ``config``'s patch grid
    (torchvision's ``interpolate_embeddings``); unchanged when they already fit or are absent
    (strict loading then reports it)."""
    positions = state_dict.get(_VIT_POSITIONS)
    if positions is None or np.shape(positions)[1] == config.seq_length:
        return state_dict
    try:
        resized = interpolate_position_embedding(positions, config.grid_size)
    except ValueError:
        return state_dict   # not a square grid: left for the strict shape check to report
    return {**state_dict, _VIT_POSITIONS: resized}


def load_torchvision_classifier(
    path: str | os.PathLike,
    architecture: str | ClassifierConfig | ClassifierModel | None = None,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> ClassifierModel:
    """Builds (or fills) an NNX classifier from a torchvision checkpoint file, strictly.

    Args:
      path: ``.pth``/``.pt``/``.bin``/``.ckpt`` (needs torch) or ``.safetensors`` file.
      architecture: a torchvision constructor name (``"resnet18"``, ``"resnet50"``,
        ``"densenet121"``, ``"vit_b_16"``, ... see ``ARCHITECTURES``), a config
        (``ResNetConfig``, ``DenseNetConfig``, ``SmallCNNConfig``, ``VisionTransformerConfig``),
        a model to fill in place, or None to read the architecture from the file
        (:func:`infer_torchvision_config`).
      num_classes: outputs of the head; by default the rows of the file's head weight. With a
        model given, it must agree with the model's config (ValueError otherwise).
      in_channels: input channels; by default read from the file's stem convolution (same
        rule for a given model).
      image_size: ViTs only: the input size of the built model; by default the checkpoint's.
        Another size resamples the position embeddings (torchvision's ``interpolate_embeddings``).
      dtype: compute dtype of a built model (e.g. ``jnp.bfloat16``).
      param_dtype: parameter dtype of a built model; the file's weights are cast to it.

    Returns:
      the filled model (the given one, or a new ``ResNet``/``DenseNet``/``SmallCNN``).

    Raises:
      ArchitectureMismatchError: the file holds another architecture (named in the message);
        with the lists of missing, unexpected and mis-shaped tensors.
      WeightMismatchError: the tensors do not fit, with the full lists.
      WeightFileError: the file cannot be read as a state dict.
    """
    path = os.fspath(path)
    state_dict = current_names(read_state_dict(path), what=path)
    found = infer_torchvision_config(state_dict)
    if isinstance(architecture, nnx.Module):
        model = architecture
        config = getattr(model, "config", None)
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("image_size", image_size)):
            if value is not None and config is not None and getattr(config, name, value) != value:
                raise ValueError(f"{name}={value} was given, but the model to fill has "
                                 f"{name}={getattr(config, name)}")
    else:
        if image_size is not None and not (
                isinstance(architecture, VisionTransformerConfig)
                or architecture in TORCHVISION_VITS
                or (architecture is None and isinstance(found, VisionTransformerConfig))):
            raise ValueError(f"image_size={image_size} applies to ViTs only (architecture "
                             f"{architecture if architecture is not None else 'read from ' + path})")
        config = _target_config(architecture, state_dict, found, num_classes, in_channels,
                                image_size, path)
        cls = MODEL_CLASSES[type(config)]
        model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
    if isinstance(config, tuple(MODEL_CLASSES)):
        wanted = describe_architecture(config)
    else:
        wanted = type(model).__name__
    if isinstance(config, VisionTransformerConfig):
        state_dict = _fit_position_embedding(state_dict, config)
    try:
        return load_torch_state_dict_into(model, state_dict, what=f"{wanted} (from {path})")
    except WeightMismatchError as error:
        if found is not None and _architecture(found) != _architecture(config):
            raise ArchitectureMismatchError(
                f"{path} holds {describe_architecture(found)}, not {wanted}", error) from None
        raise


def _architecture(config: ClassifierConfig) -> ClassifierConfig:
    """The config with what a ViT import may change on purpose (the image size) set aside."""
    if isinstance(config, VisionTransformerConfig):
        return dataclasses.replace(config, image_size=config.patch_size)
    return config
