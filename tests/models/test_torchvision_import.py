"""Importing torchvision checkpoint files: file forms, inference of the architecture, strict
errors with exact messages, and orbax save/load of the result.

Files are written with ``torch.save`` (and safetensors) in tmp_path. Numeric parity of the
ported networks is checked in test_resnet.py / test_densenet.py; here, that the weights of the
file end up, unchanged, in the right places.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sce_jax.models.checkpoint import load_model, save_model
from sce_jax.models.densenet import TORCHVISION_DENSENETS, DenseNet, DenseNetConfig, densenet_config
from sce_jax.models.resnet import TORCHVISION_RESNETS, ResNet, ResNetConfig, resnet18, resnet_config
from sce_jax.models.torchvision_import import (
    ArchitectureMismatchError,
    describe_architecture,
    infer_num_classes,
    infer_torchvision_config,
    load_torchvision_classifier,
)
from sce_jax.weights.strict import WeightMismatchError
from sce_jax.weights.torch_files import WeightFileError
from sce_jax.weights.torch_layout import nnx_to_torch_state_dict, tensor_rules

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torch

NUM_CLASSES = 7
RESNET18 = "resnet18 (basic blocks (2, 2, 2, 2), 7 classes, 3 input channels)"


@pytest.fixture(scope="module")
def resnet18_state():
    """A torchvision ResNet-18 state dict with random weights and non-default BN statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            for t in (bn.weight, bn.bias, bn.running_mean):
                t.uniform_(-1.0, 1.0, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.state_dict()


@pytest.fixture(scope="module")
def resnet18_file(resnet18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet18") / "resnet18.pth"
    torch.save(resnet18_state, path)
    return path


def meta_state_dict(arch, **kwargs):
    """torchvision's tensor names and shapes for ``arch``, without allocating weights."""
    with torch.device("meta"):
        return getattr(torchvision.models, arch)(**kwargs).state_dict()


def zeros_like_torchvision(arch, **kwargs):
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in meta_state_dict(arch, **kwargs).items()}


def assert_holds(model, state_dict):
    """The model's PyTorch-layout tensors are exactly the state dict's (BN counters aside)."""
    written = nnx_to_torch_state_dict(model)
    expected = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key], value.numpy(), err_msg=key)


def write(path, obj):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("form", ["state_dict", "wrapped", "data_parallel", "safetensors"])
def test_every_file_form_loads_the_same_weights(form, resnet18_state, tmp_path):
    if form == "state_dict":
        path = write(tmp_path / "model.pth", resnet18_state)
    elif form == "wrapped":
        path = write(tmp_path / "checkpoint.pt", {"state_dict": resnet18_state, "epoch": 12,
                                                  "optimizer": {"lr": 0.1}})
    elif form == "data_parallel":
        path = write(tmp_path / "checkpoint.pth",
                     {"model": {f"module.{k}": v for k, v in resnet18_state.items()}})
    else:
        from safetensors.torch import save_file
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    model = load_torchvision_classifier(path, "resnet18")
    assert isinstance(model, ResNet)
    assert model.config == resnet_config("resnet18", num_classes=NUM_CLASSES)   # classes read from fc
    assert_holds(model, resnet18_state)


def test_architecture_classes_and_channels_are_read_from_the_file(resnet18_state, tmp_path):
    grey = dict(resnet18_state)
    grey["conv1.weight"] = grey["conv1.weight"][:, :1].clone()
    path = write(tmp_path / "grey.pth", grey)
    model = load_torchvision_classifier(path)
    assert model.config == resnet_config("resnet18", num_classes=NUM_CLASSES, in_channels=1)
    assert_holds(model, grey)
    assert infer_num_classes(grey) == NUM_CLASSES


@pytest.mark.parametrize("arch", sorted(TORCHVISION_RESNETS) + sorted(TORCHVISION_DENSENETS))
def test_config_inferred_from_torchvision_names_and_shapes(arch):
    state_dict = meta_state_dict(arch, num_classes=5)
    expected = (resnet_config if arch in TORCHVISION_RESNETS else densenet_config)(arch, num_classes=5)
    assert infer_torchvision_config(state_dict) == expected
    assert describe_architecture(expected).startswith(f"{arch} (")


