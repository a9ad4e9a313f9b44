"""Precomputed prompt embeddings: the context a text-conditioned prior takes, in an ``.npz``.

The text encoders (CLIP-L, CLIP-G, T5-XXL for SD3) are not ported: ``scripts/encode_prompt.py``
runs them once with PyTorch + diffusers and writes::

    encoder_hidden_states   (N, L, D)  float32   SD3's prompt_embeds (D = joint_attention_dim)
    pooled_projections      (N, P)     float32   SD3's pooled_prompt_embeds

for N prompts (usually one, which the prior broadcasts over the batch). A run config names the
file; :func:`load_prompt_embeddings` reads it back as the prior's context dict.
"""

from __future__ import annotations

import os

import numpy as np

CONTEXT_KEYS = ("encoder_hidden_states", "pooled_projections")
_NDIMS = {"encoder_hidden_states": 3, "pooled_projections": 2}


class PromptEmbeddingsError(ValueError):
    """A prompt-embeddings file that is missing or does not hold what the prior needs."""


def check_prompt_embeddings(arrays: dict[str, np.ndarray], *, where: str) -> dict[str, np.ndarray]:
    """The two arrays as float32 after checking rank, a shared batch and finiteness."""
    out = {}
    for key in CONTEXT_KEYS:
        x = np.asarray(arrays[key])
        if x.ndim != _NDIMS[key] or x.dtype.kind != "f":
            raise PromptEmbeddingsError(
                f"{where}: {key!r} must be a float array of rank {_NDIMS[key]}, got "
                f"{x.dtype} of shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise PromptEmbeddingsError(f"{where}: {key!r} holds NaN or infinite values")
        out[key] = x.astype(np.float32)
    batches = {k: v.shape[0] for k, v in out.items()}
    if len(set(batches.values())) != 1:
        raise PromptEmbeddingsError(f"{where}: the arrays disagree on the number of prompts "
                                    f"{batches}")
    return out


def load_prompt_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"encoder_hidden_states": (N, L, D), "pooled_projections": (N, P)}`` from an .npz.

    Raises:
      PromptEmbeddingsError: for a missing or unreadable file, a missing key, a wrong rank,
        non-float or non-finite values, or arrays that disagree on N.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PromptEmbeddingsError(
            f"{path}: no such prompt-embeddings file; write one with scripts/encode_prompt.py "
            "--pipeline=<SD3 pipeline folder> --out=<file>.npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # zipfile / numpy raise several types for a bad file
        raise PromptEmbeddingsError(f"{path}: not a readable .npz file ({e})") from None
    missing = [k for k in CONTEXT_KEYS if k not in arrays]
    if missing:
        raise PromptEmbeddingsError(f"{path}: missing key(s) {missing}; it holds "
                                    f"{sorted(arrays)} (expected {list(CONTEXT_KEYS)})")
    return check_prompt_embeddings(arrays, where=path)


def save_prompt_embeddings(path: str | os.PathLike, encoder_hidden_states: np.ndarray,
                           pooled_projections: np.ndarray, **metadata: str) -> str:
    """Writes the two arrays (float32) and string ``metadata`` (the prompt, the pipeline
    folder) to ``path`` atomically (a temporary name, then a rename). Returns the path."""
    path = os.fspath(path)
    arrays = check_prompt_embeddings(
        {"encoder_hidden_states": encoder_hidden_states,
         "pooled_projections": pooled_projections}, where=path)
    extra = {k: np.asarray(str(v)) for k, v in metadata.items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **extra)
    os.replace(tmp, path)
    return path
