"""DenseNet port against torchvision on random weights (eval mode).

DenseNet-121 itself: logits and pooled features at 32 x 32 px, batch 2, 7 classes. Input
gradients and the trunk's feature map are compared on a small torchvision ``DenseNet``
(growth 8) at 36 x 36 px, whose odd intermediate size (9 -> 4) also exercises the floor of the
transition pooling.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.densenet import (
    DenseNet,
    DenseNetConfig,
    densenet121,
    densenet_config,
    densenet_legacy_key,
    torchvision_densenet_name,
)
from sce_jax.weights.model_config import ConfigError
from sce_jax.weights.strict import load_torch_state_dict_into
from tests.fast_compile import compiled, run_jitted  # noqa: F401
from tests.torch_interop import assert_close, nchw, nhwc, numpy_state_dict, randomise_batch_norms  # noqa: F401

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torch

NUM_CLASSES = 7
TARGET = 2
RNG = np.random.default_rng(1)
IMAGES = RNG.normal(size=(2, 32, 32, 3)).astype(np.float32)
CALIBRATION = RNG.normal(size=(8, 32, 32, 3)).astype(np.float32)
SMALL = dict(growth_rate=8, block_config=(2, 3, 2), num_init_features=16, bn_size=2, num_classes=5)
SMALL_IMAGES = RNG.normal(size=(2, 36, 36, 3)).astype(np.float32)



@pytest.fixture(scope="module")
def densenet121_outputs():
    torch.manual_seed(0)
    reference = randomise_batch_norms(torchvision.models.densenet121(num_classes=NUM_CLASSES),
                                      CALIBRATION, 1)
    with torch.no_grad():
        pooled = torch.relu(reference.features(nchw(IMAGES))).mean((2, 3))
        logits = reference(nchw(IMAGES))
    expected = dict(logits=logits.numpy(), features=pooled.numpy())

    port = nnx.eval_shape(lambda: densenet121(NUM_CLASSES))
    assert port.config == densenet_config("densenet121", num_classes=NUM_CLASSES)
    load_torch_state_dict_into(port, numpy_state_dict(reference), what="densenet121")
    graphdef, state = nnx.split(port)

    def forward(state, images):
        net = nnx.merge(graphdef, state)
        return dict(logits=net(images), features=net.features(images))
    return port, expected, run_jitted(forward, state, jnp.asarray(IMAGES))


def test_densenet121_logits_match_torchvision(densenet121_outputs):
    _, expected, actual = densenet121_outputs
    assert actual["logits"].shape == (2, NUM_CLASSES)
    assert_close(actual["logits"], expected["logits"])


def test_densenet121_pooled_features_match_torchvision(densenet121_outputs):
    port, expected, actual = densenet121_outputs
    assert port.feature_dim == 1024
    assert actual["features"].shape == (2, 1024)
    assert_close(actual["features"], expected["features"])


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(3)
    reference = torchvision.models.DenseNet(**SMALL)
    reference = randomise_batch_norms(reference, RNG.normal(size=(8, 36, 36, 3)).astype(np.float32), 4)
    port = nnx.eval_shape(lambda: DenseNet(DenseNetConfig(**SMALL), rngs=nnx.Rngs(0)))
    load_torch_state_dict_into(port, numpy_state_dict(reference))
    return reference, port


def test_input_gradient_logits_and_feature_map_match_torch(small):
    reference, port = small
    x = nchw(SMALL_IMAGES).requires_grad_(True)
    feature_map = reference.features(x)
    logits = reference(x)
    logits[:, TARGET].sum().backward()
    graphdef, state = nnx.split(port)

    def target_logit(images, state):
        net = nnx.merge(graphdef, state)
        logits = net(images)
        return logits[:, TARGET].sum(), (logits, net.features.feature_map(images))

    (_, (jax_logits, jax_feature_map)), grad = run_jitted(
        jax.value_and_grad(target_logit, has_aux=True), jnp.asarray(SMALL_IMAGES), state)
    assert_close(jax_logits, logits.detach().numpy())
    assert jax_feature_map.shape == (2, 2, 2, reference.classifier.in_features)   # 36 -> 18 -> 9 -> 4 -> 2
    assert_close(jax_feature_map, nhwc(feature_map))
    expected = nhwc(x.grad)
    assert np.abs(expected).max() > 0
    assert_close(grad, expected, floor=0.0)


def test_legacy_dense_layer_names_are_renamed(small):
    reference, _ = small
    current = numpy_state_dict(reference)
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in current.items()}
    assert "features.denseblock1.denselayer1.norm.1.running_var" in legacy
    assert "features.denseblock2.denselayer3.conv.2.weight" in legacy
    assert {densenet_legacy_key(k) for k in legacy} == set(current)
    assert densenet_legacy_key("features.transition1.norm.weight") == "features.transition1.norm.weight"
    port = nnx.eval_shape(lambda: DenseNet(DenseNetConfig(**SMALL), rngs=nnx.Rngs(0)))
    load_torch_state_dict_into(port, legacy, rename=densenet_legacy_key)
    kernel = port.features.denseblock2.denselayer3.conv2.kernel.get_value()
    np.testing.assert_array_equal(
        kernel, current["features.denseblock2.denselayer3.conv2.weight"].transpose(2, 3, 1, 0))


def test_replace_head_gives_an_attribute_head_on_the_same_features(small):
    """STEEX-style: keep the DenseNet features, put a linear head of another width on them."""
    reference, loaded = small
    graphdef, state = nnx.split(loaded)
    model = nnx.merge(graphdef, jax.tree.map(jnp.array, state))   # a copy to modify
    model.replace_head(40, rngs=nnx.Rngs(5))
    assert model.config == DenseNetConfig(**{**SMALL, "num_classes": 40})
    assert model.classifier.kernel.get_value().shape == (reference.classifier.in_features, 40)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model.features), nnx.state(loaded.features))
    graphdef, state = nnx.split(model)

    def forward(state, x):
        net = nnx.merge(graphdef, state)
        return net.features(x), net(x)
    features, logits = run_jitted(forward, state, jnp.asarray(SMALL_IMAGES))
    head = model.classifier
    np.testing.assert_allclose(logits, features @ head.kernel.get_value() + head.bias.get_value(),
                               rtol=1e-5, atol=1e-5)
    assert loaded.config.num_classes == SMALL["num_classes"]
    assert loaded.classifier.kernel.get_value().shape[1] == SMALL["num_classes"]


@pytest.mark.parametrize("arch", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_named_configs_have_torchvision_widths(arch):
    """Every tensor name and shape of DenseNet-121 is checked by loading it strictly above;
    for the other constructors the table entries are checked against torchvision's head."""
    with torch.device("meta"):
        reference = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    config = densenet_config(arch, num_classes=NUM_CLASSES)
    assert config.feature_dim == reference.classifier.in_features
    assert config.num_init_features == reference.features.conv0.out_channels
    assert config.growth_rate == reference.features.denseblock1.denselayer1.conv2.out_channels
    assert config.block_config == tuple(
        len(getattr(reference.features, f"denseblock{i + 1}")) for i in range(len(config.block_config)))
    assert torchvision_densenet_name(config) == arch


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"DenseNetConfig.growth_rate must be >= 1, got 0"):
        DenseNetConfig(growth_rate=0)
    with pytest.raises(ConfigError, match=r"block_config must be one or more positive counts, got \(6, 0\)"):
        DenseNetConfig(block_config=(6, 0))
    with pytest.raises(ConfigError, match=r"unknown DenseNet architecture 'densenet100'; known: \["):
        densenet_config("densenet100")
    assert densenet_config("densenet121", num_classes=3, in_channels=1) == DenseNetConfig(
        growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=3, in_channels=1)
