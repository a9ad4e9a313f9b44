"""Inception-v3 port against torchvision's ``inception_v3`` on random weights (75 x 75 px)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.inception import InceptionV3, InceptionV3Config, transform_input
from sce_jax.weights.strict import load_torch_state_dict_into
from sce_jax.weights.torch_layout import nnx_to_torch_state_dict

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torch

NUM_CLASSES = 10
IMAGES = np.random.default_rng(0).uniform(size=(4, 75, 75, 3)).astype(np.float32)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def random_torch_inception():
    """torchvision Inception-v3 with random weights and well-conditioned BN statistics.

    BN scales and shifts are random; the running statistics are those of the test images
    (one training-mode pass with momentum 1), with 0.5 added to every variance so that no
    channel divides by a near-zero spread (which would amplify float32 rounding).
    """
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                            num_classes=NUM_CLASSES)
    gen = torch.Generator().manual_seed(1)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.2, 0.2, generator=gen)
            bn.momentum = 1.0
        aux, model.AuxLogits = model.AuxLogits, None   # the aux head needs 299 px in training
        model.train()
        model(nchw(IMAGES))
        model.AuxLogits = aux
        for bn in batch_norms:
            bn.running_var.add_(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    reference = random_torch_inception()
    port = nnx.eval_shape(lambda: InceptionV3(InceptionV3Config(num_classes=NUM_CLASSES),
                                              rngs=nnx.Rngs(0)))
    state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
    load_torch_state_dict_into(port, state_dict, what="InceptionV3")
    return reference, port, state_dict


def test_logits_and_pool_features_match_torchvision(models):
    reference, port, _ = models
    x = IMAGES[:2]
    pooled = {}
    hook = reference.avgpool.register_forward_hook(
        lambda module, inputs, output: pooled.update(features=output.flatten(1).numpy()))
    with torch.no_grad():
        expected_logits = reference(nchw(x)).numpy()
    hook.remove()

    graphdef, state = nnx.split(port)

    @jax.jit
    def forward(state, images):
        net = nnx.merge(graphdef, state)
        features = net.features(images)
        return net.fc(features), features

    logits, features = forward(state, jnp.asarray(x))
    assert features.shape == (2, 2048)
    scale = np.abs(expected_logits).max()
    np.testing.assert_allclose(np.asarray(logits), expected_logits, atol=1e-5 * scale, rtol=0)
    scale = np.abs(pooled["features"]).max()
    np.testing.assert_allclose(np.asarray(features), pooled["features"], atol=1e-5 * scale, rtol=0)


def test_auxiliary_classifier_matches_torchvision(models):
    reference, port, _ = models
    h = np.random.default_rng(1).normal(size=(1, 17, 17, 768)).astype(np.float32)
    with torch.no_grad():
        expected = reference.AuxLogits(nchw(h)).numpy()
    np.testing.assert_allclose(np.asarray(port.AuxLogits(jnp.asarray(h))), expected,
                               atol=1e-5 * np.abs(expected).max(), rtol=0)


def test_transform_input_matches_torchvision():
    x = IMAGES[:1, :2, :2]
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                                init_weights=False, transform_input=True)
    expected = reference._transform_input(nchw(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(transform_input(jnp.asarray(x))), expected,
                               rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip(models):
    _, port, state_dict = models
    back = nnx_to_torch_state_dict(port)
    expected = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert sorted(back) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_too_small_images_are_refused(models):
    _, port, _ = models
    with pytest.raises(ValueError, match="needs images of at least 75 x 75 pixels, got 64 x 80"):
        port.features(jnp.zeros((1, 64, 80, 3)))
    with pytest.raises(ValueError,
                       match=r"takes \(N, H, W, 3\) images, got shape \(1, 75, 75, 1\)"):
        port.features(jnp.zeros((1, 75, 75, 1)))
