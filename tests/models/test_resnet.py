"""ResNet port against torchvision on random weights (32 x 32 px, 7 classes, eval mode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.resnet import (
    Bottleneck,
    ResNet,
    ResNetConfig,
    resnet50,
    resnet_config,
    torchvision_resnet_name,
)
from sce_jax.weights.model_config import ConfigError, config_from_dict
from sce_jax.weights.strict import load_torch_state_dict_into
from sce_jax.weights.torch_layout import nnx_to_torch_state_dict, tensor_rules
from tests.fast_compile import compiled, run_jitted  # noqa: F401
from tests.torch_interop import assert_close, nchw, nhwc, numpy_state_dict, randomise_batch_norms  # noqa: F401

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torch

NUM_CLASSES = 7
TARGET = 3          # the logit whose input gradient is compared
RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(2, 32, 32, 3)).astype(np.float32)
CALIBRATION = RNG.normal(size=(8, 32, 32, 3)).astype(np.float32)



def jitted(model, method="__call__"):
    """``x -> model.<method>(x)``, compiled (eager ops would each compile on their own)."""
    graphdef, state = nnx.split(model)
    by_shape = {}

    def apply(x):
        x = jnp.asarray(x)
        if x.shape not in by_shape:
            by_shape[x.shape] = compiled(
                lambda state, x: getattr(nnx.merge(graphdef, state), method)(x), state, x)
        return by_shape[x.shape](state, x)
    return apply


def random_port(config, seed, **kw):
    """A ResNet with random weights and batch-norm statistics, built without running the
    initialisers (numpy values into an abstract model)."""
    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: ResNet(config, rngs=nnx.Rngs(0), **kw)))

    def value(path, abstract):
        shape, name = abstract.shape, path[-1]
        if name == "var":
            x = rng.uniform(0.5, 2.0, shape)
        elif name == "scale":
            x = rng.uniform(0.5, 1.5, shape)
        elif name in ("mean", "bias"):
            x = rng.normal(0.0, 0.3, shape)
        else:  # kernels: unit-variance outputs
            x = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[:-1]))
        return jnp.asarray(x, abstract.dtype)

    state = nnx.from_flat_state(
        {path: v.replace(value(path, v.get_value())) for path, v in nnx.to_flat_state(state)})
    return nnx.merge(graphdef, state)


def torchvision_and_port_outputs(arch, with_grad):
    """torchvision's and the port's logits and pooled features (and the input gradient of one
    logit when ``with_grad``)."""
    torch.manual_seed(0)
    reference = randomise_batch_norms(getattr(torchvision.models, arch)(num_classes=NUM_CLASSES),
                                      CALIBRATION, 1)
    pooled = {}
    reference.avgpool.register_forward_hook(
        lambda module, inputs, output: pooled.update(features=output.flatten(1).detach().numpy()))
    x = nchw(IMAGES).requires_grad_(with_grad)
    logits = reference(x)
    expected = dict(logits=logits.detach().numpy(), features=pooled["features"])
    if with_grad:
        logits[:, TARGET].sum().backward()
        expected["grad"] = nhwc(x.grad)

    port = nnx.eval_shape(lambda: ResNet(resnet_config(arch, num_classes=NUM_CLASSES), rngs=nnx.Rngs(0)))
    load_torch_state_dict_into(port, numpy_state_dict(reference), what=arch)
    graphdef, state = nnx.split(port)

    def target_logit(images, state):
        net = nnx.merge(graphdef, state)
        logits = net(images)
        return logits[:, TARGET].sum(), (logits, net.features(images))

    if with_grad:
        (_, (logits, features)), grad = run_jitted(jax.value_and_grad(target_logit, has_aux=True),
                                                   jnp.asarray(IMAGES), state)
        actual = dict(logits=logits, features=features, grad=grad)
    else:
        _, (logits, features) = run_jitted(target_logit, jnp.asarray(IMAGES), state)
        actual = dict(logits=logits, features=features)
    return reference, port, expected, actual


@pytest.fixture(scope="module")
def outputs():
    """arch -> (torch reference, port, expected, actual), computed once per module. Gradients are compared on
    ResNet-18 only: ResNet-50 adds no operation to differentiate, only compile time."""
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = torchvision_and_port_outputs(arch, with_grad=arch == "resnet18")
        return cache[arch]
    return get


@pytest.fixture(params=["resnet18", "resnet50"])
def parity(request, outputs):
    return (request.param,) + outputs(request.param)[1:]


def test_logits_match_torchvision(parity):
    _, _, expected, actual = parity
    assert actual["logits"].shape == (2, NUM_CLASSES)
    assert_close(actual["logits"], expected["logits"])


def test_pooled_features_match_torchvision(parity):
    arch, port, expected, actual = parity
    assert port.feature_dim == {"resnet18": 512, "resnet50": 2048}[arch]
    assert actual["features"].shape == (2, port.feature_dim)
    assert_close(actual["features"], expected["features"])


def test_input_gradient_of_one_logit_matches_torch_autograd(outputs):
    _, _, expected, actual = outputs("resnet18")
    assert np.abs(expected["grad"]).max() > 0
    assert_close(actual["grad"], expected["grad"], floor=0.0)


def test_port_writes_back_the_torchvision_state_dict(outputs):
    reference, port, _, _ = outputs("resnet18")
    written = nnx_to_torch_state_dict(port)
    fresh = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    result = fresh.load_state_dict({k: torch.tensor(v) for k, v in written.items()}, strict=False)
    assert result.unexpected_keys == []
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(written[key], value.numpy(), err_msg=key)


def _torch_layout_shapes(model):
    rules, _ = tensor_rules(model)
    state = {tuple(k): v for k, v in nnx.to_flat_state(nnx.state(model))}
    return {r.torch_key: r.to_torch(np.zeros(state[r.nnx_path].get_value().shape, np.int8)).shape
            for r in rules}


@pytest.mark.parametrize("arch", ["resnet34", "resnext50_32x4d", "wide_resnet50_2"])
def test_every_tensor_name_and_shape_matches_torchvision(arch):
    with torch.device("meta"):
        reference = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    config = resnet_config(arch, num_classes=NUM_CLASSES)
    port = nnx.eval_shape(lambda: ResNet(config, rngs=nnx.Rngs(0)))
    assert _torch_layout_shapes(port) == expected
    assert port.feature_dim == reference.fc.in_features
    assert torchvision_resnet_name(config) == arch


def test_grouped_wide_bottleneck_with_stride_matches_torchvision():
    """ResNeXt/Wide-ResNet blocks: grouped 3x3 convolution carrying the stride (v1.5)."""
    from torchvision.models.resnet import Bottleneck as TorchBottleneck
    torch.manual_seed(4)
    downsample = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1, stride=2, bias=False),
                                     torch.nn.BatchNorm2d(32))
    reference = TorchBottleneck(16, 8, stride=2, downsample=downsample, groups=4, base_width=16)
    reference = randomise_bn_only(reference, 5)
    block = nnx.eval_shape(lambda: Bottleneck(16, 8, 2, groups=4, width_per_group=16, rngs=nnx.Rngs(0)))
    assert block.conv2.kernel.get_value().shape == (3, 3, 2, 8)   # width 8 in 4 groups of 2
    load_torch_state_dict_into(block, numpy_state_dict(reference))
    x = RNG.normal(size=(2, 9, 9, 16)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(reference(nchw(x)))
    assert expected.shape == (2, 5, 5, 32)
    assert_close(jitted(block)(x), expected)


def randomise_bn_only(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.3, 0.3, generator=gen)
            bn.running_mean.uniform_(-0.3, 0.3, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
    return module.eval()


TINY = ResNetConfig(block="bottleneck", layers=(1, 1), widths=(4, 8), num_classes=5, in_channels=1)
TINY_IMAGES = RNG.normal(size=(3, 16, 16, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return random_port(TINY, seed=0)


def test_batch_norm_uses_running_statistics_even_in_train_mode(tiny):
    """No batch coupling: an example's logits do not depend on the rest of the batch, and
    ``model.train()`` does not switch batch norm to batch statistics."""
    forward = jitted(tiny)
    batch = forward(TINY_IMAGES)
    other_batch = forward(np.concatenate([TINY_IMAGES[:1], 3.0 * TINY_IMAGES[1:] + 1.0]))
    tiny.train()
    try:
        train_mode = jitted(tiny)(TINY_IMAGES)
    finally:
        tiny.eval()
    assert np.abs(np.asarray(batch[1:]) - np.asarray(other_batch[1:])).max() > 1e-2
    np.testing.assert_allclose(other_batch[:1], batch[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(train_mode, batch, rtol=1e-5, atol=1e-6)


def test_replace_head_keeps_features_and_updates_config():
    model = random_port(TINY, seed=1)
    before = jitted(model, "features")(TINY_IMAGES)
    model.replace_head(40, rngs=nnx.Rngs(2))
    assert model.config.num_classes == 40 and model.config.widths == TINY.widths
    assert model.fc.kernel.get_value().shape == (model.feature_dim, 40) == (32, 40)
    np.testing.assert_array_equal(jitted(model, "features")(TINY_IMAGES), before)
    np.testing.assert_allclose(jitted(model)(TINY_IMAGES),
                               before @ model.fc.kernel.get_value() + model.fc.bias.get_value(),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(tiny):
    _, state = nnx.split(tiny)
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: ResNet(TINY, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)))
    low = nnx.merge(graphdef, jax.tree.map(lambda a: a.astype(jnp.bfloat16), state))
    full, half = jitted(tiny)(TINY_IMAGES), jitted(low)(TINY_IMAGES)
    assert half.dtype == jnp.bfloat16
    assert low.conv1.kernel.get_value().dtype == jnp.bfloat16
    assert np.abs(np.asarray(full)).max() > 0.1
    assert_close(half.astype(jnp.float32), full, rel=3e-2)


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"basic blocks support only groups=1 and width_per_group=64 "
                                          r"\(as torchvision\), got 32 and 4"):
        ResNetConfig(block="basic", groups=32, width_per_group=4)
    with pytest.raises(ConfigError,
                       match=r"widths \(64, 128\) must have one entry per stage \(layers \(2, 2, 2\)\)"):
        ResNetConfig(layers=(2, 2, 2), widths=(64, 128))
    with pytest.raises(ConfigError, match=r"block must be one of \['basic', 'bottleneck'\], got 'wide'"):
        ResNetConfig(block="wide")
    with pytest.raises(ConfigError, match=r"unknown ResNet architecture 'resnet19'; known: \["):
        resnet_config("resnet19")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['depth'\]"):
        config_from_dict(ResNetConfig, {"depth": 50}, what="ResNet config")
    assert config_from_dict(ResNetConfig, {"block": "bottleneck", "layers": [3, 4, 6, 3]},
                            what="ResNet config") == resnet_config("resnet50")


def test_constructor_builds_the_named_layout():
    model = nnx.eval_shape(lambda: resnet50(NUM_CLASSES, in_channels=1))
    assert model.config == resnet_config("resnet50", num_classes=NUM_CLASSES, in_channels=1)
    assert model.conv1.kernel.get_value().shape == (7, 7, 1, 64)
    assert model.fc.kernel.get_value().shape == (2048, NUM_CLASSES)
    assert [len(stage) for stage in model.stages()] == [3, 4, 6, 3]
