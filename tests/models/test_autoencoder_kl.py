"""AutoencoderKL port vs diffusers' PyTorch AutoencoderKL on tiny random models.

Every case builds the diffusers model from a seed, randomises its GroupNorm affine parameters
(so a norm mapped to the wrong place cannot hide behind the default 1/0), moves the state dict
into the port with the strict loader, and compares encode (mean, logvar, KL), decode and the
gradient of a scalar of decode w.r.t. the latents. The forward pass, bfloat16 compute and the
file round trips (diffusers folder <-> port <-> orbax) are checked on some of the cases.
"""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.autoencoder_kl import (
    AutoencoderKL,
    AutoencoderKLConfig,
    DiagonalGaussian,
    legacy_key_rename,
)
from sce_jax.models.checkpoint import load_model, save_model
from sce_jax.weights.diffusers_dirs import save_pretrained_diffusers
from sce_jax.weights.strict import load_torch_state_dict_into
from tests.fast_compile import run_jitted

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.torch

TOL = 1e-4




@dataclasses.dataclass(frozen=True)
class Case:
    config: dict
    size: tuple[int, int]


def _kl_config(levels, **overrides):
    base = dict(down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=1,
                norm_num_groups=4, sample_size=16)
    base.update(overrides)
    return base


CASES = {
    # latents 4, both quant convs, mid attention, RGB, non-square 16x24
    "rgb_latent4_quant_attention_16x24": Case(
        _kl_config(2, in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4),
        (16, 24)),
    # latents 16, no quant convs, no attention, one channel (SD3/FLUX-like layout)
    "gray_latent16_no_quant_no_attention": Case(
        _kl_config(2, in_channels=1, out_channels=1, block_out_channels=(8, 16), latent_channels=16,
                   use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False),
        (16, 16)),
    # three levels, only a post-quant conv, GELU, 24x16
    "rgb_three_levels_gelu_post_quant_only_24x16": Case(
        _kl_config(3, in_channels=3, out_channels=3, block_out_channels=(8, 8, 16),
                   latent_channels=4, norm_num_groups=2, act_fn="gelu", use_quant_conv=False),
        (24, 16)),
    # latents 16 with quant convs and attention, two resnets per level, Mish, 8x16
    "gray_latent16_quant_attention_mish_8x16": Case(
        _kl_config(2, in_channels=1, out_channels=1, block_out_channels=(4, 8), latent_channels=16,
                   layers_per_block=2, act_fn="mish"),
        (8, 16)),
}


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def torch_autoencoder(config: dict, seed: int):
    """A diffusers AutoencoderKL with seeded weights and randomised GroupNorm affines."""
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(**config).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1.0 + 0.3 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
    return model


