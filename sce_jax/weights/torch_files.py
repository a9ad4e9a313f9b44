"""Reading PyTorch-format weight files into numpy state dicts.

``.safetensors`` files are read with safetensors' numpy API (no PyTorch needed). ``.bin``,
``.pth`` and ``.pt`` files are pickles of torch tensors: reading them needs PyTorch, and a clear
error says so when it is missing. Training checkpoints that wrap the weights
(``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel's ``module.`` prefix are unwrapped.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

TORCH_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class WeightFileError(ValueError):
    """A weight file that cannot be read as a state dict."""


def _unwrap(obj, path: str) -> Mapping:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(hasattr(v, "shape") for v in obj.values()):
            return obj
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if isinstance(obj, Mapping) and obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightFileError(
        f"{path}: not a state dict of tensors (top level: {keys}); expected a mapping of "
        f"tensors, optionally under one of {WRAPPER_KEYS}")


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str = "module.") -> dict[str, np.ndarray]:
    """Drops ``prefix`` from every key when *all* keys carry it (DataParallel checkpoints)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """numpy arrays of a safetensors file; bfloat16 tensors (which numpy lacks) become float32."""
    from safetensors import safe_open
    try:
        out = {}
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.dtype.kind == "V" or tensor.dtype.name == "bfloat16":
                    tensor = tensor.astype(np.float32)
                out[key] = tensor
        return out
    except Exception as e:  # safetensors raises its own error types
        if "bfloat16" not in str(e) and "bf16" not in str(e).lower():
            raise WeightFileError(f"{path}: not a readable safetensors file ({e})") from None
    with safe_open(path, framework="flax") as f:  # jax has bfloat16
        return {key: np.asarray(f.get_tensor(key).astype("float32")) for key in f.keys()}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``.safetensors``, ``.bin``, ``.pth``, ``.pt`` or ``.ckpt`` file as numpy arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: no such weight file")
    if path.endswith(".safetensors"):
        return strip_prefix(_read_safetensors(path))
    if path.endswith(TORCH_PICKLE_SUFFIXES):
        try:
            import torch
        except ImportError:
            raise WeightFileError(
                f"{path}: reading PyTorch pickles needs torch (pip install torch); or convert the "
                "file once with scripts/convert_weights.py on a machine that has it") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightFileError(f"{path}: torch.load failed ({e})") from None
        sd = _unwrap(obj, path)
        return strip_prefix({k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
                             for k, v in sd.items()})
    raise WeightFileError(
        f"{path}: unknown weight file type; expected .safetensors or one of {TORCH_PICKLE_SUFFIXES}")
