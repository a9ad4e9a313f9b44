"""FLUX transformer port and FLUX prior against diffusers, on tiny random configs.

diffusers builds each model, its parameters are randomised, ``save_pretrained`` writes it to a
temporary folder, and the port loads that folder: so the loading path a real checkpoint takes
is the one tested. Sizes are in latent tokens (rows x columns of 2x2 patches).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from sce_jax.models.flux_packing import latent_image_ids, pack_latents, text_ids, unpack_latents
from sce_jax.models.flux_transformer import FluxTransformer2DModel
from sce_jax.priors.flux import flux_prior
from sce_jax.weights.diffusers_dirs import DiffusersDirError
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import WeightMismatchError
from tests.fast_compile import run_jitted
from tests.torch_interop import assert_close

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.torch

LATENT_CHANNELS = 4
CONFIG = dict(patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=2, num_single_layers=2,
              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
              pooled_projection_dim=12, axes_dims_rope=(4, 6, 6))
TEXT_TOKENS = 5
WEIGHTS = "diffusion_pytorch_model.safetensors"


def pipeline_functions():
    """``FluxPipeline._pack_latents``, ``_unpack_latents`` and ``_prepare_latent_image_ids``,
    taken from diffusers' own source: the pipeline class itself cannot be imported without
    ``transformers`` (its text encoders), and these static methods use only torch."""
    import ast
    import inspect

    import diffusers.pipelines.flux as flux_pipelines
    path = os.path.join(os.path.dirname(inspect.getfile(flux_pipelines)), "pipeline_flux.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    wanted = ("_pack_latents", "_unpack_latents", "_prepare_latent_image_ids")
    pipeline = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FluxPipeline")
    functions = [n for n in pipeline.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    for fn in functions:
        fn.decorator_list = []
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=functions, type_ignores=[]), path, "exec"), namespace)
    return type("FluxPipeline", (), {name: staticmethod(namespace[name]) for name in wanted})


def torch_model(guidance_embeds: bool, seed: int = 0):
    """diffusers' model with every parameter random (RMS-norm weights too), eval mode."""
    torch.manual_seed(seed)
    model = diffusers.FluxTransformer2DModel(**CONFIG, guidance_embeds=guidance_embeds).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm_" in name:                 # RMS-norm weights: around 1
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.7 / p.shape[1] ** 0.5)
    return model


@pytest.fixture(scope="module", params=[True, False], ids=["dev", "schnell"])
def models(request, tmp_path_factory):
    """(diffusers model, its save_pretrained folder, the port loaded from that folder)."""
    model = torch_model(request.param)
    folder = str(tmp_path_factory.mktemp("flux") / "transformer")
    model.save_pretrained(folder)
    return model, folder, FluxTransformer2DModel.from_pretrained(folder)


def inputs(rows, cols, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        hidden_states=rng.normal(size=(batch, rows * cols, CONFIG["in_channels"])).astype(np.float32),
        encoder_hidden_states=rng.normal(size=(batch, TEXT_TOKENS, CONFIG["joint_attention_dim"])).astype(np.float32),
        pooled_projections=rng.normal(size=(batch, CONFIG["pooled_projection_dim"])).astype(np.float32),
        timestep=rng.uniform(0.05, 1.0, size=(batch,)).astype(np.float32),
        guidance=rng.uniform(1.0, 5.0, size=(batch,)).astype(np.float32))


def torch_forward(model, x, rows, cols):
    """diffusers' forward with the ids its pipeline builds (``_prepare_latent_image_ids``)."""
    FluxPipeline = pipeline_functions()
    img_ids = FluxPipeline._prepare_latent_image_ids(1, rows, cols, "cpu", torch.float32)
    txt_ids = torch.zeros(TEXT_TOKENS, 3)
    guidance = torch.from_numpy(x["guidance"]) if model.config.guidance_embeds else None
    with torch.no_grad():
        return model(hidden_states=torch.from_numpy(x["hidden_states"]),
                     encoder_hidden_states=torch.from_numpy(x["encoder_hidden_states"]),
                     pooled_projections=torch.from_numpy(x["pooled_projections"]),
                     timestep=torch.from_numpy(x["timestep"]), img_ids=img_ids, txt_ids=txt_ids,
                     guidance=guidance).sample.numpy()


def port_forward(port, x, rows, cols):
    guidance = x["guidance"] if port.config.guidance_embeds else None
    img, txt = latent_image_ids(2 * rows, 2 * cols), text_ids(TEXT_TOKENS)
    return run_jitted(lambda h, c, p, t, g: port(h, c, p, t, img, txt, g),
                      x["hidden_states"], x["encoder_hidden_states"], x["pooled_projections"],
                      x["timestep"], guidance)


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5), (1, 6)])
def test_forward_matches_diffusers(models, rows, cols):
    model, _, port = models
    x = inputs(rows, cols, seed=rows * 10 + cols)
    assert_close(port_forward(port, x, rows, cols), torch_forward(model, x, rows, cols), rel=1e-4)


