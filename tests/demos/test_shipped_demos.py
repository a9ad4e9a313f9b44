"""The models and data that ship inside the package are what provenance.json says they are.

- the diffusers-format copy of each demo autoencoder loads in diffusers' PyTorch
  ``AutoencoderKL`` and decodes like the orbax checkpoint the runs use;
- the shipped classifiers are not random: on the shipped demo images they agree with the
  labels about as often as their recorded test accuracy says, and the surrogate is a
  different network;
- the shipped demo config runs end to end (its ``:tiny`` shrink) on the shipped files.
"""

import json
import os

import numpy as np
import pytest

from sce_jax.assets import asset_path
from sce_jax.models.checkpoint import load_model
from tests import ROOT

DEMOS = ("fashion_mnist", "squares")
DATA = {"fashion_mnist": "test_subset.npz", "squares": "test_set.npz"}


def _provenance():
    with open(asset_path("provenance.json")) as f:
        return json.load(f)


def _demo_images(demo):
    with np.load(asset_path(demo, DATA[demo])) as data:
        images = data["images"].astype(np.float32)
        labels = data["labels"].astype(np.int64).reshape(-1)
    if images.max() > 1.0:
        images = images / 255.0
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


@pytest.mark.torch
@pytest.mark.parametrize("demo", DEMOS)
def test_diffusers_copy_decodes_like_the_orbax_checkpoint(demo):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import jax.numpy as jnp

    ours = load_model(asset_path(demo, "autoencoder"))
    theirs = diffusers.AutoencoderKL.from_pretrained(asset_path(demo, "autoencoder_diffusers")).eval()
    assert theirs.config.scaling_factor == pytest.approx(ours.config.scaling_factor)
    images, _ = _demo_images(demo)
    x = images[:3] * 2.0 - 1.0                                   # diffusers' [-1, 1]
    with torch.no_grad():
        torch_latent = theirs.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist.mean
        torch_decoded = theirs.decode(torch_latent).sample.numpy().transpose(0, 2, 3, 1)
    latent = np.asarray(ours.encode(jnp.asarray(x)).mean)
    np.testing.assert_allclose(latent, torch_latent.numpy().transpose(0, 2, 3, 1), atol=1e-4)
    decoded = np.asarray(ours.decode(jnp.asarray(latent)))
    np.testing.assert_allclose(decoded, torch_decoded, atol=1e-4)
    # a trained autoencoder reconstructs its own data (random weights would not)
    assert np.abs((decoded + 1) / 2 - images[:3]).mean() < 0.1


@pytest.mark.parametrize("demo", DEMOS)
def test_shipped_classifiers_match_their_recorded_accuracy(demo):
    import jax.numpy as jnp

    record = _provenance()[demo]
    images, labels = _demo_images(demo)
    predictions = {}
    for role in ("classifier", "surrogate"):
        model = load_model(asset_path(demo, role))
        predictions[role] = np.asarray(jnp.argmax(model(jnp.asarray(images)), axis=-1))
        accuracy = float(np.mean(predictions[role] == labels))
        # a few test images: allow for sampling noise around the recorded test accuracy
        assert accuracy >= record[role]["test_accuracy"] - 0.2, (role, accuracy)
    assert load_model(asset_path(demo, "surrogate")).config != load_model(
        asset_path(demo, "classifier")).config


def test_fashion_mnist_demo_config_runs_on_the_shipped_files(tmp_path):
    from sce_jax.launch.config_files import load_config_module
    from sce_jax.runs import loop as run
    from sce_jax.workdir import layout as workdir

    module = load_config_module(os.path.join(
        ROOT, "configs", "fashion_mnist.py"))
    config = module.get_config("tiny")
    config.output.report = False
    summary = run.explain_dataset(config, str(tmp_path / "run"))
    assert summary["complete"] and summary["num_images"] == 4 and summary["num_skipped"] == 0
    records = workdir.read_part_records(str(tmp_path / "run"))
    assert len(records) == 4 * config.search.attempts
    for r in records:  # "other": the target is to leave the predicted class
        assert r["status"] == "ok" and r["target"] == r["prediction"]
        assert r["prob_target_before"] == pytest.approx(1.0 - r["prob_prediction"], abs=1e-5)
        if r["success"]:
            assert r["prediction_after"] != r["prediction"]


@pytest.mark.parametrize("demo", DEMOS)
def test_the_shipped_prior_models_its_demo_latents(demo):
    """The prior is the recorded architecture and predicts the flow on the demo's latents:
    its rectified-flow loss is far below the 2.0 of predicting no velocity at all."""
    import jax
    import jax.numpy as jnp

    from sce_jax import Generator
    from sce_jax.demos.training import flow_matching_loss
    from sce_jax.models.latent_flow import LatentFlowTransformer

    record = _provenance()[demo]["prior"]
    prior = load_model(asset_path(demo, "prior"), expect=LatentFlowTransformer)
    config = prior.config
    assert config.hidden_size == record["config"]["hidden_size"]
    assert config.depth == record["config"]["depth"]
    generator = Generator.from_autoencoder(load_model(asset_path(demo, "autoencoder")))
    images, _ = _demo_images(demo)
    latents = generator.encode(jnp.asarray(images))
    loss = float(np.mean([float(flow_matching_loss(prior, latents, jax.random.key(i)))
                          for i in range(4)]))
    assert loss < 1.2, loss
    assert record["sample_quality"]["fid_samples_vs_test"] > record["sample_quality"][
        "fid_reconstructions_vs_test"]


@pytest.mark.parametrize("demo", DEMOS)
def test_validation_images_are_apart_from_the_test_images(demo):
    """Settings are chosen on ``:validation``: images of the same kind as the reported test
    images, none of them a test image (Fashion-MNIST: other indices of the test split, which
    the models never trained on; squares: another seed)."""
    from sce_jax.launch.config_files import load_config_module

    module = load_config_module(os.path.join(ROOT, "configs", f"{demo}.py"))
    source = module.get_config("validation").data.source
    assert source != module.get_config().data.source and os.path.isfile(source)
    with np.load(source) as val, np.load(asset_path(demo, DATA[demo])) as test:
        assert val["images"].shape[1:] == test["images"].shape[1:]
        assert len(val["images"]) == len(test["images"])
        assert set(val["labels"].tolist()) == set(test["labels"].tolist())  # every class
        seen = {image.tobytes() for image in test["images"]}
        assert not any(image.tobytes() in seen for image in val["images"])
        if demo == "fashion_mnist":
            assert not set(val["source_indices"].tolist()) & set(test["source_indices"].tolist())
            np.testing.assert_array_equal(np.bincount(val["labels"]), [2] * 10)  # balanced
    recorded = _provenance()[demo]["validation_data"]
    assert recorded["file"] == os.path.basename(source) and recorded["num_images"] == len(seen)
