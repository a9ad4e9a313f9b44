"""The benchmark's PyTorch search computes what sce_jax's search computes.

The benchmark (scripts/benchmark.py) compares the throughput of sce_jax with a PyTorch
implementation of the same search (benchmarks/torch_search.py); the comparison means something
only if both run the same algorithm. Here both run on the same tiny random models (a diffusers
AutoencoderKL and its sce_jax port with identical weights; a small CNN in both frameworks):

- end to end with smoothing off, the counterfactuals, latents, masks, success flags and step
  counts agree, over two attempts with locking, mask updates and per-example freezing;
- the smoothed gradients (pixel and latent space, in one pass or in chunks) at zero noise equal
  the gradient of sce_jax's plain objective;
- each building block (target losses, output image, proximity, gradient processing and the
  optimizers, Gaussian taps, masks) equals its sce_jax counterpart.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sce_jax
from sce_jax import Classifier, Explainer, Generator, Preprocessing
from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from sce_jax.search import masks, objectives, targets, updates
from sce_jax.search.config import settings_from_config
from sce_jax.search.smoothing import StepInputs
from sce_jax.weights.strict import load_torch_state_dict_into
from tests.search_helpers import plain_objective, with_overrides

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from benchmarks import torch_search  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

SIZE = 16
AE_CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                 down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2,
                 layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=SIZE)
NUM_CLASSES = 3
PREPROCESSING = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.25, 0.3, 0.2))


class TorchTinyNet(torch.nn.Module):
    """conv(3x3, s2) -> ReLU -> conv(3x3, s2) -> ReLU -> global mean -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class TinyNet(nnx.Module):
    """The same network in NNX (NHWC), attributes named as the torch module's."""

    def __init__(self, rngs: nnx.Rngs):
        conv = dict(kernel_size=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs)
        self.conv1 = nnx.Conv(3, 8, **conv)
        self.conv2 = nnx.Conv(8, 16, **conv)
        self.fc = nnx.Linear(16, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.fc(jnp.mean(x, axis=(1, 2)))


def _nchw(a) -> "torch.Tensor":
    return torch.from_numpy(np.array(np.transpose(np.asarray(a), (0, 3, 1, 2))))


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _numpy_state(module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and OpenMP threads slow to a crawl when other
    processes share the cores; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """Both frameworks' generator and classifier, with identical random weights."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**AE_CONFIG).eval()
    with torch.no_grad():  # non-trivial norm affines: a misplaced norm cannot hide
        for module in vae.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1.0 + 0.3 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
    net = TorchTinyNet().eval()
    with torch.no_grad():  # larger weights than PyTorch's default: logits that react to the image
        for module in (net.conv1, net.conv2, net.fc):
            module.weight.mul_(4.0)
    port = nnx.eval_shape(lambda: AutoencoderKL(AutoencoderKLConfig(**AE_CONFIG), rngs=nnx.Rngs(0)))
    load_torch_state_dict_into(port, _numpy_state(vae))
    jax_net = load_torch_state_dict_into(TinyNet(nnx.Rngs(0)), _numpy_state(net))
    return dict(
        jax_gen=Generator.from_autoencoder(port),
        jax_clf=Classifier.from_nnx(jax_net, preprocessing=PREPROCESSING, num_outputs=NUM_CLASSES),
        torch_gen=torch_search.TorchGenerator.from_diffusers(vae),
        torch_clf=torch_search.TorchClassifier.from_preprocessing(net, PREPROCESSING))


def _images(batch: int, seed: int) -> np.ndarray:
    """Smooth random colour images, (B, SIZE, SIZE, 3) in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.1, 0.9, (batch, 4, 4, 3)).astype(np.float32)
    return np.asarray(jax.image.resize(coarse, (batch, SIZE, SIZE, 3), "linear"))


def _config(**overrides):
    c = sce_jax.default_search_config()
    c.steps = 20
    c.attempts = 2
    c.learning_rate = 0.1
    c.smoothing.space = "none"
    c.goal_probability = 0.0
    c.reject_background_spots = False  # not mirrored: a check after the search, not a step
    c.mask.warmup_steps = 3
    c.mask.period = 2
    return with_overrides(c, **overrides)


@pytest.mark.slow
def test_same_counterfactuals_as_sce_jax(models):
    """SGD with momentum, residual output, mask updates, two attempts with locking."""
    images = _images(6, seed=1)
    config = _config()
    jax_result = Explainer(models["jax_gen"], models["jax_clf"], config).explain(
        images, targets=[2] * 6, kind="class")
    torch_result = torch_search.explain_batch_torch(
        models["torch_gen"], models["torch_clf"], images, [2] * 6, settings_from_config(config),
        kind="class")

    np.testing.assert_array_equal(torch_result["prediction"], jax_result.prediction)
    np.testing.assert_array_equal(torch_result["success"], jax_result.success)
    np.testing.assert_array_equal(torch_result["steps"], jax_result.steps)
    np.testing.assert_array_equal(torch_result["nonfinite"], jax_result.nonfinite)
    np.testing.assert_allclose(torch_result["image"], jax_result.image, atol=1e-3)
    np.testing.assert_allclose(torch_result["latent"], jax_result.latent, atol=1e-3)
    np.testing.assert_allclose(torch_result["mask"], jax_result.mask, atol=1e-3)
    np.testing.assert_allclose(torch_result["prob_after"], jax_result.prob_after, atol=1e-3)
    np.testing.assert_allclose(torch_result["prob_before"], jax_result.prob_before, atol=1e-5)

    # The case exercises what it should: examples succeed (and freeze) at different steps,
    # one only at the final re-check, others run out of steps and return their best state;
    # the mask shrank; a success locked its region for the second attempt.
    success, steps = jax_result.success, jax_result.steps
    assert success.any() and not success.all(), success
    assert len(set(steps[success].tolist())) > 2, steps
    assert (steps[success] == config.steps).any(), steps
    assert (jax_result.mask[:, 0] < 1).any()
    first = np.nonzero(success[:, 0])[0]
    assert (jax_result.mask[first, 1] == 0).any()


def test_smoothed_gradients_with_zero_noise_are_the_plain_gradient(models):
    """Pixel and latent smoothing, N samples in one pass or in chunks, with all proximity terms:
    at sigma = 0 each is the gradient of the plain objective, which sce_jax differentiates."""
    images = _images(2, seed=3)
    x = _nchw(images)
    with torch.no_grad():
        z0 = models["torch_gen"].encode(x)
        decoded0 = models["torch_gen"].decode(z0)
    z = z0 + 0.1 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    mask = np.random.default_rng(0).uniform(0, 1, images.shape[:3] + (1,)).astype(np.float32)
    target = np.asarray([1, 2], np.int32)
    settings = settings_from_config(_config(l1=0.2, pixel_l1=0.3))
    gen, clf = models["jax_gen"], models["jax_clf"]
    inp = StepInputs(jnp.asarray(images), jnp.asarray(_nhwc(z0)), jnp.asarray(_nhwc(decoded0)),
                     jnp.asarray(mask), jnp.asarray(target), jnp.zeros(2),
                     jax.vmap(jax.random.key)(jnp.arange(2)))

    @jax.jit
    def reference(z_):
        fns = dict(decode=gen.decode, logits_fn=clf.logits, settings=settings, kind="class")
        x_cf = objectives.compose_output(inp.x, gen.decode(z_), inp.decoded0, inp.mask,
                                         mode="residual")
        judged = objectives.judged_image(x_cf, judge_8bit=settings.judge_8bit)  # as success is
        return jax.grad(plain_objective)(z_, inp, **fns), x_cf, clf.logits(judged)

    grad, x_cf, logits = reference(jnp.asarray(_nhwc(z)))
    scale = float(np.max(np.abs(grad)))
    for space, chunk_size in (("pixel", 0), ("pixel", 2), ("latent", 0), ("latent", 2)):
        smoothed = dataclasses.replace(settings, smoothing=dataclasses.replace(
            settings.smoothing, space=space, num_samples=3, sigma=0.0, chunk_size=chunk_size))
        search = torch_search.BatchSearch(
            models["torch_gen"], models["torch_clf"], smoothed, "class", x, z0, decoded0,
            torch.as_tensor(target, dtype=torch.int64), torch.zeros(2),
            torch.Generator().manual_seed(0))
        t_grad, t_x_cf, _, t_logits = search.gradient(z.clone().requires_grad_(True), _nchw(mask))
        where = f"{space} smoothing, chunk_size={chunk_size}"
        np.testing.assert_allclose(_nhwc(t_grad), grad, atol=1e-4 * scale, err_msg=where)
        np.testing.assert_allclose(_nhwc(t_x_cf), x_cf, atol=1e-5, err_msg=where)
        np.testing.assert_allclose(t_logits.numpy(), logits, atol=1e-4, err_msg=where)


@pytest.mark.parametrize("kind,class_loss", [("class", "ce"), ("class", "logit"), ("other", "ce"),
                                             ("flip", "ce")])
def test_target_functions_match_sce_jax(kind, class_loss):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6, 4)).astype(np.float32)
    target = np.asarray([0, 1, 2, 3, 1, 2], np.int64)
    value = np.asarray([0, 1, 0, 1, 1, 0], np.float32)
    args_j = (jnp.asarray(logits), jnp.asarray(target, jnp.int32), jnp.asarray(value))
    args_t = (torch.from_numpy(logits), torch.from_numpy(target), torch.from_numpy(value))
    np.testing.assert_allclose(
        torch_search.target_loss(*args_t, kind=kind, temperature=3.0, class_loss=class_loss),
        targets.target_loss(*args_j, kind=kind, temperature=3.0, class_loss=class_loss),
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch_search.target_probability(*args_t, kind=kind),
                               targets.target_probability(*args_j, kind=kind), rtol=1e-5)
    reached_t = torch_search.target_reached(*args_t, kind=kind, goal_probability=0.3)
    np.testing.assert_array_equal(reached_t, targets.target_reached(*args_j, kind=kind,
                                                                     goal_probability=0.3))
    assert 0 < int(reached_t.sum()) < len(target)


