"""SD3Transformer2DModel port vs diffusers' PyTorch SD3Transformer2DModel on tiny random models.

Each case builds the diffusers model from a seed with every parameter *and* the position-
embedding buffer randomised (so nothing hides behind a zero-initialised AdaLN-Zero gate or
the default sincos grid), writes it with diffusers' ``save_pretrained`` into a temporary
folder, loads that folder with the port's ``from_pretrained`` and compares the forward pass
on latents of several sizes: the training size, non-square, and smaller than trained (the
position grid is centre-cropped). The SD3.5 case has qk RMS-norms and a dual-attention block.
Loading errors, sharded weights in a pipeline folder, bfloat16 compute and the prior wrapper
are checked on the same models.
"""

import functools
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from sce_jax.models.sd3_transformer import (
    SD3Transformer2DModel,
    SD3TransformerConfig,
    sincos_position_embedding,
)
from sce_jax.priors.sd3 import sd3_prior
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import WeightMismatchError
from tests.fast_compile import run_jitted

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.torch

TOL = 1e-4  # max abs error relative to max(1, max |expected|), float32
BF16_TOL = 3e-2  # same measure, bfloat16 compute vs diffusers float32 (measured: 1.9e-2)
WEIGHTS = "diffusion_pytorch_model.safetensors"

TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16,
            pooled_projection_dim=10, out_channels=4, pos_embed_max_size=6)
CASES = {
    # SD3: no qk-norm, no dual attention; sizes: trained, non-square, smaller
    "sd3": (dict(TINY), [(8, 8), (6, 10), (4, 4)]),
    # SD3.5: per-head RMS norms, dual attention in blocks 0 and 1 (not in the pre-only last)
    "sd35": (dict(TINY, qk_norm="rms_norm", dual_attention_layers=(0, 1), out_channels=None),
             [(8, 8), (10, 4)]),
}


def max_rel_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def torch_model(config: dict, seed: int):
    torch.manual_seed(seed)
    model = diffusers.SD3Transformer2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        model.pos_embed.pos_embed.normal_(0.0, 1.0)
    return model


def inputs(config: dict, size, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = size
    return dict(
        z=rng.standard_normal((batch, h, w, config["in_channels"])).astype(np.float32),
        context=rng.standard_normal((batch, 5, config["joint_attention_dim"])).astype(np.float32),
        pooled=rng.standard_normal((batch, config["pooled_projection_dim"])).astype(np.float32),
        timestep=rng.uniform(0, 1000, (batch,)).astype(np.float32))


def torch_forward(model, x) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x["z"].transpose(0, 3, 1, 2))),
                    torch.from_numpy(x["context"]), torch.from_numpy(x["pooled"]),
                    torch.from_numpy(x["timestep"])).sample
    return out.numpy().transpose(0, 2, 3, 1)


def port_forward(model, x) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return run_jitted(lambda s, *a: nnx.merge(graphdef, s)(*a), state,
                      *(jnp.asarray(x[k]) for k in ("z", "context", "pooled", "timestep")))


@functools.lru_cache(maxsize=None)
def case(name: str, folder: str) -> dict:
    config, sizes = CASES[name]
    reference = torch_model(config, seed=len(name))
    path = os.path.join(folder, name)
    reference.save_pretrained(path)
    return dict(config=config, sizes=sizes, torch=reference, folder=path,
                port=SD3Transformer2DModel.from_pretrained(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sd3"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_diffusers(name, folder):
    c = case(name, folder)
    for size in c["sizes"]:
        x = inputs(c["config"], size)
        error = max_rel_error(port_forward(c["port"], x), torch_forward(c["torch"], x))
        assert error < TOL, f"{name} at {size}: {error:.3g}"


def test_bfloat16_forward_is_close_to_float32(folder):
    c = case("sd35", folder)
    x = inputs(c["config"], (8, 8))
    port16 = SD3Transformer2DModel.from_pretrained(c["folder"], dtype=jnp.bfloat16)
    out16 = port_forward(port16, x)
    assert out16.dtype == np.float32
    error = max_rel_error(out16, torch_forward(c["torch"], x))
    assert 1e-4 < error < BF16_TOL, error  # it did compute in bfloat16, and stayed close


def test_prior_is_the_transformer_at_1000_t_with_a_broadcast_prompt(folder):
    c = case("sd3", folder)
    x = inputs(c["config"], (6, 10), batch=3)
    t = np.array([1.0, 0.5, 0.013], np.float32)
    context = {"encoder_hidden_states": x["context"][:1], "pooled_projections": x["pooled"][:1]}
    prior = sd3_prior(c["port"])
    assert prior.needs_context
    v = run_jitted(prior.velocity_fn, prior.params, jnp.asarray(x["z"]), jnp.asarray(t),
                   jax_tree(context))
    expected = torch_forward(c["torch"], dict(
        z=x["z"], context=np.repeat(x["context"][:1], 3, 0),
        pooled=np.repeat(x["pooled"][:1], 3, 0), timestep=1000 * t))
    assert max_rel_error(v, expected) < TOL
    with pytest.raises(ValueError, match="needs a context dict"):
        prior.velocity(jnp.asarray(x["z"]), jnp.asarray(t), None)


def jax_tree(context):
    return {k: jnp.asarray(v) for k, v in context.items()}


def test_sharded_weights_in_a_pipeline_folder(folder, tmp_path):
    c = case("sd3", folder)
    pipeline = tmp_path / "pipeline"
    c["torch"].save_pretrained(pipeline / "transformer", max_shard_size="20KB")
    (pipeline / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusion3Pipeline",
         "transformer": ["diffusers", "SD3Transformer2DModel"]}))
    files = os.listdir(pipeline / "transformer")
    assert "diffusion_pytorch_model.safetensors.index.json" in files
    assert sum(n.endswith(".safetensors") for n in files) > 2
    loaded = SD3Transformer2DModel.from_pretrained(str(pipeline))
    x = inputs(c["config"], (4, 6))
    np.testing.assert_array_equal(port_forward(loaded, x), port_forward(c["port"], x))


