"""JAX's persistent compilation cache for runs: compile the search once per shape, ever.

A dataset run compiles its search once per (config, batch shape): seconds on the demo, tens
of seconds for a Stable-Diffusion VAE. With the cache, a rerun, a resumed run after a
preemption and every process of a multi-process run (on a shared filesystem) load the compiled
program instead. JAX keys the cache on the program, the compiler options, the jax / jaxlib
versions and the device kind, so a stale entry is never used.
"""

from __future__ import annotations

import os
import tempfile

import jax


class CompilationCacheError(OSError):
    """A compilation cache folder that cannot be created or written."""


def enable(directory: str | os.PathLike, *, min_compile_seconds: float = 1.0) -> str:
    """Caches every compilation that takes at least ``min_compile_seconds`` in ``directory``
    (created if missing). Call before the first compilation. Returns the absolute path.

    Raises:
      CompilationCacheError: the folder cannot be created or written (the message names it).
    """
    path = os.path.abspath(os.fspath(directory))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_"):
            pass
    except OSError as e:
        raise CompilationCacheError(
            f"compilation cache {path!r} cannot be written: {e.strerror or e}") from e
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return path
