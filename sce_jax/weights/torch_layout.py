"""The explicit correspondence between PyTorch parameter names/layouts and NNX state.

The Flax NNX ports in :mod:`sce_jax.models` name their sub-modules exactly as the PyTorch
originals do (``encoder.down_blocks.0.resnets.1.conv1`` is the attribute path
``encoder -> down_blocks -> 0 -> resnets -> 1 -> conv1``; module lists are ``nnx.List``).
Layout conversion is then decided by the layer type alone, and this table is the whole of it:

=================  ====================  ==================  ===============================
NNX layer          PyTorch tensor        NNX variable        transform (PyTorch -> NNX)
=================  ====================  ==================  ===============================
``nnx.Conv``       ``weight`` (O,I,H,W)  ``kernel``          ``transpose(2, 3, 1, 0)`` (HWIO)
``nnx.Conv``       ``bias``              ``bias``            identity
``nnx.Linear``     ``weight`` (O,I)      ``kernel``          ``transpose(1, 0)`` (IO)
``nnx.Linear``     ``bias``              ``bias``            identity
``nnx.GroupNorm``  ``weight`` / ``bias``  ``scale`` / ``bias``  identity
``nnx.LayerNorm``  ``weight`` / ``bias``  ``scale`` / ``bias``  identity
``nnx.BatchNorm``  ``weight`` / ``bias``  ``scale`` / ``bias``  identity
``nnx.BatchNorm``  ``running_mean``      ``mean``            identity
``nnx.BatchNorm``  ``running_var``       ``var``             identity
``nnx.BatchNorm``  ``num_batches_tracked``  (none)           ignored (a training counter)
other module       ``<name>``            ``<name>``          identity (a raw ``nnx.Param``)
=================  ====================  ==================  ===============================

Raw parameters keep PyTorch's layout and name: ``nn.MultiheadAttention``'s packed
``in_proj_weight`` (3D, D) / ``in_proj_bias`` and the ViT's ``class_token`` /
``encoder.pos_embedding`` (:mod:`sce_jax.models.vit`), the ``weight`` of FLUX's RMS norms
(:mod:`sce_jax.models.flux_layers`).

A 1x1 ``nnx.Linear`` also accepts a PyTorch 1x1 convolution weight of shape (O, I, 1, 1)
(old diffusers checkpoints stored attention projections that way); the trailing unit axes
are dropped before the transpose.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np
from flax import nnx

Path = tuple  # an NNX attribute path, e.g. ('encoder', 'conv_in', 'kernel')


def _conv_to_nnx(w: np.ndarray) -> np.ndarray:
    """OIHW -> HWIO."""
    return np.transpose(w, (2, 3, 1, 0))


def _conv_to_torch(k: np.ndarray) -> np.ndarray:
    """HWIO -> OIHW."""
    return np.transpose(k, (3, 2, 0, 1))


def _linear_to_nnx(w: np.ndarray) -> np.ndarray:
    """(out, in) -> (in, out); a (out, in, 1, 1) 1x1-conv weight is accepted too."""
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w[:, :, 0, 0]
    return np.transpose(w, (1, 0))


def _linear_to_torch(k: np.ndarray) -> np.ndarray:
    return np.transpose(k, (1, 0))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """How one PyTorch tensor becomes one NNX variable (and back)."""

    torch_key: str
    nnx_path: Path
    to_nnx: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


# A norm layer's affine parameters: PyTorch's weight is NNX's scale.
_NORM_AFFINE = {
    "scale": ("weight", _identity, _identity),
    "bias": ("bias", _identity, _identity),
}

# (layer type, NNX variable name) -> (PyTorch tensor name, to_nnx, to_torch)
_LAYER_RULES: dict[type, dict[str, tuple[str, Callable, Callable]]] = {
    nnx.Conv: {
        "kernel": ("weight", _conv_to_nnx, _conv_to_torch),
        "bias": ("bias", _identity, _identity),
    },
    nnx.Linear: {
        "kernel": ("weight", _linear_to_nnx, _linear_to_torch),
        "bias": ("bias", _identity, _identity),
    },
    nnx.GroupNorm: _NORM_AFFINE,
    nnx.LayerNorm: _NORM_AFFINE,
    nnx.BatchNorm: {
        **_NORM_AFFINE,
        "mean": ("running_mean", _identity, _identity),
        "var": ("running_var", _identity, _identity),
    },
}

# PyTorch tensors that carry no NNX state and are dropped on purpose (per layer type).
IGNORED_TORCH_LEAVES: dict[type, tuple[str, ...]] = {
    nnx.BatchNorm: ("num_batches_tracked",),
}


def _modules(model: nnx.Module) -> Iterator[tuple[Path, nnx.Module]]:
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            yield tuple(path), node


def _torch_prefix(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _direct_variables(module: nnx.Module) -> dict[str, nnx.Variable]:
    """The variables held directly by ``module`` (not by its children)."""
    out = {}
    for name, value in vars(module).items():
        if isinstance(value, nnx.Variable):
            out[name] = value
    return out


def tensor_rules(model: nnx.Module) -> tuple[list[TensorRule], list[str]]:
    """All rules for ``model``, and the PyTorch keys that may be present but are ignored."""
    rules: list[TensorRule] = []
    ignored: list[str] = []
    for path, module in _modules(model):
        prefix = _torch_prefix(path)
        join = (lambda leaf: f"{prefix}.{leaf}") if prefix else (lambda leaf: leaf)
        layer_rules = None
        for layer_type, table in _LAYER_RULES.items():
            if isinstance(module, layer_type):
                layer_rules = table
                ignored.extend(join(leaf) for leaf in IGNORED_TORCH_LEAVES.get(layer_type, ()))
                break
        for name, var in _direct_variables(module).items():
            if var.get_value() is None:
                continue
            if layer_rules is not None:
                if name not in layer_rules:
                    raise TypeError(
                        f"{type(module).__name__} at {prefix!r} has variable {name!r} "
                        "with no PyTorch counterpart in sce_jax.weights.torch_layout")
                leaf, to_nnx, to_torch = layer_rules[name]
            else:
                leaf, to_nnx, to_torch = name, _identity, _identity
            rules.append(TensorRule(join(leaf), path + (name,), to_nnx, to_torch))
    return rules, ignored


def nnx_to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The PyTorch-layout state dict of an NNX port (for writing diffusers/torch files)."""
    state = nnx.state(model)
    flat = {tuple(k): v for k, v in nnx.to_flat_state(state)}
    rules, _ = tensor_rules(model)
    out = {}
    for rule in rules:
        value = flat[rule.nnx_path]
        value = value.get_value()
        out[rule.torch_key] = np.ascontiguousarray(rule.to_torch(np.asarray(value)))
    return out
