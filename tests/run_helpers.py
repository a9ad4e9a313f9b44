"""What the run tests share: tiny models, image folders, run configs, and running explain.py.

``run_fixtures`` makes the inputs every run test of a session shares (tests/conftest.py serves
them as the ``run_fixtures`` fixture); ``start`` runs ``scripts/explain.py`` in a subprocess
behind the hooks of tests/multiprocess_worker.py (which stops it at chosen points), ``finish``
waits for it. Importing this module installs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from tests import ROOT, warm_start

EXPLAIN = os.path.join(ROOT, "scripts", "explain.py")
TIMING_FIELDS = ("counterfactuals_per_second", "elapsed_seconds", "runs")  # differ run to run

def save_tiny_models(root: str) -> tuple[str, str]:
    """A tiny grey AutoencoderKL (downsample 2) and a 3-class SmallCNN as orbax checkpoints."""
    from flax import nnx

    from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
    from sce_jax.models.checkpoint import save_model
    from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig

    ae = AutoencoderKL(AutoencoderKLConfig(
        in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, mid_block_add_attention=False), rngs=nnx.Rngs(0))
    clf = SmallCNN(SmallCNNConfig(in_channels=1, num_classes=3, widths=(4, 8)), rngs=nnx.Rngs(1))
    return (save_model(ae, os.path.join(root, "ae")), save_model(clf, os.path.join(root, "clf")))


def write_pipeline_run_inputs(root, transformer: dict[str, Any], count: int) -> dict[str, str]:
    """What a pipeline config (configs/sd3.py, configs/flux.py) runs on besides the pipeline:
    random prompt embeddings of ``transformer``'s widths, a 3-class RGB SmallCNN checkpoint and
    ``count`` random 16x16 RGB images in an .npz. Returns their paths by argument name."""
    from flax import nnx

    from sce_jax.models.checkpoint import save_model
    from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
    from sce_jax.priors.prompt_embeddings import save_prompt_embeddings

    root = str(root)
    rng = np.random.default_rng(0)
    embeddings = save_prompt_embeddings(
        os.path.join(root, "empty.npz"),
        rng.standard_normal((1, 5, transformer["joint_attention_dim"])).astype(np.float32),
        rng.standard_normal((1, transformer["pooled_projection_dim"])).astype(np.float32))
    classifier = save_model(SmallCNN(SmallCNNConfig(in_channels=3, num_classes=3, widths=(4,)),
                                     rngs=nnx.Rngs(1)), os.path.join(root, "clf"))
    data = os.path.join(root, "images.npz")
    np.savez(data, images=rng.uniform(0, 1, (count, 16, 16, 3)).astype(np.float32),
             labels=np.zeros(count, np.int64))
    return dict(embeddings=embeddings, classifier=str(classifier), data=data)


def write_image_folder(folder: str, count: int, *, corrupt: tuple[int, ...] = (), seed: int = 0) -> str:
    """``count`` random 16x16 grey PNGs ``img<i>.png``; those in ``corrupt`` are not PNGs."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = os.path.join(folder, f"img{i}.png")
        pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        if i in corrupt:
            with open(path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n not a png")
        else:
            Image.fromarray(pixels).save(path)
    return folder


def tiny_run_settings(checkpoints: tuple[str, str], source: str, **overrides: Any) -> dict:
    """The tiny run (16x16 grey, 3 steps, 2 attempts, no report) as dotted run-config keys.

    ``overrides`` map dotted names with ``__`` for dots (``search__steps=4``) to values.
    """
    settings = {
        "data.source": source, "data.image_size": (16, 16), "data.channels": 1,
        "generator.checkpoint": checkpoints[0], "classifier.checkpoint": checkpoints[1],
        "targets.kind": "other", "batch_size": 2, "search.steps": 3, "search.attempts": 2,
        "search.smoothing.num_samples": 2, "search.mask.warmup_steps": 1,
        "search.mask.period": 1, "output.report": False,
        # The batch engine: the kill and signal tests hold a run at a data batch's search, its
        # part file or a PNG; the slot engine's commits are tested on their own.
        "engine": "batch",
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return settings


def tiny_config(checkpoints: tuple[str, str], source: str, **overrides: Any):
    """The tiny run as a run config (see :func:`tiny_run_settings`)."""
    from sce_jax.runs.config import base_run_config

    config = base_run_config()
    for key, value in tiny_run_settings(checkpoints, source, **overrides).items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def write_config_file(path: str, checkpoints: tuple[str, str], source: str, **overrides: Any) -> str:
    """A config file for explain.py: the tiny run (:func:`tiny_run_settings`) + overrides."""
    settings = tiny_run_settings(checkpoints, source, **overrides)
    lines = ["from sce_jax.runs.config import base_run_config", "", "", "def get_config():",
             "    c = base_run_config()"]
    lines += [f"    c.{k} = {v!r}" for k, v in settings.items()]
    lines += ["    return c", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def tiny_checkpoints(tmp_path_factory) -> tuple[str, str]:
    """:func:`save_tiny_models`, once per pytest session (the autoencoder's and classifier's paths)."""
    models = shared_root(tmp_path_factory) / "models"
    with _exclusive(models.parent):
        if not (models / "clf" / "model.json").exists():
            import shutil
            shutil.rmtree(models, ignore_errors=True)
            save_tiny_models(str(models))
    return str(models / "ae"), str(models / "clf")


def shared_root(tmp_path_factory):
    """The folder of the session's shared run inputs, one for all xdist workers (their base
    temporary folders' parent), so the models and the reference run are made once."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "sce_jax_run_fixtures"


@contextlib.contextmanager
def _exclusive(folder):
    """Holds an exclusive lock on ``folder/.lock`` (one worker makes what the others reuse)."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_fixtures(tmp_path_factory) -> dict[str, Any]:
    """Inputs shared by the run tests of one pytest session, made on first use.

    Tiny models, 9 images (``img3.png`` corrupt), the config file (batch size 2), a
    persistent compilation cache (every single-process run of this config after the first
    reuses its compiled search) and the reference: the uninterrupted single-process run.
    Returns paths under the keys ``checkpoints, images, config, cache, env, reference``.
    """
    root = shared_root(tmp_path_factory)
    checkpoints = tiny_checkpoints(tmp_path_factory)
    images, reference = str(root / "images"), str(root / "reference")
    # the session's compilation cache (tests/conftest.py), which in-process runs fill too
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(root / "jax_cache")
    env = worker_env(cache)
    with _exclusive(root):
        if not os.path.isdir(images):
            write_image_folder(images, 9, corrupt=(3,))
        config = write_config_file(str(root / "config.py"), checkpoints, images)
        summary = os.path.join(reference, "summary.json")
        if not os.path.exists(summary) or not json.load(open(summary))["complete"]:
            code, _, err = finish(start([f"--config={config}", f"--workdir={reference}"], env), 300)
            assert code == 0, err[-4000:]
    return {"checkpoints": checkpoints, "images": images, "config": config, "cache": cache,
            "env": env, "reference": reference}


def script_arrays(module: str, out) -> Any:
    """Runs ``python -m module out`` (a test script that needs its own process, e.g. its own
    number of CPU devices) and returns the arrays it saved to ``out`` (an .npz)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", module, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def worker_env(cache_dir: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a worker: CPU only, a shared compilation cache, no cluster variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "SCE_TEST_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    if cache_dir:  # the compiled search is reused by every later run of the same shapes
        env.update(JAX_COMPILATION_CACHE_DIR=cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Starts the worker (explain.py behind the hooks) with ``args``; output is captured."""
    return warm_start.start_worker(args, env)  # forked from an interpreter with JAX imported


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Waits for ``proc`` (killing it after ``timeout`` seconds); returns (code, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker still running after {timeout} s; stderr:\n{err[-4000:]}")
    return proc.returncode, out, err


def wait_for_file(path: str, proc: subprocess.Popen, timeout: float) -> None:
    """Waits until ``path`` exists; fails if ``proc`` ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"worker exited ({proc.returncode}) before {path} appeared:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def snapshot(workdir: str) -> dict[str, tuple[bytes, int]]:
    """Every file under ``workdir`` (relative path): its bytes and modification time, to show
    that a stopped run wrote nothing."""
    found = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, workdir)] = (f.read(), os.stat(path).st_mtime_ns)
    return found


def read_manifest(workdir: str) -> list[dict[str, Any]]:
    """The records of a run's ``manifest.jsonl``."""
    from sce_jax.workdir import layout as workdir_files

    return workdir_files.read_manifest(workdir)


def output_files(workdir: str) -> list[str]:
    """Every file under ``workdir/images``, relative to the workdir, sorted."""
    found = []
    for root, _, names in os.walk(os.path.join(workdir, "images")):
        found += [os.path.relpath(os.path.join(root, n), workdir) for n in names]
    return sorted(found)


def read_pngs(workdir: str) -> dict[str, np.ndarray]:
    """Pixels of every PNG under ``workdir/images`` (decoding fails loudly on a bad file)."""
    from PIL import Image

    pixels = {}
    for relative in output_files(workdir):
        with Image.open(os.path.join(workdir, relative)) as image:
            image.load()
            pixels[relative] = np.asarray(image)
    return pixels