def test_ids_match_the_pipeline():
    FluxPipeline = pipeline_functions()
    expected = FluxPipeline._prepare_latent_image_ids(1, 3, 5, "cpu", torch.float32).numpy()
    np.testing.assert_array_equal(latent_image_ids(6, 10), expected)


def test_bfloat16_forward_close_to_float32(models):
    """bfloat16 compute (norms, RoPE, softmax in float32): within 3% of the float32 output's
    scale on these random weights (measured: 0.6% schnell, 0.95% dev)."""
    _, folder, port = models
    port16 = FluxTransformer2DModel.from_pretrained(folder, dtype=jnp.bfloat16)
    x = inputs(3, 4, seed=1)
    full = port_forward(port, x, 3, 4)
    half = port_forward(port16, x, 3, 4)
    assert half.dtype == jnp.bfloat16
    assert_close(half.astype(np.float32), full, rel=3e-2)


def test_prior_matches_diffusers_step(models):
    """The Prior on NHWC latents = diffusers' transformer on the pipeline's packed latents."""
    FluxPipeline = pipeline_functions()
    model, _, port = models
    dev = model.config.guidance_embeds
    prior = flux_prior(port, guidance=4.0 if dev else None)
    assert prior.needs_context and prior.name == ("flux-dev" if dev else "flux-schnell")
    rng = np.random.default_rng(3)
    b, h, w = 2, 6, 4
    z = rng.normal(size=(b, h, w, LATENT_CHANNELS)).astype(np.float32)
    x = inputs(h // 2, w // 2, batch=b, seed=4)
    context = {k: x[k] for k in ("encoder_hidden_states", "pooled_projections")}
    t = np.array([0.2, 0.8], np.float32)
    v = run_jitted(lambda z, t, c: prior.velocity(z, t, c), z, t, context)

    latents = torch.from_numpy(z.transpose(0, 3, 1, 2).copy())          # NCHW, as the pipeline
    packed = FluxPipeline._pack_latents(latents, b, LATENT_CHANNELS, h, w)
    guidance = torch.full((b,), 4.0) if dev else None
    with torch.no_grad():
        out = model(hidden_states=packed, encoder_hidden_states=torch.from_numpy(x["encoder_hidden_states"]),
                    pooled_projections=torch.from_numpy(x["pooled_projections"]),
                    timestep=torch.from_numpy(t),
                    img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
                    txt_ids=torch.zeros(TEXT_TOKENS, 3), guidance=guidance).sample
    vae_scale_factor = 8
    expected = FluxPipeline._unpack_latents(out, h * vae_scale_factor, w * vae_scale_factor,
                                            vae_scale_factor).numpy().transpose(0, 2, 3, 1)
    assert v.shape == z.shape
    assert_close(v, expected, rel=1e-4)


def test_packing_round_trip_and_pipeline_order():
    FluxPipeline = pipeline_functions()
    z = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    packed = np.asarray(pack_latents(jnp.asarray(z)))
    expected = FluxPipeline._pack_latents(torch.from_numpy(z.transpose(0, 3, 1, 2).copy()), 2, 3, 4, 6)
    np.testing.assert_array_equal(packed, expected.numpy())
    np.testing.assert_array_equal(np.asarray(unpack_latents(jnp.asarray(packed), 4, 6)), z)
    with pytest.raises(ValueError, match="must be even"):
        pack_latents(jnp.zeros((1, 3, 4, 3)))


def test_guidance_must_match_the_model(models):
    _, _, port = models
    x = inputs(2, 2, batch=1)
    dev = port.config.guidance_embeds
    wrong = None if dev else x["guidance"]
    with pytest.raises(ValueError, match="guidance"):
        port(jnp.asarray(x["hidden_states"]), jnp.asarray(x["encoder_hidden_states"]),
             jnp.asarray(x["pooled_projections"]), jnp.asarray(x["timestep"]),
             latent_image_ids(4, 4), text_ids(TEXT_TOKENS), wrong)
    if not dev:
        with pytest.raises(ValueError, match="no guidance embedding"):
            flux_prior(port, guidance=3.5)


def test_prior_refuses_a_missing_context(models):
    _, _, port = models
    prior = flux_prior(port)
    with pytest.raises(ValueError, match="context"):
        prior.velocity(jnp.zeros((1, 2, 2, LATENT_CHANNELS)), jnp.ones((1,)), None)


def _copy_folder(src, dst):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    return dst


def test_strict_loading_lists_every_problem(models, tmp_path):
    _, folder, _ = models
    bad = _copy_folder(folder, str(tmp_path / "bad"))
    tensors = load_file(os.path.join(bad, WEIGHTS))
    del tensors["single_transformer_blocks.1.proj_mlp.weight"]
    tensors["transformer_blocks.0.attn.to_q.weight"] = np.zeros((3, 3), np.float32)
    tensors["transformer_blocks.0.attn.to_qkv.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, os.path.join(bad, WEIGHTS))
    with pytest.raises(WeightMismatchError) as info:
        FluxTransformer2DModel.from_pretrained(bad)
    error = info.value
    assert error.missing == ["single_transformer_blocks.1.proj_mlp.weight"]
    assert error.unexpected == ["transformer_blocks.0.attn.to_qkv.weight"]
    assert [m[0] for m in error.misshaped] == ["transformer_blocks.0.attn.to_q.weight"]


def test_guidance_weights_of_a_dev_file_do_not_load_as_schnell(tmp_path):
    bad = str(tmp_path / "bad")
    torch_model(True).save_pretrained(bad)
    with open(os.path.join(bad, "config.json")) as f:
        config = json.load(f)
    config["guidance_embeds"] = False
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(WeightMismatchError, match="guidance_embedder"):
        FluxTransformer2DModel.from_pretrained(bad)


def test_config_errors(models, tmp_path):
    _, folder, _ = models
    bad = _copy_folder(folder, str(tmp_path / "bad"))
    with open(os.path.join(bad, "config.json")) as f:
        config = json.load(f)
    config["axes_dims_rope"] = [4, 4, 4]
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError, match="axes_dims_rope"):
        FluxTransformer2DModel.from_pretrained(bad)
    config["_class_name"] = "SD3Transformer2DModel"
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(DiffusersDirError, match="SD3Transformer2DModel"):
        FluxTransformer2DModel.from_pretrained(bad)


def test_pipeline_folder_and_sharded_weights(models, tmp_path):
    """A pipeline folder resolves to its transformer/; shards + index load like one file."""
    model, _, port = models
    pipeline = tmp_path / "pipeline"
    model.save_pretrained(str(pipeline / "transformer"), max_shard_size="20KB")
    files = os.listdir(pipeline / "transformer")
    assert any(n.endswith(".index.json") for n in files) and len(files) > 3
    with open(pipeline / "model_index.json", "w") as f:
        json.dump({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, f)
    loaded = FluxTransformer2DModel.from_pretrained(str(pipeline))
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                        jax.tree.leaves(loaded.x_embedder.kernel[...]),
                        jax.tree.leaves(port.x_embedder.kernel[...]))
    assert all(same)
    a = np.asarray(loaded.single_transformer_blocks[1].proj_out.kernel[...])
    np.testing.assert_array_equal(a, np.asarray(port.single_transformer_blocks[1].proj_out.kernel[...]))


def test_save_pretrained_is_read_by_diffusers(models, tmp_path):
    model, _, port = models
    folder = port.save_pretrained(str(tmp_path / "out"))
    again = diffusers.FluxTransformer2DModel.from_pretrained(folder)
    assert again.config.guidance_embeds == model.config.guidance_embeds
    expected = model.state_dict()
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[key].numpy(), err_msg=key)


