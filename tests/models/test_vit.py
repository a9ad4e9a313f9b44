"""ViT port against torchvision's VisionTransformer on tiny random configs (2 layers, width 32,
32 px images in 8 px patches, 7 classes), imported through the torchvision import path."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sce_jax.classifier import Classifier, Preprocessing
from sce_jax.models.checkpoint import load_model, save_model
from sce_jax.models.torchvision_import import (
    ArchitectureMismatchError,
    describe_architecture,
    infer_torchvision_config,
    load_torchvision_classifier,
)
from sce_jax.models.vit import (
    TORCHVISION_VITS,
    VisionTransformer,
    VisionTransformerConfig,
    interpolate_position_embedding,
    vit_config,
)
from sce_jax.runs.loaders import load_classifier
from sce_jax.weights.strict import WeightMismatchError
from tests.fast_compile import run_jitted
from tests.torch_interop import assert_close, nchw

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.torch

TINY = dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=48, num_classes=7)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # ImageNet, as torchvision's ViT weights
TARGET = 3


def torch_vit(image_size=32, representation_size=None, seed=0):
    """torchvision's ViT with every tensor random (its zero-initialised head and class token
    too), eval mode."""
    from torchvision.models.vision_transformer import VisionTransformer as TorchViT
    torch.manual_seed(seed)
    model = TorchViT(image_size=image_size, representation_size=representation_size, **TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "encoder.ln.weight":
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1 or name in ("class_token", "encoder.pos_embedding"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.8 / p[0].numel() ** 0.5)
    return model


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def torch_logits(model, x):
    with torch.no_grad():
        return model(nchw(x)).numpy()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    model = torch_vit()
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(model.state_dict(), path)
    return model, path


def tiny_config(**changes):
    return VisionTransformerConfig(image_size=32, **{**TINY, **changes})


@pytest.mark.parametrize("representation_size", [None, 16])
def test_logits_and_features_match_torchvision(representation_size, tmp_path):
    model = torch_vit(representation_size=representation_size)
    path = tmp_path / "vit.pth"
    torch.save(model.state_dict(), path)
    port = load_torchvision_classifier(path, tiny_config(representation_size=representation_size))
    x = images(32)
    logits, features = run_jitted(lambda x: (port(x), port.features(x)), x)
    assert_close(logits, torch_logits(model, x), rel=1e-4)
    with torch.no_grad():
        tokens = model._process_input(nchw(x))
        tokens = torch.cat([model.class_token.expand(2, -1, -1), tokens], dim=1)
        expected = model.encoder(tokens)[:, 0].numpy()
    assert_close(features, expected, rel=1e-4)


@pytest.mark.parametrize("image_size", [48, 24])
def test_other_image_size_interpolates_position_embeddings_as_torchvision(tiny_file, image_size):
    from torchvision.models.vision_transformer import VisionTransformer as TorchViT
    from torchvision.models.vision_transformer import interpolate_embeddings
    model, path = tiny_file
    resized = interpolate_embeddings(image_size, TINY["patch_size"],
                                     {k: v.clone() for k, v in model.state_dict().items()})
    reference = TorchViT(image_size=image_size, **TINY).eval()
    reference.load_state_dict(resized)
    np.testing.assert_allclose(
        interpolate_position_embedding(model.encoder.pos_embedding.detach().numpy(),
                                       image_size // TINY["patch_size"]),
        resized["encoder.pos_embedding"].numpy(), atol=1e-6)

    port = load_torchvision_classifier(path, tiny_config(), image_size=image_size)
    assert port.config.image_size == image_size
    x = images(image_size, seed=1)
    assert_close(run_jitted(port, x), torch_logits(reference, x), rel=1e-4)


def test_classifier_input_gradient_matches_torch(tiny_file):
    model, path = tiny_file
    port = load_torchvision_classifier(path, tiny_config())
    classifier = Classifier.from_nnx(port, preprocessing=Preprocessing(mean=MEAN, std=STD))
    x = images(32, seed=2)
    grad = run_jitted(jax.grad(lambda x: jnp.sum(classifier.logits(x)[:, TARGET])), x)

    xt = nchw(x).requires_grad_(True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    model((xt - mean) / std)[:, TARGET].sum().backward()
    assert_close(grad, xt.grad.numpy().transpose(0, 2, 3, 1), rel=1e-4)


def test_wrong_image_size_is_refused(tiny_file):
    _, path = tiny_file
    port = load_torchvision_classifier(path, tiny_config())
    with pytest.raises(ValueError, match=r"expected \(32, 32, 3\) NHWC images"):
        port(jnp.zeros((1, 40, 40, 3)))


@pytest.mark.parametrize("arch", sorted(TORCHVISION_VITS))
def test_config_inferred_from_torchvision_names_and_shapes(arch):
    with torch.device("meta"):
        state_dict = getattr(torchvision.models, arch)(num_classes=5).state_dict()
    expected = vit_config(arch, num_classes=5)
    assert infer_torchvision_config(state_dict) == expected
    assert describe_architecture(expected).startswith(f"{arch} (224 px images in ")


def test_tiny_file_without_a_torchvision_shape_needs_a_config(tiny_file):
    _, path = tiny_file
    with pytest.raises(ValueError, match="cannot tell which architecture"):
        load_torchvision_classifier(path)


def test_strict_import_names_the_architecture(tiny_file, tmp_path):
    model, _ = tiny_file
    state = dict(model.state_dict())
    del state["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightMismatchError) as info:
        load_torchvision_classifier(path, tiny_config())
    assert info.value.missing == ["encoder.layers.encoder_layer_1.self_attention.in_proj_bias"]
    with pytest.raises(ValueError, match="image_size=64 applies to ViTs only"):
        load_torchvision_classifier(path, "resnet18", image_size=64)


def test_a_vit_b_16_file_into_a_tiny_config_says_so(tmp_path):
    with torch.device("meta"):
        names = torchvision.models.vit_b_16(num_classes=7).state_dict()
    path = tmp_path / "vit_b_16.pth"
    torch.save({k: torch.zeros(v.shape) for k, v in names.items()}, path)
    with pytest.raises(ArchitectureMismatchError, match=r"holds vit_b_16 \(224 px images in 16 px"):
        load_torchvision_classifier(path, tiny_config())


def test_old_mlp_names_load(tiny_file, tmp_path):
    model, _ = tiny_file
    old = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
           for k, v in model.state_dict().items()}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    port = load_torchvision_classifier(path, tiny_config())
    np.testing.assert_array_equal(
        np.asarray(port.encoder.layers.encoder_layer_1.mlp[3].kernel[...]),
        model.state_dict()["encoder.layers.encoder_layer_1.mlp.3.weight"].numpy().T)


def test_checkpoint_round_trip_and_run_loader(tiny_file, tmp_path):
    model, path = tiny_file
    port = load_torchvision_classifier(path, tiny_config())
    directory = save_model(port, tmp_path / "ckpt")
    again = load_model(directory, expect=VisionTransformer)
    assert again.config == port.config
    config = ml_collections.ConfigDict(dict(
        checkpoint=directory, head="multiclass", input_size=(), channels=3, mean=MEAN, std=STD,
        class_names=()))
    classifier = load_classifier(config)
    x = images(32, seed=3)
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    assert_close(run_jitted(classifier.logits, x), torch_logits(model, (x - mean) / std), rel=1e-4)
