"""Prompt-embeddings files (the SD3 prior's context) and scripts/encode_prompt.py's errors.

The file format the script writes and the library reads, every way the script refuses to start,
and the script end to end on a tiny random pipeline folder (two CLIP encoders, T5 dropped)
against diffusers' own ``encode_prompt`` -- that one only where transformers is installed,
which requirements-test.txt does not ask for.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from sce_jax.priors.prompt_embeddings import (
    PromptEmbeddingsError,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from tests import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "encode_prompt.py")


def arrays(batch=1, length=7, dim=12, pooled=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, length, dim)).astype(np.float32),
            rng.standard_normal((batch, pooled)).astype(np.float32))


def test_round_trip_keeps_values_and_metadata(tmp_path):
    hidden, pooled = arrays(batch=2)
    path = save_prompt_embeddings(tmp_path / "sub" / "e.npz", hidden.astype(np.float16),
                                  pooled, prompt="a dress", pipeline="/models/sd3")
    loaded = load_prompt_embeddings(path)
    assert sorted(loaded) == ["encoder_hidden_states", "pooled_projections"]
    assert loaded["encoder_hidden_states"].dtype == np.float32
    np.testing.assert_array_equal(loaded["encoder_hidden_states"],
                                  hidden.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded["pooled_projections"], pooled)
    assert str(np.load(path)["prompt"]) == "a dress"
    assert os.listdir(tmp_path / "sub") == ["e.npz"]  # no temporary file left


def test_missing_file_names_the_script(tmp_path):
    with pytest.raises(PromptEmbeddingsError, match="no such prompt-embeddings file.*"
                                                    "encode_prompt.py"):
        load_prompt_embeddings(tmp_path / "none.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "e.npz").write_text("hello")
    with pytest.raises(PromptEmbeddingsError, match="not a readable .npz"):
        load_prompt_embeddings(tmp_path / "e.npz")


def test_missing_key_is_named(tmp_path):
    hidden, _ = arrays()
    np.savez(tmp_path / "e.npz", encoder_hidden_states=hidden, pooled=np.zeros((1, 3)))
    with pytest.raises(PromptEmbeddingsError,
                       match=r"missing key\(s\) \['pooled_projections'\]; it holds "
                             r"\['encoder_hidden_states', 'pooled'\]"):
        load_prompt_embeddings(tmp_path / "e.npz")


@pytest.mark.parametrize("change, message", [
    (lambda h, p: (h[0], p), "'encoder_hidden_states' must be a float array of rank 3"),
    (lambda h, p: (h, p.astype(np.int32)), "'pooled_projections' must be a float array"),
    (lambda h, p: (np.concatenate([h, h]), p), "disagree on the number of prompts"),
    (lambda h, p: (h, np.where(np.arange(p.size).reshape(p.shape) == 3, np.nan, p)),
     "'pooled_projections' holds NaN"),
])
def test_bad_arrays_are_refused(tmp_path, change, message):
    hidden, pooled = change(*arrays())
    np.savez(tmp_path / "e.npz", encoder_hidden_states=hidden, pooled_projections=pooled)
    with pytest.raises(PromptEmbeddingsError, match=message):
        load_prompt_embeddings(tmp_path / "e.npz")


def run_script(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_one_error_line(result, pattern):
    import re
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_script_help_and_bad_flag():
    result = run_script("--help")
    assert result.returncode == 0 and "--pipeline" in result.stdout
    assert_one_error_line(run_script("--pipline=/x"), "pipline")


def test_script_missing_or_non_pipeline_folder(tmp_path):
    assert_one_error_line(run_script(f"--pipeline={tmp_path}/nope", f"--out={tmp_path}/e.npz"),
                          "no such folder")
    assert_one_error_line(run_script(f"--pipeline={tmp_path}", f"--out={tmp_path}/e.npz"),
                          "no model_index.json; expected a diffusers SD3 pipeline folder")
    assert not (tmp_path / "e.npz").exists()


def test_script_without_torch_says_what_to_install(tmp_path):
    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    path = os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", ROOT)])
    result = run_script(f"--pipeline={tmp_path}/pipe", f"--out={tmp_path}/e.npz",
                        env_extra={"PYTHONPATH": path})
    assert_one_error_line(result, "needs PyTorch and diffusers .*pip install torch diffusers")


def test_script_without_transformers_says_what_to_install(tmp_path):
    import importlib.util
    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed here")
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    (tmp_path / "model_index.json").write_text("{}")
    assert_one_error_line(run_script(f"--pipeline={tmp_path}", f"--out={tmp_path}/e.npz"),
                          "needs transformers for the SD3 text encoders")


def test_script_writes_what_diffusers_encodes(tmp_path, monkeypatch):
    """End to end on a tiny pipeline (CLIP encoders, T5 dropped); needs transformers."""
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # transformers >= 5: no kernels from the hub
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from tests.sd3_pipeline_folder import write_tiny_sd3_pipeline
    folder = write_tiny_sd3_pipeline(str(tmp_path / "pipe"), text_encoders=True)
    result = run_script(f"--pipeline={folder}", f"--out={tmp_path}/e.npz", "--prompt=a dress")
    assert result.returncode == 0, result.stderr
    loaded = load_prompt_embeddings(tmp_path / "e.npz")
    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(
        folder, text_encoder_3=None, tokenizer_3=None, vae=None, local_files_only=True)
    with torch.no_grad():
        hidden, _, pooled, _ = pipe.encode_prompt("a dress", None, None,
                                                  do_classifier_free_guidance=False)
    assert loaded["encoder_hidden_states"].shape == (1, 77 + 256, 32)
    np.testing.assert_array_equal(loaded["encoder_hidden_states"], hidden.numpy())
    np.testing.assert_array_equal(loaded["pooled_projections"], pooled.numpy())
    assert str(np.load(tmp_path / "e.npz")["prompt"]) == "a dress"
