"""diffusers model folders on local disk: finding them, reading them, writing them.

A diffusers *model folder* holds ``config.json`` (with ``_class_name``) and the weights,
``diffusion_pytorch_model.safetensors`` (or ``.bin``; or a variant such as
``diffusion_pytorch_model.fp16.safetensors``; or shards listed in
``diffusion_pytorch_model.safetensors.index.json``). A *pipeline folder* holds one model folder
per component; the autoencoder is its ``vae/``, the SD3 / FLUX transformer its ``transformer/``.

:func:`resolve_model_dir` accepts a model folder, a pipeline folder, or a Hugging Face repo id,
which is looked up in the local Hugging Face cache **only** -- nothing is ever downloaded. The
cache directory is chosen as ``huggingface_hub`` chooses it::

    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
    else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub

and a repo ``org/name`` lives there as ``models--org--name/`` with ``refs/<revision>`` (a file
holding a commit hash) and ``snapshots/<commit>/`` (the files).

:func:`load_diffusers_model` builds a port from such a folder (strict weight loading), and
:func:`save_pretrained_diffusers` writes a port as a folder that diffusers'
``from_pretrained`` loads.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, TypeVar

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.weights.model_config import ConfigError, config_from_dict, config_to_dict
from sce_jax.weights.strict import load_torch_state_dict_into
from sce_jax.weights.torch_files import read_state_dict
from sce_jax.weights.torch_layout import nnx_to_torch_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_STEM = "diffusion_pytorch_model"
PIPELINE_INDEX = "model_index.json"
# The diffusers release whose config.json layout save_pretrained_diffusers writes (and whose
# PyTorch classes the ports are checked against).
DIFFUSERS_FORMAT_VERSION = "0.42.1"
# The pipeline folder that holds a model of each ported class (named in error hints).
PIPELINE_COMPONENTS = {"AutoencoderKL": "vae", "AutoencoderTiny": "vae",
                       "SD3Transformer2DModel": "transformer",
                       "FluxTransformer2DModel": "transformer"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

M = TypeVar("M", bound=nnx.Module)


class DiffusersDirError(ValueError):
    """A path, repo id or folder that does not hold the diffusers model asked for."""


def hf_hub_cache_dir() -> tuple[str, str]:
    """The local Hugging Face hub cache directory, and where that choice came from."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var]), f"${var}"
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub"), "$HF_HOME/hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return (os.path.join(os.path.expanduser(os.environ["XDG_CACHE_HOME"]), "huggingface", "hub"),
                "$XDG_CACHE_HOME/huggingface/hub")
    return os.path.expanduser(os.path.join("~", ".cache", "huggingface", "hub")), "the default"


def looks_like_repo_id(text: str) -> bool:
    """``org/name`` or ``name`` in the characters Hugging Face allows (not a path)."""
    return bool(_REPO_ID.match(text)) and ".." not in text and "--" not in text


def cached_snapshot(repo_id: str, *, revision: str = "main") -> str:
    """The snapshot folder of ``repo_id`` at ``revision`` in the local Hugging Face cache.

    Args:
      repo_id: ``org/name``.
      revision: a ref name with a file under ``refs/`` (``main``), or a 40-hex commit hash.

    Raises:
      DiffusersDirError: naming the cache folder that was searched and how it was chosen.
    """
    cache, source = hf_hub_cache_dir()
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    where = f"Hugging Face cache {cache} (from {source})"
    if not os.path.isdir(repo_dir):
        raise DiffusersDirError(
            f"{repo_id!r} is neither a local folder nor in the {where}: no {repo_dir}. Nothing is "
            "downloaded: fetch it where there is internet (e.g. `huggingface-cli download "
            f"{repo_id}`) and point HF_HUB_CACHE at that cache, or pass a local folder")
    snapshots = os.path.join(repo_dir, "snapshots")
    available = sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []
    ref_file = os.path.join(repo_dir, "refs", revision)
    if os.path.isfile(ref_file):
        with open(ref_file) as f:
            commit = f.read().strip()
    elif _COMMIT.match(revision):
        commit = revision
    else:
        refs_dir = os.path.join(repo_dir, "refs")
        refs = sorted(os.listdir(refs_dir)) if os.path.isdir(refs_dir) else []
        raise DiffusersDirError(
            f"{repo_id!r} in the {where}: no ref {revision!r} ({ref_file} is missing; refs: "
            f"{refs}; snapshots: {available}); pass revision=<one of the snapshots>")
    snapshot = os.path.join(snapshots, commit)
    if not os.path.isdir(snapshot):
        raise DiffusersDirError(
            f"{repo_id!r} in the {where}: {revision!r} points to commit {commit!r}, but "
            f"{snapshot} does not exist (snapshots: {available})")
    return snapshot


