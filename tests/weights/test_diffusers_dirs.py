"""Finding and reading diffusers folders: model folders, pipelines, the local HF cache, errors.

The folders are written with save_pretrained_diffusers from a port with random weights (no
torch needed); tests/models/test_autoencoder_kl.py checks that diffusers itself reads and writes
the same layout.
"""

import json
import os

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from sce_jax.weights import diffusers_dirs
from sce_jax.weights.diffusers_dirs import (
    DiffusersDirError,
    hf_hub_cache_dir,
    resolve_model_dir,
    save_pretrained_diffusers,
)
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import WeightMismatchError, load_torch_state_dict_into
from sce_jax.weights.torch_layout import tensor_rules

CONFIG = AutoencoderKLConfig(block_out_channels=(4, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=2,
                             latent_channels=4, scaling_factor=0.5)
WEIGHTS = "diffusion_pytorch_model.safetensors"
CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


def random_port(seed: int = 0) -> AutoencoderKL:
    """A port filled with seeded random numbers (built abstractly: fast, no init compile)."""
    model = nnx.eval_shape(lambda: AutoencoderKL(CONFIG, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    rules, _ = tensor_rules(model)
    flat = {tuple(k): v for k, v in nnx.to_flat_state(nnx.state(model))}
    state_dict = {r.torch_key: r.to_torch(rng.normal(size=flat[r.nnx_path].get_value().shape)
                                          .astype(np.float32)) for r in rules}
    return load_torch_state_dict_into(model, state_dict)


@pytest.fixture(scope="module")
def port():
    return random_port()


@pytest.fixture(scope="module")
def model_folder(port, tmp_path_factory):
    return save_pretrained_diffusers(port, tmp_path_factory.mktemp("model") / "vae")


@pytest.fixture
def clean_cache_env(monkeypatch):
    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def flat_state(model):
    return {tuple(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model))}


def assert_same_weights(model, port):
    a, b = flat_state(model), flat_state(port)
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


def copy_folder(src, dst, *, weights=None, config=None):
    """Copies a model folder, optionally with changed weights (a dict) or config (a dict)."""
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        base_config = json.load(f)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(base_config if config is None else config, f)
    state = load_file(os.path.join(src, WEIGHTS)) if weights is None else weights
    save_file(state, os.path.join(dst, WEIGHTS))
    return str(dst)


def test_model_folder_round_trip(port, model_folder):
    with open(os.path.join(model_folder, "config.json")) as f:
        config = json.load(f)
    assert config["_class_name"] == "AutoencoderKL"
    assert config["block_out_channels"] == [4, 8] and config["scaling_factor"] == 0.5
    loaded = AutoencoderKL.from_pretrained(model_folder)
    assert loaded.config == CONFIG
    assert_same_weights(loaded, port)


def test_pipeline_folder_uses_its_vae(port, model_folder, tmp_path):
    pipeline = tmp_path / "pipeline"
    copy_folder(model_folder, pipeline / "vae")
    (pipeline / "unet").mkdir()
    (pipeline / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (pipeline / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKL"]}))
    assert resolve_model_dir(pipeline) == str(pipeline / "vae")
    assert_same_weights(AutoencoderKL.from_pretrained(pipeline), port)
    assert_same_weights(AutoencoderKL.from_pretrained(str(pipeline), subfolder="vae"), port)
    with pytest.raises(DiffusersDirError) as error:
        AutoencoderKL.from_pretrained(pipeline / "unet")
    message = str(error.value)
    assert (f"{pipeline / 'unet' / 'config.json'}: describes a model of class UNet2DConditionModel "
            "(its _class_name), not AutoencoderKL") in message
    assert "point to the pipeline folder or its vae/ folder" in message
    with pytest.raises(DiffusersDirError, match="subfolder 'text_encoder'"):
        AutoencoderKL.from_pretrained(pipeline, subfolder="text_encoder")


def _fake_cache_repo(cache, repo_id, model_folder, commit="0123456789abcdef0123456789abcdef01234567"):
    """The hub cache layout: blobs, snapshots/<commit>/vae/* as symlinks to blobs, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    vae = repo / "snapshots" / commit / "vae"
    vae.mkdir(parents=True)
    for i, name in enumerate(("config.json", WEIGHTS)):
        blob = repo / "blobs" / f"blob{i}"
        blob.write_bytes(open(os.path.join(model_folder, name), "rb").read())
        os.symlink(os.path.relpath(blob, vae), vae / name)
    return commit


def test_repo_id_resolves_from_the_local_cache(port, model_folder, tmp_path, clean_cache_env):
    cache = tmp_path / "hub"
    commit = _fake_cache_repo(cache, "org/tiny-vae", model_folder)
    clean_cache_env.setenv("HF_HUB_CACHE", str(cache))
    assert hf_hub_cache_dir() == (str(cache), "$HF_HUB_CACHE")
    assert_same_weights(AutoencoderKL.from_pretrained("org/tiny-vae"), port)
    assert_same_weights(AutoencoderKL.from_pretrained("org/tiny-vae", revision=commit), port)
    with pytest.raises(DiffusersDirError) as error:
        AutoencoderKL.from_pretrained("org/tiny-vae", revision="v2")
    assert "no ref 'v2'" in str(error.value) and commit in str(error.value)


def test_cache_dir_follows_huggingface_hub_precedence(tmp_path, clean_cache_env):
    clean_cache_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache_dir()[0] == str(tmp_path / "xdg" / "huggingface" / "hub")
    clean_cache_env.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache_dir() == (str(tmp_path / "home" / "hub"), "$HF_HOME/hub")
    clean_cache_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_hub_cache_dir() == (str(tmp_path / "hub"), "$HF_HUB_CACHE")


def test_uncached_repo_id_names_the_cache_searched(tmp_path, clean_cache_env):
    clean_cache_env.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(DiffusersDirError) as error:
        AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-mse")
    message = str(error.value)
    expected_dir = tmp_path / "home" / "hub" / "models--stabilityai--sd-vae-ft-mse"
    assert "'stabilityai/sd-vae-ft-mse' is neither a local folder nor in the Hugging Face cache" in message
    assert f"{tmp_path / 'home' / 'hub'} (from $HF_HOME/hub)" in message
    assert f"no {expected_dir}" in message and "Nothing is downloaded" in message


def test_fp16_variant_is_used_when_it_is_the_only_weights(port, model_folder, tmp_path):
    folder = tmp_path / "fp16"
    copy_folder(model_folder, folder)
    half = {k: v.astype(np.float16) for k, v in load_file(str(folder / WEIGHTS)).items()}
    os.remove(folder / WEIGHTS)
    save_file(half, str(folder / "diffusion_pytorch_model.fp16.safetensors"))
    loaded = AutoencoderKL.from_pretrained(folder)
    original = flat_state(port)
    for path, value in flat_state(loaded).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, original[path].astype(np.float16).astype(np.float32))
    save_file(half, str(folder / "diffusion_pytorch_model.bf16.safetensors"))
    with pytest.raises(DiffusersDirError, match=r"several variants \['bf16', 'fp16'\]"):
        AutoencoderKL.from_pretrained(folder)
    assert_same_weights(AutoencoderKL.from_pretrained(folder, variant="fp16"), loaded)


def test_sharded_weights_load(port, model_folder, tmp_path):
    folder = tmp_path / "sharded"
    copy_folder(model_folder, folder)
    state = load_file(str(folder / WEIGHTS))
    os.remove(folder / WEIGHTS)
    keys = sorted(state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(folder / name))
    index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_weights(AutoencoderKL.from_pretrained(folder), port)


def test_torch_bin_weights_load(port, model_folder, tmp_path):
    torch = pytest.importorskip("torch")
    folder = tmp_path / "bin"
    copy_folder(model_folder, folder)
    state = load_file(str(folder / WEIGHTS))
    os.remove(folder / WEIGHTS)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, folder / "diffusion_pytorch_model.bin")
    assert_same_weights(AutoencoderKL.from_pretrained(folder), port)


def test_folder_without_config(tmp_path):
    (tmp_path / "empty" / "weights").mkdir(parents=True)
    with pytest.raises(DiffusersDirError) as error:
        AutoencoderKL.from_pretrained(tmp_path / "empty")
    message = str(error.value)
    assert f"{tmp_path / 'empty'}: no config.json (not a diffusers model folder)" in message
    assert "no vae/config.json" in message and "['weights']" in message


def test_missing_path_and_file_paths(tmp_path, model_folder):
    with pytest.raises(DiffusersDirError, match="no such folder"):
        AutoencoderKL.from_pretrained(str(tmp_path / "nope" / "vae"))
    with pytest.raises(DiffusersDirError, match="is a file; expected a diffusers model folder"):
        AutoencoderKL.from_pretrained(os.path.join(model_folder, WEIGHTS))


def test_folder_without_weights(tmp_path, model_folder):
    folder = tmp_path / "noweights"
    folder.mkdir()
    (folder / "config.json").write_text(open(os.path.join(model_folder, "config.json")).read())
    with pytest.raises(DiffusersDirError, match="no weights: expected diffusion_pytorch_model.safetensors"):
        AutoencoderKL.from_pretrained(folder)


def test_config_of_the_tiny_autoencoder_points_to_its_class(tmp_path, model_folder):
    folder = copy_folder(model_folder, tmp_path / "taesd", config={"_class_name": "AutoencoderTiny"})
    with pytest.raises(DiffusersDirError) as error:
        AutoencoderKL.from_pretrained(folder)
    message = str(error.value)
    assert "describes a model of class AutoencoderTiny (its _class_name), not AutoencoderKL" in message
    assert "load it with sce_jax.models.autoencoder_tiny.AutoencoderTiny" in str(error.value)


def test_missing_tensor_is_listed(tmp_path, model_folder):
    state = load_file(os.path.join(model_folder, WEIGHTS))
    del state["decoder.mid_block.attentions.0.to_q.weight"]
    folder = copy_folder(model_folder, tmp_path / "missing", weights=state)
    with pytest.raises(WeightMismatchError) as error:
        AutoencoderKL.from_pretrained(folder)
    message = str(error.value)
    assert f"the weights do not fit AutoencoderKL in {folder}:" in message
    assert "missing from the checkpoint (1):\n    decoder.mid_block.attentions.0.to_q.weight" in message


def test_misshaped_tensor_is_listed(tmp_path, model_folder):
    state = load_file(os.path.join(model_folder, WEIGHTS))
    state["encoder.conv_in.weight"] = np.zeros((4, 1, 3, 3), np.float32)  # 1 input channel, not 3
    folder = copy_folder(model_folder, tmp_path / "misshaped", weights=state)
    with pytest.raises(WeightMismatchError) as error:
        AutoencoderKL.from_pretrained(folder)
    assert "wrong shape (1)" in str(error.value)
    assert "encoder.conv_in.weight: (4, 1, 3, 3) vs (4, 3, 3, 3)" in str(error.value)


@pytest.mark.parametrize("field, value, expected", [
    ("act_fn", "tanh", "AutoencoderKLConfig.act_fn='tanh' is not supported; expected one of "
                       "['gelu', 'mish', 'relu', 'silu', 'swish']"),
    ("down_block_types", ["DownEncoderBlock2D", "CrossAttnDownBlock2D"],
     "only ['DownEncoderBlock2D'] entries (unsupported: ['CrossAttnDownBlock2D'])"),
    ("norm_num_groups", 3, "norm_num_groups=3 is not supported; expected a divisor"),
    ("latents_mean", [0.1, 0.2], "latents_mean=(0.1, 0.2) is not supported; expected None or 4 values"),
])
def test_unsupported_config_value_names_file_field_and_value(tmp_path, model_folder, field, value,
                                                            expected):
    with open(os.path.join(model_folder, "config.json")) as f:
        config = json.load(f)
    config[field] = value
    folder = copy_folder(model_folder, tmp_path / "bad", config=config)
    with pytest.raises(ConfigError) as error:
        AutoencoderKL.from_pretrained(folder)
    message = str(error.value)
    assert message.startswith(f"AutoencoderKL config {os.path.join(folder, 'config.json')}: ")
    assert expected in message


def test_unknown_config_key_is_named(tmp_path, model_folder):
    with open(os.path.join(model_folder, "config.json")) as f:
        config = json.load(f)
    config["cross_attention_dim"] = 768
    folder = copy_folder(model_folder, tmp_path / "unknown", config=config)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['cross_attention_dim'\]"):
        AutoencoderKL.from_pretrained(folder)


def test_repo_id_syntax():
    assert diffusers_dirs.looks_like_repo_id("stabilityai/sd-vae-ft-mse")
    assert diffusers_dirs.looks_like_repo_id("madebyollin/taesd")
    assert not diffusers_dirs.looks_like_repo_id("/abs/path")
    assert not diffusers_dirs.looks_like_repo_id("a/b/c")
    assert not diffusers_dirs.looks_like_repo_id("../vae")