def test_prior_latent_gradient_matches_torch(models):
    """d sum(v . w) / d z_t through the Prior against torch autograd through the pipeline's
    packing and diffusers' transformer (the search differentiates through the prior)."""
    model, _, port = models
    FluxPipeline = pipeline_functions()
    dev = model.config.guidance_embeds
    prior = flux_prior(port, guidance=2.0 if dev else None)
    rng = np.random.default_rng(5)
    b, h, w = 1, 4, 6
    z = rng.normal(size=(b, h, w, LATENT_CHANNELS)).astype(np.float32)
    weights = rng.normal(size=z.shape).astype(np.float32)
    x = inputs(h // 2, w // 2, batch=b, seed=6)
    context = {k: x[k] for k in ("encoder_hidden_states", "pooled_projections")}
    t = np.array([0.6], np.float32)
    grad = run_jitted(jax.grad(lambda z: jnp.sum(prior.velocity(z, t, context) * weights)), z)

    latents = torch.from_numpy(z.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    out = model(hidden_states=FluxPipeline._pack_latents(latents, b, LATENT_CHANNELS, h, w),
                encoder_hidden_states=torch.from_numpy(x["encoder_hidden_states"]),
                pooled_projections=torch.from_numpy(x["pooled_projections"]),
                timestep=torch.from_numpy(t),
                img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
                txt_ids=torch.zeros(TEXT_TOKENS, 3),
                guidance=torch.full((b,), 2.0) if dev else None).sample
    v = FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)
    (v * torch.from_numpy(weights.transpose(0, 3, 1, 2).copy())).sum().backward()
    assert_close(grad, latents.grad.numpy().transpose(0, 2, 3, 1), rel=1e-4)


def test_misshaped_inputs_are_named(models):
    _, _, port = models
    x = inputs(2, 2, batch=1)
    g = x["guidance"] if port.config.guidance_embeds else None
    args = [jnp.asarray(x[k]) for k in ("hidden_states", "encoder_hidden_states",
                                         "pooled_projections", "timestep")]
    with pytest.raises(ValueError, match=r"hidden_states must be \(B, N, 16\) packed latent tokens"):
        port(args[0][..., :8], *args[1:], latent_image_ids(4, 4), text_ids(TEXT_TOKENS), g)
    with pytest.raises(ValueError, match=r"img_ids must be \(4, 3\)"):
        port(*args, latent_image_ids(4, 6), text_ids(TEXT_TOKENS), g)
    with pytest.raises(ValueError, match=r"pooled_projections must be \(1, 12\)"):
        port(*args[:2], args[2][:, :5], args[3], latent_image_ids(4, 4), text_ids(TEXT_TOKENS), g)