def resolve_model_dir(path_or_repo_id: str | os.PathLike, *, subfolder: str | None = None,
                      default_subfolder: str = "vae", revision: str = "main") -> str:
    """The folder that holds the model's ``config.json``.

    Args:
      path_or_repo_id: a model folder, a pipeline folder, or a repo id in the local HF cache.
      subfolder: the component folder inside it (e.g. ``"vae"``); by default the folder itself
        when it has a ``config.json``, else its ``default_subfolder`` when that has one.
      default_subfolder: the pipeline component to use by default.
      revision: for repo ids: the ref or commit in the cache.

    Raises:
      DiffusersDirError: for a missing folder, an uncached repo id, or a folder without config.
    """
    text = os.path.expanduser(os.fspath(path_or_repo_id))
    if os.path.isdir(text):
        root = os.path.abspath(text)
    elif os.path.exists(text):
        raise DiffusersDirError(
            f"{text}: is a file; expected a diffusers model folder (config.json + "
            f"{WEIGHTS_STEM}.safetensors), a pipeline folder, or a repo id")
    elif looks_like_repo_id(text):
        root = cached_snapshot(text, revision=revision)
    else:
        raise DiffusersDirError(f"{text}: no such folder (and not a Hugging Face repo id)")

    if subfolder:
        model_dir = os.path.join(root, subfolder)
        if not os.path.isfile(os.path.join(model_dir, CONFIG_NAME)):
            raise DiffusersDirError(f"{model_dir}: no {CONFIG_NAME} (subfolder {subfolder!r} "
                                    f"of {text} is not a diffusers model folder)")
        return model_dir
    if os.path.isfile(os.path.join(root, CONFIG_NAME)):
        return root
    component = os.path.join(root, default_subfolder)
    if os.path.isfile(os.path.join(component, CONFIG_NAME)):
        return component
    present = sorted(os.listdir(root))[:20]
    raise DiffusersDirError(
        f"{root}: no {CONFIG_NAME} (not a diffusers model folder) and no "
        f"{default_subfolder}/{CONFIG_NAME} (not a pipeline folder with that component); "
        f"it holds {present}")


def read_model_config(model_dir: str, *, class_name: str) -> dict[str, Any]:
    """The parsed ``config.json`` of ``model_dir``; its ``_class_name`` must be ``class_name``."""
    path = os.path.join(model_dir, CONFIG_NAME)
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise DiffusersDirError(f"{model_dir}: no {CONFIG_NAME}; not a diffusers model folder") from None
    except json.JSONDecodeError as e:
        raise DiffusersDirError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise DiffusersDirError(f"{path}: expected a JSON object, found {type(config).__name__}")
    found = config.get("_class_name")
    component = PIPELINE_COMPONENTS.get(class_name, "vae")
    if found is not None and found != class_name:
        hint = ""
        if found in ("AutoencoderKL", "AutoencoderTiny"):
            module = "autoencoder_kl" if found == "AutoencoderKL" else "autoencoder_tiny"
            hint = f"; load it with sce_jax.models.{module}.{found}"
        elif os.path.basename(os.path.normpath(model_dir)) != component:
            hint = f"; for a pipeline, point to the pipeline folder or its {component}/ folder"
        raise DiffusersDirError(
            f"{path}: describes a model of class {found} (its _class_name), not {class_name}{hint}")
    return config


def _present(model_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(model_dir) if n.startswith(WEIGHTS_STEM))


def weight_files(model_dir: str, *, variant: str | None = None) -> list[str]:
    """The weight file(s) of a model folder, in diffusers' order of preference.

    Without ``variant``: ``diffusion_pytorch_model.safetensors``, its sharded index, ``.bin``,
    its sharded index; and when none of those exists, the one variant present
    (``diffusion_pytorch_model.<variant>.safetensors`` / ``.bin``, e.g. ``fp16``). With
    ``variant``: only that variant's files.
    """
    stem = WEIGHTS_STEM if variant is None else f"{WEIGHTS_STEM}.{variant}"
    index_suffix = ".json" if variant is None else f".{variant}.json"
    for ext in ("safetensors", "bin"):
        single = os.path.join(model_dir, f"{stem}.{ext}")
        if os.path.isfile(single):
            return [single]
        index = os.path.join(model_dir, f"{WEIGHTS_STEM}.{ext}.index{index_suffix}")
        if os.path.isfile(index):
            return _shards(index, model_dir)
    if variant is None:
        found = {}
        for name in _present(model_dir):
            parts = name.split(".")
            if len(parts) == 3 and parts[2] in ("safetensors", "bin"):
                found.setdefault(parts[1], []).append(name)
        if len(found) == 1:
            return weight_files(model_dir, variant=next(iter(found)))
        if len(found) > 1:
            raise DiffusersDirError(
                f"{model_dir}: no {WEIGHTS_STEM}.safetensors/.bin but several variants "
                f"{sorted(found)}; choose one with variant=...")
    raise DiffusersDirError(
        f"{model_dir}: no weights: expected {stem}.safetensors or {stem}.bin (or a sharded "
        f"index); the folder holds {_present(model_dir) or sorted(os.listdir(model_dir))[:20]}")


