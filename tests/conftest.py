"""Fixtures shared by several test modules (pytest finds them here; no test imports another)."""

import atexit
import inspect
import os
import shutil
import subprocess
import sys
import tempfile

# The suite runs tiny shapes: compiling, not executing, is where its time goes. XLA's backend
# optimisations and its newer fusion emitters off (the same values to float tolerance: XLA:CPU
# uses no fast-math either way, see tests/fast_compile.py) make each compilation 2-3x cheaper;
# a compilation cache shared by the whole session (this process and the scripts it starts)
# compiles a program that several tests build once. Both are set before any test touches JAX
# (XLA reads its flags when the backend starts); an XLA that does not know a flag would abort,
# so the flags are tried once in a subprocess first.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                      "--xla_cpu_use_fusion_emitters=false")


def _xla_accepts(flags: str) -> bool:
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          timeout=120).returncode == 0


if "SCE_TEST_XLA_FLAGS_SET" not in os.environ:  # once per session: the workers inherit it
    _flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE_FLAGS]))
    if _xla_accepts(_flags):
        os.environ["XLA_FLAGS"] = _flags
    os.environ["SCE_TEST_XLA_FLAGS_SET"] = "1"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="sce_jax_test_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import pytest  # noqa: E402

from tests import run_helpers  # noqa: E402


@pytest.fixture(scope="session")
def run_fixtures(tmp_path_factory):
    """Tiny models, 9 images (one corrupt), the run's config file, a compilation cache and the
    uninterrupted reference run (:func:`tests.run_helpers.run_fixtures`), made once a session."""
    return run_helpers.run_fixtures(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A tiny grey AutoencoderKL (downsample 2) and a 3-class SmallCNN: their checkpoint paths."""
    return run_helpers.tiny_checkpoints(tmp_path_factory)


def _uses_torch(module) -> bool:
    """Whether a test module is marked ``torch``, or any of its tests is."""
    if module.get_closest_marker("torch") is not None:
        return True
    return any(mark.name == "torch" for test in vars(module.obj).values()
               if inspect.isfunction(test) for mark in getattr(test, "pytestmark", []))


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread(request):
    """torch with one intra-op thread while a module marked ``torch`` (or holding a test
    marked so) runs: on inputs this small its thread pool costs far more than it saves (and
    competes with XLA's threads)."""
    torch = None
    if _uses_torch(request.node):
        try:
            import torch
        except ImportError:  # the module's torch tests say so themselves
            pass
    if torch is None:
        yield
        return

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Modules by what they cost (end-to-end runs and subprocesses first), so that the workers
# start on the long ones and the short ones fill in at the end (--dist=loadscope with
# --no-loadscope-reorder hands out modules in this order).
LONG_FIRST = ("tests/runs/", "tests/launch/", "tests/demos/", "tests/search/",
              "tests/evaluation/", "tests/priors/", "tests/benchmarks/", "tests/test_readme.py",
              "tests/test_saving.py", "tests/models/")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(LONG_FIRST) if path.startswith(prefix)),
                    len(LONG_FIRST))

    items.sort(key=rank)  # stable: the order within a module is kept


def pytest_xdist_auto_num_workers(config):
    """One worker more than the cores, at most 4: the subprocess tests spend part of their time
    waiting (for a peer's timeout, a killed process, a file), and the spare worker uses it."""
    return min(4, (os.cpu_count() or 1) + 1)
