"""Loading a run-config file (``configs/*.py``, ml_collections style) by path.

Config files are plain Python files with a ``get_config(arg)`` function, not a package; the
scripts and tests that need one module-level name from another config file (the ablation
builds on the demo config, the ablation runner reads its variant table) load it here.
"""

from __future__ import annotations

import importlib.util
import os
import types


def load_config_module(path: str | os.PathLike) -> types.ModuleType:
    """The config file at ``path`` as a module (a fresh import each call).

    Raises:
      FileNotFoundError: no such file (the message names it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    name = "sce_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