def _shards(index_path: str, model_dir: str) -> list[str]:
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DiffusersDirError(f"{index_path}: not a sharded-weights index ({e!r})") from None
    files = [os.path.join(model_dir, name) for name in sorted(set(weight_map.values()))]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DiffusersDirError(f"{index_path}: lists shard(s) that do not exist: {missing}")
    return files


def read_model_state_dict(model_dir: str, *, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of the model folder's weights, as numpy arrays in PyTorch layout."""
    state_dict: dict[str, np.ndarray] = {}
    for path in weight_files(model_dir, variant=variant):
        state_dict.update(read_state_dict(path))
    return state_dict


def load_diffusers_model(
    cls: type[M],
    path_or_repo_id: str | os.PathLike,
    *,
    class_name: str,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    subfolder: str | None = None,
    default_subfolder: str = "vae",
    revision: str = "main",
    variant: str | None = None,
    rename: Callable[[str], str] | None = None,
) -> M:
    """Builds ``cls`` from a diffusers folder / pipeline folder / cached repo id, strictly.

    The model is built abstractly (no random initialisation) and every parameter is then
    filled from the checkpoint; a missing, unexpected or mis-shaped tensor raises
    :class:`~sce_jax.weights.strict.WeightMismatchError` with the full lists.

    Args:
      cls: the port class (``config_class`` attribute, ``cls(config, *, rngs, dtype,
        param_dtype)`` constructor).
      class_name: the diffusers class the folder's ``config.json`` must name.
      default_subfolder: the pipeline component used when the folder itself is not a model
        folder (``"vae"``, ``"transformer"``).
      rename: maps legacy checkpoint key names to current ones (see the port's module).
    """
    model_dir = resolve_model_dir(path_or_repo_id, subfolder=subfolder,
                                  default_subfolder=default_subfolder, revision=revision)
    raw = read_model_config(model_dir, class_name=class_name)
    where = f"{class_name} config {os.path.join(model_dir, CONFIG_NAME)}"
    try:
        config = config_from_dict(cls.config_class, raw, what=where)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    state_dict = read_model_state_dict(model_dir, variant=variant)
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), dtype=dtype,
                                       param_dtype=param_dtype))
    return load_torch_state_dict_into(model, state_dict, what=f"{class_name} in {model_dir}",
                                      rename=rename)


def _numpy_for_file(x: np.ndarray) -> np.ndarray:
    """float16/float32 stay; other floating types (bfloat16) are written as float32."""
    if x.dtype.kind == "f" and x.dtype not in (np.float16, np.float32, np.float64):
        return x.astype(np.float32)
    if x.dtype.kind not in "fiub":  # ml_dtypes types report kind 'V'
        return x.astype(np.float32)
    return np.ascontiguousarray(x)


def save_pretrained_diffusers(model: nnx.Module, directory: str | os.PathLike) -> str:
    """Writes ``model`` as a diffusers model folder: ``config.json`` + safetensors weights.

    diffusers' ``<Class>.from_pretrained(directory)`` loads the result. The class name written
    to ``_class_name`` is ``type(model).diffusers_class_name`` (else the class name); config
    fields set to ``None`` that the diffusers class derives itself are dropped when the model
    lists them in ``diffusers_derived_fields``. Existing files of those two names are replaced.

    Returns:
      the absolute folder path.
    """
    from safetensors.numpy import save_file

    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    cls = type(model)
    config = config_to_dict(model.config)
    for name in getattr(cls, "diffusers_derived_fields", ()):
        config.pop(name, None)
    config = {"_class_name": getattr(cls, "diffusers_class_name", cls.__name__),
              "_diffusers_version": DIFFUSERS_FORMAT_VERSION, **config}
    state_dict = {k: _numpy_for_file(np.asarray(v))
                  for k, v in nnx_to_torch_state_dict(model).items()}
    weights = os.path.join(directory, f"{WEIGHTS_STEM}.safetensors")
    save_file(state_dict, weights + ".tmp", metadata={"format": "pt"})
    os.replace(weights + ".tmp", weights)
    config_path = os.path.join(directory, CONFIG_NAME)
    with open(config_path + ".tmp", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(config_path + ".tmp", config_path)
    return directory