def test_save_pretrained_is_what_diffusers_loads(folder, tmp_path):
    c = case("sd35", folder)
    c["port"].save_pretrained(tmp_path / "saved")
    again = diffusers.SD3Transformer2DModel.from_pretrained(tmp_path / "saved").eval()
    for key, value in c["torch"].state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key].numpy(), value.numpy())
    assert again.config.qk_norm == "rms_norm"
    assert list(again.config.dual_attention_layers) == [0, 1]


def test_strict_loading_lists_missing_unexpected_and_misshaped(folder, tmp_path):
    c = case("sd3", folder)
    bad = tmp_path / "bad"
    shutil.copytree(c["folder"], bad)
    state = load_file(str(bad / WEIGHTS))
    del state["transformer_blocks.2.attn.add_q_proj.weight"]
    state["transformer_blocks.2.attn.to_add_out.weight"] = np.zeros((16, 16), np.float32)
    state["pos_embed.pos_embed"] = np.zeros((1, 25, 16), np.float32)
    save_file(state, str(bad / WEIGHTS))
    with pytest.raises(WeightMismatchError) as info:
        SD3Transformer2DModel.from_pretrained(str(bad))
    e = info.value
    assert e.missing == ["transformer_blocks.2.attn.add_q_proj.weight"]
    assert e.unexpected == ["transformer_blocks.2.attn.to_add_out.weight"]  # pre-only block
    assert e.misshaped == [("pos_embed.pos_embed", (1, 25, 16), (1, 36, 16))]


def test_a_folder_of_another_class_is_refused_with_the_pipeline_hint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="not SD3Transformer2DModel.*its transformer/ folder"):
        SD3Transformer2DModel.from_pretrained(str(tmp_path))


def test_initial_position_grid_is_diffusers_sincos():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed
    expected = get_2d_sincos_pos_embed(16, 6, base_size=4, output_type="pt").numpy()
    np.testing.assert_allclose(sincos_position_embedding(16, 6, 4), expected, atol=1e-6)


def test_inputs_the_position_grid_or_patches_cannot_hold_are_refused(folder):
    c = case("sd3", folder)
    with pytest.raises(ValueError, match="more than pos_embed_max_size=6"):
        port_forward(c["port"], inputs(c["config"], (14, 8)))
    with pytest.raises(ValueError, match="not a multiple of the patch size 2"):
        port_forward(c["port"], inputs(c["config"], (7, 8)))
    x = inputs(c["config"], (8, 8))
    x["pooled"] = x["pooled"][:, :3]
    with pytest.raises(ValueError, match=r"pooled_projections: expected \(2, 10\)"):
        port_forward(c["port"], x)


@pytest.mark.parametrize("change, field", [
    (dict(qk_norm="l2"), "qk_norm"),
    (dict(caption_projection_dim=12), "caption_projection_dim"),
    (dict(dual_attention_layers=(3,)), "dual_attention_layers"),
])
def test_unsupported_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=f"SD3TransformerConfig.{field}="):
        SD3TransformerConfig(**dict(TINY, **change))


def test_latent_gradient_matches_torch_autograd(folder):
    """The search may differentiate through the prior: d sum(v * w) / dz against autograd."""
    import jax
    c = case("sd35", folder)
    x = inputs(c["config"], (6, 4))
    weight = np.random.default_rng(1).standard_normal(x["z"].shape).astype(np.float32)
    graphdef, state = nnx.split(c["port"])

    def grad(s, z, context, pooled, timestep, w):
        model = nnx.merge(graphdef, s)
        return jax.grad(lambda z: jnp.sum(model(z, context, pooled, timestep) * w))(z)

    actual = run_jitted(grad, state, *(jnp.asarray(x[k]) for k in ("z", "context", "pooled",
                                                                   "timestep")),
                        jnp.asarray(weight))
    z = torch.from_numpy(np.ascontiguousarray(x["z"].transpose(0, 3, 1, 2))).requires_grad_(True)
    out = c["torch"](z, torch.from_numpy(x["context"]), torch.from_numpy(x["pooled"]),
                     torch.from_numpy(x["timestep"])).sample
    (out * torch.from_numpy(np.ascontiguousarray(weight.transpose(0, 3, 1, 2)))).sum().backward()
    assert max_rel_error(actual, z.grad.numpy().transpose(0, 2, 3, 1)) < TOL
