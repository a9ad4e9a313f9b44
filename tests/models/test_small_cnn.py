"""SmallCNN: parity with a PyTorch twin, trainability in JAX, orbax round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sce_jax.models.checkpoint import load_model, save_model
from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
from sce_jax.weights.model_config import ConfigError, config_from_dict
from sce_jax.weights.strict import load_torch_state_dict_into
from sce_jax.weights.torch_layout import nnx_to_torch_state_dict
from tests.fast_compile import compiled, run_jitted  # noqa: F401

RNG = np.random.default_rng(2)
TARGET = 1


def jitted_outputs(model, x, target):
    """Logits, pooled features and the input gradient of logit ``target``, in one compile."""
    graphdef, state = nnx.split(model)

    def target_logit(images, state):
        net = nnx.merge(graphdef, state)
        logits = net(images)
        return logits[:, target].sum(), (logits, net.features(images))

    (_, (logits, features)), grad = run_jitted(jax.value_and_grad(target_logit, has_aux=True),
                                               jnp.asarray(x), state)
    return logits, features, grad


def torch_twin(config):
    """The same network in a few lines of torch.nn (names ``convs.{i}``, ``fc``)."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class TorchSmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            channels = (config.in_channels,) + tuple(config.widths)
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels, channels[1:]))
            self.fc = nn.Linear(channels[-1], config.num_classes)
            self.act = nn.SiLU() if config.activation == "silu" else nn.ReLU()

        def features(self, x):
            for i, conv in enumerate(self.convs):
                x = self.act(conv(x))
                if i < len(self.convs) - 1:
                    x = F.avg_pool2d(x, 2)
            return x.mean((2, 3))

        def forward(self, x):
            return self.fc(self.features(x))

    return TorchSmallCNN()


@pytest.mark.torch
@pytest.mark.parametrize("config, size", [
    (SmallCNNConfig(in_channels=1, num_classes=10, widths=(8, 16, 24)), 28),   # Fashion-MNIST, 28 -> 14 -> 7
    (SmallCNNConfig(in_channels=3, num_classes=2, widths=(6, 12, 12, 16), activation="relu"), 30),
])
def test_torch_twin_weights_load_and_outputs_match(config, size):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    twin = torch_twin(config).eval()
    with torch.no_grad():
        for p in twin.parameters():   # biases away from zero
            p.add_(0.05 * torch.randn(p.shape))
    x = RNG.normal(size=(2, size, size, config.in_channels)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    logits = twin(xt)
    features = twin.features(xt).detach().numpy()
    logits[:, TARGET].sum().backward()

    port = nnx.eval_shape(lambda: SmallCNN(config, rngs=nnx.Rngs(0)))
    state_dict = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    load_torch_state_dict_into(port, state_dict, what="SmallCNN")
    jax_logits, jax_features, grad = jitted_outputs(port, x, TARGET)

    assert port.feature_dim == config.widths[-1]
    np.testing.assert_allclose(jax_logits, logits.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax_features, features, rtol=1e-5, atol=1e-5)
    expected_grad = xt.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-4 * np.abs(expected_grad).max())
    written = nnx_to_torch_state_dict(port)
    assert written.keys() == state_dict.keys()
    for key, value in state_dict.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)


def blobs_problem(n, seed):
    """12x12 grey noise images with one 4x4 square at a random place: bright (+1) for class 1,
    dark (-1) for class 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (n, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        r, c = rng.integers(0, 9, 2)
        x[i, r:r + 4, c:c + 4] += 1.0 if y[i] else -1.0
    return jnp.asarray(x), jnp.asarray(y)


def test_a_few_sgd_steps_in_jax_reduce_the_loss():
    """Trainable as initialised: 30 full-batch SGD steps separate bright from dark squares."""
    model = SmallCNN(SmallCNNConfig(in_channels=1, num_classes=2, widths=(8, 16)), rngs=nnx.Rngs(0))
    x, y = blobs_problem(64, seed=0)
    graphdef, params = nnx.split(model)
    tx = optax.sgd(0.1, momentum=0.9)

    def loss_and_accuracy(params):
        logits = nnx.merge(graphdef, params)(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    def step(params, opt_state):
        (loss, accuracy), grads = jax.value_and_grad(loss_and_accuracy, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    opt_state = tx.init(params)
    step = compiled(step, params, opt_state)
    losses = []
    for _ in range(31):   # the 31st step reports the loss after 30 updates
        params, opt_state, loss, accuracy = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 0.5, losses          # starts near chance (ln 2 = 0.69)
    assert losses[-1] < 0.2 * losses[0], losses
    assert float(accuracy) >= 0.95


def test_orbax_round_trip_keeps_config_and_weights(tmp_path):
    config = SmallCNNConfig(in_channels=3, num_classes=6, widths=(4, 8), activation="relu")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: SmallCNN(config, rngs=nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.tree.map(
        lambda a: jnp.asarray(RNG.normal(size=a.shape), a.dtype), state))
    save_model(model, tmp_path / "cnn")
    loaded = load_model(tmp_path / "cnn", expect=SmallCNN)
    assert isinstance(loaded, SmallCNN)
    assert loaded.config == SmallCNNConfig(in_channels=3, num_classes=6, widths=(4, 8), activation="relu")
    expected = nnx_to_torch_state_dict(model)
    actual = nnx_to_torch_state_dict(loaded)
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"activation must be one of \['relu', 'silu'\], got 'tanh'"):
        SmallCNNConfig(activation="tanh")
    with pytest.raises(ConfigError, match=r"widths must be one or more positive channel counts, got \(\)"):
        SmallCNNConfig(widths=())
    with pytest.raises(ConfigError, match=r"num_classes must be >= 1, got 0"):
        SmallCNNConfig(num_classes=0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['dropout'\]"):
        config_from_dict(SmallCNNConfig, {"widths": [8], "dropout": 0.1}, what="SmallCNN config")