def test_a_given_model_is_filled_in_place(resnet18_state, resnet18_file):
    target = nnx.eval_shape(lambda: resnet18(NUM_CLASSES))
    assert load_torchvision_classifier(resnet18_file, target) is target
    assert_holds(target, resnet18_state)
    with pytest.raises(ValueError,
                       match=r"^num_classes=10 was given, but the model to fill has num_classes=7$"):
        load_torchvision_classifier(resnet18_file, target, num_classes=10)


def test_missing_tensor_is_listed(resnet18_state, tmp_path):
    broken = {k: v for k, v in resnet18_state.items() if k != "layer1.0.bn1.running_var"}
    path = write(tmp_path / "missing.pth", broken)
    with pytest.raises(WeightMismatchError) as info:
        load_torchvision_classifier(path, "resnet18")
    assert not isinstance(info.value, ArchitectureMismatchError)
    assert str(info.value) == (f"the weights do not fit {RESNET18} (from {path}):\n"
                               "  missing from the checkpoint (1):\n"
                               "    layer1.0.bn1.running_var")


def test_unexpected_and_misshaped_tensors_are_listed_together(resnet18_state, tmp_path):
    broken = dict(resnet18_state)
    broken["layer4.1.extra.weight"] = torch.zeros(3)
    broken["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = write(tmp_path / "broken.pth", {"state_dict": broken})
    with pytest.raises(WeightMismatchError) as info:
        load_torchvision_classifier(path, "resnet18")
    assert str(info.value) == (f"the weights do not fit {RESNET18} (from {path}):\n"
                               "  unexpected in the checkpoint (1):\n"
                               "    layer4.1.extra.weight\n"
                               "  wrong shape (1), as checkpoint vs model (PyTorch layout):\n"
                               "    layer2.0.conv1.weight: (128, 64, 5, 5) vs (128, 64, 3, 3)")


def test_another_number_of_classes_is_named(resnet18_file):
    with pytest.raises(ArchitectureMismatchError) as info:
        load_torchvision_classifier(resnet18_file, "resnet18", num_classes=10)
    want = RESNET18.replace("7 classes", "10 classes")
    assert str(info.value) == (
        f"{resnet18_file} holds {RESNET18}, not {want}\n"
        f"the weights do not fit {want} (from {resnet18_file}):\n"
        "  wrong shape (2), as checkpoint vs model (PyTorch layout):\n"
        "    fc.bias: (7,) vs (10,)\n"
        "    fc.weight: (7, 512) vs (10, 512)")


def test_resnet50_file_into_resnet18_says_so(tmp_path):
    path = write(tmp_path / "resnet50.pth", zeros_like_torchvision("resnet50", num_classes=NUM_CLASSES))
    with pytest.raises(ArchitectureMismatchError) as info:
        load_torchvision_classifier(path, "resnet18")
    message = str(info.value)
    assert message.startswith(
        f"{path} holds resnet50 (bottleneck blocks (3, 4, 6, 3), 7 classes, 3 input channels), "
        f"not {RESNET18}\nthe weights do not fit {RESNET18} (from {path}):\n")
    assert "layer1.0.conv3.weight" in info.value.unexpected
    assert "layer3.5.bn2.running_mean" in info.value.unexpected
    assert ("layer1.0.conv1.weight", (64, 64, 1, 1), (64, 64, 3, 3)) in info.value.misshaped
    assert ("fc.weight", (NUM_CLASSES, 2048), (NUM_CLASSES, 512)) in info.value.misshaped


def test_densenet_file_into_a_resnet_says_so(tmp_path):
    path = write(tmp_path / "densenet121.pth", zeros_like_torchvision("densenet121", num_classes=3))
    with pytest.raises(ArchitectureMismatchError) as info:
        load_torchvision_classifier(path, "resnet50")
    assert str(info.value).startswith(
        f"{path} holds densenet121 (growth rate 32, blocks (6, 12, 24, 16), 64 stem channels, bn_size 4, "
        "3 classes, 3 input channels), not resnet50 (bottleneck blocks (3, 4, 6, 3), 3 classes, "
        "3 input channels)\n")
    assert "fc.weight" in info.value.missing and "features.conv0.weight" in info.value.unexpected


def test_an_unknown_file_needs_an_architecture(tmp_path):
    path = write(tmp_path / "other.pth", {"encoder.weight": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match=r"cannot tell which architecture this checkpoint holds"):
        load_torchvision_classifier(path)
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg16'; known: \('resnet101', "):
        load_torchvision_classifier(path, "vgg16")
    with pytest.raises(WeightFileError, match=r"not a state dict of tensors"):
        load_torchvision_classifier(write(tmp_path / "list.pt", [1, 2, 3]), "resnet18")


def test_old_torchvision_densenet_names_load(tmp_path):
    config = dict(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3)
    torch.manual_seed(1)
    state_dict = torchvision.models.DenseNet(**config).state_dict()
    old_names = {".norm1.": ".norm.1.", ".conv1.": ".conv.1.", ".norm2.": ".norm.2.", ".conv2.": ".conv.2."}
    legacy = {}
    for key, value in state_dict.items():
        if ".denselayer" in key:
            for new, old in old_names.items():
                key = key.replace(new, old)
        legacy[key] = value
    assert "features.denseblock2.denselayer2.conv.1.weight" in legacy
    model = load_torchvision_classifier(write(tmp_path / "old.pth", legacy))
    assert isinstance(model, DenseNet)
    assert model.config == DenseNetConfig(**config)
    assert_holds(model, state_dict)

    both = dict(state_dict)
    both["features.denseblock1.denselayer2.norm.1.weight"] = torch.zeros(12)
    path = write(tmp_path / "both.pth", both)
    with pytest.raises(WeightMismatchError) as info:
        load_torchvision_classifier(path)
    assert str(info.value) == (
        f"the weights do not fit {path} (tensors under both their old and current names):\n"
        "  unexpected in the checkpoint (1):\n"
        "    features.denseblock1.denselayer2.norm.1.weight (duplicate of "
        "features.denseblock1.denselayer2.norm1.weight)")


def test_import_then_orbax_round_trip(resnet18_state, resnet18_file, tmp_path):
    model = load_torchvision_classifier(resnet18_file, "resnet18")
    save_model(model, tmp_path / "checkpoint")
    loaded = load_model(tmp_path / "checkpoint", expect=(ResNet, DenseNet))
    assert isinstance(loaded, ResNet) and loaded.config == model.config
    assert_holds(loaded, resnet18_state)
    low = load_model(tmp_path / "checkpoint", expect=ResNet, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert low.fc.kernel.get_value().dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low.fc.kernel.get_value(), np.float32),
                               resnet18_state["fc.weight"].numpy().T, rtol=1e-2, atol=1e-3)


def test_a_config_names_the_architecture(tmp_path):
    """A ResNet torchvision has no constructor for (tiny widths), built from its config."""
    config = ResNetConfig(block="bottleneck", layers=(1, 2), widths=(4, 8), num_classes=3, in_channels=2)
    port = nnx.eval_shape(lambda: ResNet(config, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    state_dict = {k: torch.from_numpy(rng.normal(size=shape).astype(np.float32))
                  for k, shape in torch_layout_shapes(port).items()}
    path = write(tmp_path / "tiny.pth", state_dict)
    model = load_torchvision_classifier(path, config)
    assert model.config == config
    assert_holds(model, state_dict)
    assert infer_torchvision_config(state_dict) == config
    assert describe_architecture(config) == (
        "a ResNet (bottleneck blocks (1, 2), widths (4, 8), 3 classes, 2 input channels)")


def torch_layout_shapes(model):
    """PyTorch name -> PyTorch-layout shape of every tensor of a (possibly abstract) port."""
    rules, _ = tensor_rules(model)
    flat = {tuple(k): v for k, v in nnx.to_flat_state(nnx.state(model))}
    return {r.torch_key: r.to_torch(np.zeros(flat[r.nnx_path].get_value().shape, np.int8)).shape
            for r in rules}