def torch_state_dict(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def port_of(state_dict, config: dict, **kwargs) -> AutoencoderKL:
    """The port with ``state_dict`` loaded (built abstractly: no random initialisation)."""
    model = nnx.eval_shape(lambda: AutoencoderKL(AutoencoderKLConfig(**config), rngs=nnx.Rngs(0),
                                                 **kwargs))
    return load_torch_state_dict_into(model, state_dict)


def _port_outputs(model, images, weight):
    posterior = model.encode(images)
    z = posterior.mode()
    decoded, pullback = jax.vjp(model.decode, z)  # d sum(decode(z) * weight) / dz = J^T weight
    (grad,) = pullback(weight.astype(decoded.dtype))
    return dict(mean=posterior.mean, logvar=posterior.logvar, kl=posterior.kl(), decoded=decoded,
                grad=grad)


def port_outputs(model, images, weight):
    graphdef, state = nnx.split(model)
    return run_jitted(lambda s, x, w: _port_outputs(nnx.merge(graphdef, s), x, w), state,
                      jnp.asarray(images), jnp.asarray(weight))


def torch_outputs(model, images, weight):
    x = nchw(images)
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        decoded = model.decode(posterior.mode()).sample
    z = posterior.mode().clone().requires_grad_(True)
    (model.decode(z).sample * nchw(weight)).sum().backward()
    return dict(mean=nhwc(posterior.mean), logvar=nhwc(posterior.logvar),
                kl=posterior.kl().numpy(), decoded=nhwc(decoded), grad=nhwc(z.grad))


def inputs(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = case.size
    images = rng.uniform(-1, 1, (2, h, w, case.config["in_channels"])).astype(np.float32)
    weight = rng.normal(size=(2, h, w, case.config["out_channels"])).astype(np.float32)
    return images, weight


@functools.lru_cache(maxsize=None)
def parity_case(name: str) -> dict:
    """Torch reference, port and both outputs of one case (computed once per module run)."""
    case = CASES[name]
    reference = torch_autoencoder(case.config, seed=len(name))
    state_dict = torch_state_dict(reference)
    port = port_of(state_dict, case.config)
    images, weight = inputs(case)
    return dict(case=case, torch=reference, state_dict=state_dict, port=port, images=images,
                weight=weight, expected=torch_outputs(reference, images, weight),
                actual=port_outputs(port, images, weight))


@pytest.fixture(params=sorted(CASES))
def parity(request):
    return parity_case(request.param)


FIRST = "rgb_latent4_quant_attention_16x24"


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_encode_matches_diffusers(parity):
    expected, actual = parity["expected"], parity["actual"]
    assert max_abs(actual["mean"], expected["mean"]) < TOL
    assert max_abs(actual["logvar"], expected["logvar"]) < TOL
    np.testing.assert_allclose(actual["kl"], expected["kl"], rtol=1e-4)


def test_decode_matches_diffusers(parity):
    expected, actual = parity["expected"], parity["actual"]
    assert max_abs(actual["decoded"], expected["decoded"]) < TOL


def test_decode_gradient_matches_torch_autograd(parity):
    expected, actual = parity["expected"], parity["actual"]
    scale = max(1.0, float(np.max(np.abs(expected["grad"]))))
    assert max_abs(actual["grad"], expected["grad"]) < TOL * scale


def test_sampling_uses_the_posterior_std():
    parity = parity_case(FIRST)
    posterior = DiagonalGaussian(jnp.asarray(parity["actual"]["mean"]),
                                 jnp.asarray(parity["actual"]["logvar"]))
    key = jax.random.key(3)
    eps = jax.random.normal(key, posterior.mean.shape)
    expected = parity["actual"]["mean"] + np.exp(0.5 * parity["actual"]["logvar"]) * np.asarray(eps)
    np.testing.assert_allclose(posterior.sample(key), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        parity["port"](jnp.asarray(parity["images"]), sample_posterior=True)


def test_logvar_is_clipped_like_diffusers():
    moments = jnp.concatenate([jnp.zeros((1, 2, 2, 4)), jnp.full((1, 2, 2, 4), 50.0)], axis=-1)
    moments = moments.at[..., 5].set(-70.0)
    posterior = DiagonalGaussian.from_moments(moments)
    reference = diffusers.models.autoencoders.vae.DiagonalGaussianDistribution(nchw(moments))
    np.testing.assert_array_equal(posterior.logvar, nhwc(reference.logvar))
    assert float(posterior.logvar.max()) == 20.0 and float(posterior.logvar.min()) == -30.0


@pytest.mark.parametrize("name", [FIRST, "rgb_three_levels_gelu_post_quant_only_24x16"])
def test_bfloat16_decode_is_close_to_float32(name):
    """bfloat16 keeps 8 significant bits: each rounding is off by up to 2**-9 of the value.
    A decoder of ~20 layers rounds its input, weights and output at each (~60 roundings),
    which add up like a random walk to sqrt(60) * 2**-9 ~ 1.5% of the signal; random
    (untrained) weights amplify this about twice (measured: 2-4% RMS). The bounds, 6% RMS
    (relative to the output's std) and 6% of the output range at any pixel, hold with margin;
    the output dtype shows that the computation really ran in bfloat16."""
    parity = parity_case(name)
    case = parity["case"]
    port = port_of(parity["state_dict"], case.config, dtype=jnp.bfloat16)
    graphdef, state = nnx.split(port)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))  # params stay float32
    z = jnp.asarray(parity["actual"]["mean"])
    decoded = run_jitted(lambda s, z: nnx.merge(graphdef, s).decode(z.astype(jnp.bfloat16)), state, z)
    assert decoded.dtype == jnp.bfloat16
    reference = parity["actual"]["decoded"]
    error = np.abs(np.asarray(decoded, np.float32) - reference)
    assert np.sqrt(np.mean(error ** 2)) < 0.06 * reference.std(), error
    assert error.max() < 0.06 * np.ptp(reference), (error.max(), np.ptp(reference))


def test_diffusers_folder_to_orbax_and_back(tmp_path):
    """diffusers save_pretrained -> from_pretrained -> orbax save -> load -> same outputs,
    and the forward pass (encode, mode, decode) matches diffusers' forward."""
    parity = parity_case(FIRST)
    parity["torch"].save_pretrained(tmp_path / "diffusers")
    loaded = AutoencoderKL.from_pretrained(tmp_path / "diffusers")
    assert loaded.config == AutoencoderKLConfig(**parity["case"].config)
    save_model(loaded, tmp_path / "orbax")
    restored = load_model(tmp_path / "orbax", expect=AutoencoderKL)
    assert restored.config == loaded.config
    assert_same_state(restored, parity["port"])
    graphdef, state = nnx.split(restored)
    forward = run_jitted(lambda s, x: nnx.merge(graphdef, s)(x), state, jnp.asarray(parity["images"]))
    with torch.no_grad():
        expected = nhwc(parity["torch"](nchw(parity["images"])).sample)
    assert max_abs(forward, expected) < TOL


def assert_same_state(a: nnx.Module, b: nnx.Module) -> None:
    flat_a = {tuple(k): v.get_value() for k, v in nnx.to_flat_state(nnx.state(a))}
    flat_b = {tuple(k): v.get_value() for k, v in nnx.to_flat_state(nnx.state(b))}
    assert sorted(flat_a) == sorted(flat_b)
    for path, value in flat_a.items():
        np.testing.assert_array_equal(value, flat_b[path], err_msg=str(path))


@pytest.mark.parametrize("name", [FIRST, "gray_latent16_no_quant_no_attention"])
def test_port_writes_a_folder_diffusers_loads(name, tmp_path):
    parity = parity_case(name)
    directory = save_pretrained_diffusers(parity["port"], tmp_path / "written")
    with open(os.path.join(directory, "config.json")) as f:
        assert json.load(f)["_class_name"] == "AutoencoderKL"
    reloaded = diffusers.AutoencoderKL.from_pretrained(directory).eval()
    written = torch_state_dict(reloaded)
    assert sorted(written) == sorted(parity["state_dict"])
    for key, value in parity["state_dict"].items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    for field, value in parity["case"].config.items():
        assert tuple(np.atleast_1d(reloaded.config[field])) == tuple(np.atleast_1d(value)), field
    with torch.no_grad():
        posterior = reloaded.encode(nchw(parity["images"])).latent_dist
        decoded = nhwc(reloaded.decode(posterior.mode()).sample)
    assert max_abs(nhwc(posterior.mean), parity["actual"]["mean"]) < TOL
    assert max_abs(decoded, parity["actual"]["decoded"]) < TOL


def test_legacy_attention_names_and_conv_shapes_load(tmp_path):
    """Old diffusers files: query/key/value/proj_attn, stored as 1x1 convolutions."""
    parity = parity_case(FIRST)
    current_to_legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in parity["state_dict"].items():
        for new, old in current_to_legacy.items():
            marker = f".{new}."
            if ".attentions." in key and marker in key:
                key = key.replace(marker, f".{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        legacy[key] = value
    assert legacy["encoder.mid_block.attentions.0.proj_attn.weight"].ndim == 4
    assert legacy_key_rename("decoder.mid_block.attentions.0.proj_attn.bias") == \
        "decoder.mid_block.attentions.0.to_out.0.bias"
    assert legacy_key_rename("decoder.up_blocks.0.resnets.0.conv1.weight") == \
        "decoder.up_blocks.0.resnets.0.conv1.weight"
    from safetensors.numpy import save_file
    folder = tmp_path / "legacy"
    folder.mkdir()
    save_file(legacy, str(folder / "diffusion_pytorch_model.safetensors"))
    with open(folder / "config.json", "w") as f:
        json.dump({"_class_name": "AutoencoderKL", **parity["case"].config}, f)
    assert_same_state(AutoencoderKL.from_pretrained(folder), parity["port"])
