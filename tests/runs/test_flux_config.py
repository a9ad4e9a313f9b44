"""configs/flux.py on a tiny random FLUX pipeline folder written by diffusers: its VAE as the
generator, its transformer as the prior (prompt embeddings from an .npz), an orbax classifier."""

import json
import math
import os

import pytest

from sce_jax.launch.config_files import load_config_module
from sce_jax.runs import loop as run
from tests import ROOT
from tests.run_helpers import write_pipeline_run_inputs

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from tests.flux_pipeline_folder import TRANSFORMER, write_tiny_flux_pipeline  # noqa: E402

pytestmark = pytest.mark.torch

FLUX_CONFIG = os.path.join(ROOT, "configs", "flux.py")


def test_flux_config_runs_with_the_pipelines_transformer_as_prior(tmp_path):
    pipeline = write_tiny_flux_pipeline(str(tmp_path / "pipeline"))
    inputs = write_pipeline_run_inputs(tmp_path, TRANSFORMER, 1)
    embeddings, classifier = inputs["embeddings"], inputs["classifier"]
    module = load_config_module(FLUX_CONFIG)
    c = module.get_config(f"pipeline={pipeline},embeddings={embeddings},classifier={classifier}")
    assert (c.prior.kind, c.generator.kind) == ("flux", "kl")
    assert c.search.prior.shift == pytest.approx(math.exp(0.5), abs=1e-4)  # a 256x256 image's
    assert module.get_config("pipeline=p,embeddings=e,classifier=c,shift=1").search.prior.shift == 1
    with pytest.raises(ValueError, match="configs/flux.py: shift='fast' is not a number"):
        module.get_config("pipeline=p,embeddings=e,classifier=c,shift=fast")
    c.data.source = inputs["data"]
    c.data.image_size = (16, 16)            # latent 8x8x4 (VAE / 2): 4x4 packed tokens of 16
    c.search.steps = 2
    c.search.attempts = 1
    c.search.smoothing.num_samples = 1
    c.search.prior.denoise_steps = 1
    c.output.report = False
    workdir = str(tmp_path / "run")
    assert run.explain_dataset(c, workdir)["complete"]
    with open(os.path.join(workdir, "manifest.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["status"] for r in records] == ["ok"]
    with open(os.path.join(workdir, "run_config.json")) as f:
        recorded = json.load(f)
    assert recorded["prior"]["kind"] == "flux" and recorded["prior"]["diffusers"] == pipeline
