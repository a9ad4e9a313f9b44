"""AutoencoderTiny (TAESD) port vs diffusers' PyTorch AutoencoderTiny on tiny random models."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.autoencoder_tiny import AutoencoderTiny, AutoencoderTinyConfig
from sce_jax.models.checkpoint import load_model, save_model
from sce_jax.weights.diffusers_dirs import save_pretrained_diffusers
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import load_torch_state_dict_into
from tests.fast_compile import run_jitted

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.torch

TOL = 1e-4



CASES = {
    # TAESD's layout (ReLU, nearest upsampling) at 8 channels and fewer blocks; 16x24 images
    "taesd_layout_16x24": (dict(encoder_block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)),
                           (16, 24)),
    # one channel, 16 latent channels, SiLU, bilinear upsampling by 2 over three stages
    "gray_latent16_silu_bilinear_16x16": (dict(in_channels=1, out_channels=1, latent_channels=16,
                                               encoder_block_out_channels=(8, 8, 8),
                                               decoder_block_out_channels=(4, 4, 4),
                                               num_encoder_blocks=(1, 2, 1),
                                               num_decoder_blocks=(2, 1, 1), act_fn="silu",
                                               upsample_fn="bilinear"),
                                          (16, 16)),
}


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def port_of(state_dict, config: dict, **kwargs) -> AutoencoderTiny:
    model = nnx.eval_shape(lambda: AutoencoderTiny(AutoencoderTinyConfig(**config),
                                                   rngs=nnx.Rngs(0), **kwargs))
    return load_torch_state_dict_into(model, state_dict)


def _port_outputs(model, images, latents, weight):
    decoded, pullback = jax.vjp(model.decode, latents)  # d sum(decode(z) * weight) / dz
    (grad,) = pullback(weight)
    return dict(latents=model.encode(images), decoded=decoded, grad=grad, forward=model(images))


@functools.lru_cache(maxsize=None)
def parity_case(name: str) -> dict:
    config, (h, w) = CASES[name]
    torch.manual_seed(len(name))
    reference = diffusers.AutoencoderTiny(**config).eval()
    state_dict = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
    port = port_of(state_dict, config)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, h, w, port.config.in_channels)).astype(np.float32)
    # latents beyond +-3 exercise the decoder's tanh clamp
    f = port.config.downsample_factor
    latents = 4.0 * rng.normal(size=(2, h // f, w // f, port.config.latent_channels)).astype(np.float32)
    weight = rng.normal(size=(2, h, w, port.config.out_channels)).astype(np.float32)

    z = nchw(latents).requires_grad_(True)
    decoded = reference.decode(z).sample
    (decoded * nchw(weight)).sum().backward()
    with torch.no_grad():
        expected = dict(latents=nhwc(reference.encode(nchw(images)).latents), decoded=nhwc(decoded),
                        grad=nhwc(z.grad), forward=nhwc(reference(nchw(images)).sample))
    graphdef, state = nnx.split(port)
    actual = run_jitted(lambda s, *arrays: _port_outputs(nnx.merge(graphdef, s), *arrays), state,
                        jnp.asarray(images), jnp.asarray(latents), jnp.asarray(weight))
    return dict(config=config, torch=reference, state_dict=state_dict, port=port, images=images,
                latents=latents, expected=expected, actual=actual)


@pytest.fixture(params=sorted(CASES))
def parity(request):
    return parity_case(request.param)


FIRST = "taesd_layout_16x24"


def test_encode_matches_diffusers(parity):
    assert max_abs(parity["actual"]["latents"], parity["expected"]["latents"]) < TOL


def test_decode_matches_diffusers_including_the_tanh_clamp(parity):
    assert np.abs(parity["latents"]).max() > 6.0  # inputs where 3 tanh(z / 3) bites
    assert max_abs(parity["actual"]["decoded"], parity["expected"]["decoded"]) < TOL


def test_decode_gradient_matches_torch_autograd(parity):
    expected, actual = parity["expected"], parity["actual"]
    scale = max(1.0, float(np.max(np.abs(expected["grad"]))))
    assert max_abs(actual["grad"], expected["grad"]) < TOL * scale


def test_forward_quantises_latents_like_diffusers(parity):
    """diffusers' forward rounds the latents to 8 bits; a float difference of 1e-7 may flip one
    rounding, so compare the bulk: almost all pixels equal, all of them close."""
    actual, expected = parity["actual"]["forward"], parity["expected"]["forward"]
    close = np.abs(actual - expected) < TOL
    assert close.mean() > 0.99
    port = parity["port"]
    scaled = np.asarray(port.scale_latents(jnp.asarray(parity["actual"]["latents"])))
    with torch.no_grad():
        reference = parity["torch"].scale_latents(nchw(parity["expected"]["latents"])).numpy()
    assert max_abs(scaled, reference.transpose(0, 2, 3, 1)) < TOL
    np.testing.assert_allclose(port.unscale_latents(jnp.asarray(scaled)),
                               parity["torch"].unscale_latents(torch.from_numpy(scaled.copy())).numpy(),
                               atol=1e-6)


def test_bfloat16_decode_is_close_to_float32():
    """Same reasoning as the AutoencoderKL test: ~2**-9 relative rounding per value over ~25
    rounding steps gives a few percent of the signal on random weights; bounded at 6%."""
    parity = parity_case(FIRST)
    port = port_of(parity["state_dict"], parity["config"], dtype=jnp.bfloat16)
    graphdef, state = nnx.split(port)
    decoded = run_jitted(lambda s, z: nnx.merge(graphdef, s).decode(z.astype(jnp.bfloat16)),
                         state, jnp.asarray(parity["latents"]))
    assert decoded.dtype == jnp.bfloat16
    reference = parity["actual"]["decoded"]
    error = np.abs(np.asarray(decoded, np.float32) - reference)
    assert np.sqrt(np.mean(error ** 2)) < 0.06 * reference.std()
    assert error.max() < 0.06 * np.ptp(reference)


def assert_same_state(a: nnx.Module, b: nnx.Module) -> None:
    flat_a = {tuple(k): v.get_value() for k, v in nnx.to_flat_state(nnx.state(a))}
    flat_b = {tuple(k): v.get_value() for k, v in nnx.to_flat_state(nnx.state(b))}
    assert sorted(flat_a) == sorted(flat_b)
    for path, value in flat_a.items():
        np.testing.assert_array_equal(value, flat_b[path], err_msg=str(path))


def test_diffusers_folder_to_orbax_and_back(tmp_path):
    parity = parity_case(FIRST)
    parity["torch"].save_pretrained(tmp_path / "diffusers")
    with open(tmp_path / "diffusers" / "config.json") as f:
        written_by_diffusers = json.load(f)
    loaded = AutoencoderTiny.from_pretrained(tmp_path / "diffusers")
    assert loaded.config.block_out_channels == tuple(written_by_diffusers["block_out_channels"])
    assert loaded.config.decoder_block_out_channels == (8, 8, 8, 8)
    save_model(loaded, tmp_path / "orbax")
    restored = load_model(tmp_path / "orbax", expect=AutoencoderTiny)
    assert restored.config == loaded.config
    assert_same_state(restored, parity["port"])
    graphdef, state = nnx.split(restored)
    latents = run_jitted(lambda s, x: nnx.merge(graphdef, s).encode(x), state,
                         jnp.asarray(parity["images"]))
    assert max_abs(latents, parity["expected"]["latents"]) < TOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_port_writes_a_folder_diffusers_loads(name, tmp_path):
    parity = parity_case(name)
    directory = save_pretrained_diffusers(parity["port"], tmp_path / "written")
    with open(os.path.join(directory, "config.json")) as f:
        assert json.load(f)["_class_name"] == "AutoencoderTiny"
    reloaded = diffusers.AutoencoderTiny.from_pretrained(directory).eval()
    written = {k: v.numpy() for k, v in reloaded.state_dict().items()}
    assert sorted(written) == sorted(parity["state_dict"])
    for key, value in parity["state_dict"].items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    for field, value in parity["config"].items():
        assert tuple(np.atleast_1d(reloaded.config[field])) == tuple(np.atleast_1d(value)), field
    with torch.no_grad():
        decoded = nhwc(reloaded.decode(nchw(parity["latents"])).sample)
    assert max_abs(decoded, parity["actual"]["decoded"]) < TOL


@pytest.mark.parametrize("field, value, expected", [
    ("upsample_fn", "bicubic",
     "upsample_fn='bicubic' is not supported; expected one of ['nearest', 'bilinear']"),
    ("act_fn", "tanh", "act_fn='tanh' is not supported"),
    ("decoder_block_out_channels", (64, 32, 32, 32), "equal entries"),
    ("num_encoder_blocks", (1, 3, 3), "num_encoder_blocks=(1, 3, 3) is not supported; expected 4"),
])
def test_unsupported_config_values_are_named(field, value, expected):
    with pytest.raises(ConfigError) as error:
        AutoencoderTinyConfig(**{field: value})
    assert expected in str(error.value)