@pytest.mark.parametrize("mode", ["residual", "blend", "decoded"])
def test_output_image_and_proximity_match_sce_jax(mode):
    rng = np.random.default_rng(2)
    x, decoded, decoded0 = (rng.uniform(-0.2, 1.2, (2, 8, 8, 3)).astype(np.float32)
                            for _ in range(3))
    mask = rng.uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    out_t = torch_search.compose_output(*map(_nchw, (x, decoded, decoded0, mask)), mode)
    out_j = objectives.compose_output(x, decoded, decoded0, mask, mode=mode)
    np.testing.assert_allclose(_nhwc(out_t), out_j, atol=1e-7)
    z, z0 = (rng.normal(size=(2, 2, 2, 4)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(torch_search.latent_proximity(_nchw(z), _nchw(z0), 0.3, 0.2),
                               objectives.latent_proximity(z, z0, l1=0.3, l2=0.2), rtol=1e-6)
    np.testing.assert_allclose(torch_search.pixel_proximity(out_t, _nchw(x), 0.5),
                               objectives.pixel_proximity(out_j, x, pixel_l1=0.5), rtol=1e-6)


@pytest.mark.parametrize("optimizer,normalize", [("sgd", False), ("adam", False), ("sgd", True)])
def test_gradient_processing_and_optimizer_match_optax(optimizer, normalize):
    """Latent mask, per-example normalising (optional), clipping and sparsification, then three
    optimizer steps."""
    settings = settings_from_config(_config(optimizer=optimizer, learning_rate=0.1, clip_norm=1.5,
                                            sparsify=0.2, normalize_gradient=normalize))
    rng = np.random.default_rng(3)
    z0 = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    lat_mask = (rng.uniform(size=(3, 4, 4, 1)) > 0.3).astype(np.float32)
    grads = [rng.normal(0, s, size=z0.shape).astype(np.float32) for s in (0.1, 2.0, 1.0)]

    opt = updates.make_optimizer(settings)
    z_j = jnp.asarray(z0)
    state = opt.init(z_j)
    z_t = _nchw(z0).requires_grad_(True)
    opt_t = torch_search.make_optimizer(z_t, settings)
    for g in grads:
        g_j = updates.process_gradient(jnp.asarray(g), lat_mask, settings)
        step, state = opt.update(g_j, state, z_j)
        z_j = z_j + step
        z_t.grad = torch_search.process_gradient(_nchw(g), _nchw(lat_mask), settings)
        np.testing.assert_allclose(_nhwc(z_t.grad), g_j, atol=1e-6)
        opt_t.step()
        np.testing.assert_allclose(_nhwc(z_t), z_j, atol=1e-5)
    assert float(jnp.mean(g_j == 0)) > float(np.mean(lat_mask == 0))  # sparsified beyond the mask
    if normalize:  # unit norm before sparsifying: at most 1, and the same for every example
        kept = np.asarray(updates.normalise_per_example(jnp.asarray(grads[0]) * lat_mask, True))
        np.testing.assert_allclose(np.sqrt((kept ** 2).sum((1, 2, 3))), 1.0, rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.5, 2.7])
def test_gaussian_blur_matches_sce_jax(sigma):
    maps = np.random.default_rng(1).uniform(0, 1, (2, 9, 7, 1)).astype(np.float32)
    np.testing.assert_allclose(_nhwc(torch_search.gaussian_blur(_nchw(maps), sigma)),
                               masks.gaussian_blur(jnp.asarray(maps), sigma), atol=1e-6)


def test_mask_operations_match_sce_jax():
    rng = np.random.default_rng(0)
    change = np.zeros((3, 24, 24, 1), np.float32)
    change[:, 2:10, 3:12] = rng.uniform(0, 1, (3, 8, 9, 1)) ** 2  # a change in one corner
    change[2] = 0.0  # no change at all: the whole image stays allowed
    allowed = (rng.uniform(0, 1, (3, 24, 24, 1)) > 0.2).astype(np.float32)

    keep_j = masks.threshold_mask(jnp.asarray(change), blur_sigma=1.5, threshold=0.3)
    keep_t = torch_search.threshold_mask(_nchw(change), blur_sigma=1.5, threshold=0.3)
    np.testing.assert_array_equal(_nhwc(keep_t), keep_j)
    assert 0 < float(keep_j[:2].mean()) < 0.5 and float(keep_j[2].min()) == 1.0

    soft_j = masks.soften(keep_j * allowed, jnp.asarray(allowed), 1.0)
    soft_t = torch_search.soften(keep_t * _nchw(allowed), _nchw(allowed), 1.0)
    np.testing.assert_allclose(_nhwc(soft_t), soft_j, atol=1e-6)

    lat_j = masks.latent_mask(soft_j, 4, 1)
    lat_t = torch_search.latent_mask(soft_t, 4, 1)
    np.testing.assert_array_equal(_nhwc(lat_t), lat_j)
    assert 0 < float(lat_j[:2].mean()) < 1


def test_torch_classifier_refuses_resizing():
    with pytest.raises(ValueError, match=r"resizing to \(8, 8\) is not supported"):
        torch_search.TorchClassifier.from_preprocessing(TorchTinyNet(),
                                                        Preprocessing(input_size=(8, 8)))
