"""sce_jax.launch.compilation_cache: a second process loads the compiled program from the cache folder.

Each run is its own Python process (the cache is process-wide JAX state, and reuse across
processes is the point): the first compiles and writes an entry, the second finds it (JAX's
own cache-hit event) and computes the same result.
"""

import os
import subprocess
import sys

import pytest

from sce_jax.launch import compilation_cache
from tests import ROOT

PROGRAM = """
import sys, jax, jax.numpy as jnp
from sce_jax.launch import compilation_cache
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
compilation_cache.enable(sys.argv[1], min_compile_seconds=0)
x = jax.jit(lambda a: jnp.tanh(a @ a.T).sum())(jnp.arange(12.0).reshape(3, 4))
print(len(hits), float(x))
"""


def _run(cache):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(cache)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hits, value = out.stdout.split()
    return int(hits), float(value)


def test_a_second_process_loads_the_compiled_program(tmp_path):
    cache = tmp_path / "cache" / "nested"          # created on demand
    first = _run(cache)
    assert first[0] == 0
    entries = os.listdir(cache)
    assert any(name.startswith("jit_") for name in entries), entries
    second = _run(cache)
    assert second[0] >= 1
    assert second[1] == first[1]


def test_an_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(compilation_cache.CompilationCacheError, match="a_file"):
        compilation_cache.enable(blocker / "cache")
