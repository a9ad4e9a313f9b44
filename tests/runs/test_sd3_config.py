"""configs/sd3.py end to end on a tiny random SD3 pipeline folder written by diffusers: its VAE
as the generator, its transformer as the prior (prompt embeddings from an .npz), an orbax
classifier; and the ways such a run refuses to start."""

import json
import os

import numpy as np
import pytest

from sce_jax.launch.config_files import load_config_module
from sce_jax.priors.prompt_embeddings import save_prompt_embeddings
from sce_jax.runs import loop as run
from sce_jax.runs.config import RunConfigError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from tests.run_helpers import write_pipeline_run_inputs  # noqa: E402
from tests.sd3_pipeline_folder import TRANSFORMER, write_tiny_sd3_pipeline  # noqa: E402
from tests.search_helpers import with_overrides  # noqa: E402

pytestmark = pytest.mark.torch

from tests import ROOT

SD3_CONFIG = os.path.join(ROOT, "configs", "sd3.py")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3_run")
    pipeline = write_tiny_sd3_pipeline(str(root / "pipeline"))
    return dict(pipeline=pipeline, **write_pipeline_run_inputs(root, TRANSFORMER, 2))


def sd3_config(inputs, **overrides):
    arg = ",".join(f"{k}={inputs[k]}" for k in ("pipeline", "embeddings", "classifier"))
    c = load_config_module(SD3_CONFIG).get_config(arg)
    c.data.source = inputs["data"]
    c.data.image_size = (16, 16)            # latent 8x8x16 (VAE / 2), 4x4 patches
    c.search.steps = 2
    c.search.attempts = 1
    c.search.smoothing.num_samples = 1
    c.search.prior.denoise_steps = 1
    c.output.report = False
    return with_overrides(c, **{key.replace("__", "."): value for key, value in overrides.items()})


def manifest(workdir):
    with open(os.path.join(workdir, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_sd3_config_runs_with_the_pipelines_transformer_as_prior(inputs, tmp_path):
    with_prior = str(tmp_path / "prior")
    summary = run.explain_dataset(sd3_config(inputs), with_prior)
    assert summary["complete"]
    records = manifest(with_prior)
    assert [r["status"] for r in records] == ["ok", "ok"]
    without = str(tmp_path / "no_prior")
    run.explain_dataset(sd3_config(inputs, search__prior__enabled=False), without)
    # the transformer's clean prediction is what the classifier judged: other latents
    latent = [r["latent_l2"] for r in records]
    assert latent != [r["latent_l2"] for r in manifest(without)]


def test_a_run_without_prompt_embeddings_stops_naming_the_script(inputs, tmp_path):
    with pytest.raises(run.RunInputError, match="prior.context is empty.*encode_prompt.py"):
        run.explain_dataset(sd3_config(inputs, prior__context=""), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "manifest.jsonl")


def test_embeddings_of_another_width_are_refused_before_any_work(inputs, tmp_path):
    bad = save_prompt_embeddings(tmp_path / "bad.npz", np.zeros((1, 5, 7), np.float32),
                                 np.zeros((1, 16), np.float32))
    with pytest.raises(run.RunInputError, match=r"encoder_hidden_states: expected \(1, L, 32\)"):
        run.explain_dataset(sd3_config(inputs, prior__context=bad), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "manifest.jsonl")
    with pytest.raises(run.RunInputError, match="more than pos_embed_max_size=8"):
        run.explain_dataset(sd3_config(inputs, data__image_size=(48, 16)), str(tmp_path / "w"))


@pytest.mark.parametrize("arg, message", [
    (None, r"needs \['pipeline', 'embeddings', 'classifier'\]"),
    ("pipeline=/p,embeddings=/e.npz", r"needs \['classifier'\]"),
    ("pipeline=/p,embeddings=/e.npz,classifier=/c,colour=red", "bad argument 'colour=red'"),
])
def test_config_argument_errors_name_the_keys(arg, message):
    with pytest.raises(ValueError, match=message):
        load_config_module(SD3_CONFIG).get_config(arg)


def test_unknown_prior_kind_is_a_config_error(inputs, tmp_path):
    with pytest.raises(RunConfigError, match=r"unknown prior.kind 'sd4'; known: sd3, flux"):
        run.explain_dataset(sd3_config(inputs, prior__kind="sd4"), str(tmp_path / "w"))
