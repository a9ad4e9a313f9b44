"""Runs ``scripts/explain.py`` in a subprocess, optionally with a hook that stops it at a chosen point.

    python -m tests.multiprocess_worker [explain.py flags...]

Used by test_multiprocess.py (several processes on one CPU), test_crash_safety.py (SIGKILL and
SIGTERM at chosen points) and test_bad_inputs.py (the command line's exit codes). The hook is
chosen by environment variables and installed by monkeypatching before explain.py runs, so
the library has no test code:

``SCE_TEST_HOOK_DIR``
    folder for marker files. Every search call touches ``search_started`` there.
``SCE_TEST_BLOCK=<point>:<n>``
    on the n-th time the run reaches the point, touch ``blocked`` in the hook folder and wait
    until a file ``release`` appears there (or forever: the test kills the process). Points:
    ``search`` (before a batch's search, i.e. mid-batch), ``part`` (after a batch's images
    are written, before its part file), ``png`` (inside a PNG write: half the bytes are in
    the temporary file, the rename has not happened).
``SCE_TEST_ENOSPC=<text>``
    every PNG write to a path containing ``text`` fails with ``OSError(ENOSPC)``, as on a
    full disk.

The tests start it through tests/run_helpers.py (``start``), which holds what they share.
"""

from __future__ import annotations

import os
import runpy
import sys
import time

import numpy as np

from tests.run_helpers import EXPLAIN

# ----------------------------------------------------------------------------- hooks


def _hold(hook_dir: str) -> None:
    open(os.path.join(hook_dir, "blocked"), "w").close()
    while not os.path.exists(os.path.join(hook_dir, "release")):
        time.sleep(0.02)


def install_hooks(hook_dir: str | None, block: str | None, enospc: str | None = None) -> None:
    """Monkeypatches the run's search, part-file and PNG writes (see the module docstring)."""
    import errno

    from sce_jax.data import image_io
    from sce_jax.explainer import Explainer
    from sce_jax.workdir import layout as workdir

    point, _, nth = (block or "").partition(":")
    if point not in ("", "search", "part", "png"):
        raise ValueError(f"SCE_TEST_BLOCK={block!r}: unknown point {point!r}")
    nth = int(nth or 0)
    calls = {"search": 0, "part": 0, "png": 0}

    def arrive(name: str) -> bool:
        calls[name] += 1
        return point == name and calls[name] == nth

    search, write_part, write_png = Explainer.explain_arrays, workdir.write_part, image_io.write_png

    def explain_arrays(self, batch, *, kind):
        if hook_dir:
            open(os.path.join(hook_dir, "search_started"), "w").close()
        if arrive("search"):
            _hold(hook_dir)
        return search(self, batch, kind=kind)

    def write_part_hooked(folder, process_index, records):
        if arrive("part"):
            _hold(hook_dir)
        return write_part(folder, process_index, records)

    def write_png_hooked(path, image, *, fsync=False):
        if enospc and enospc in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        if not arrive("png"):
            return write_png(path, image, fsync=fsync)
        import io

        from PIL import Image
        buffer = io.BytesIO()
        Image.fromarray(np.squeeze(image_io.to_uint8(image))).save(buffer, format="PNG")
        with image_io.atomic_write(path, "wb") as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            _hold(hook_dir)
            f.write(buffer.getvalue()[len(buffer.getvalue()) // 2:])

    Explainer.explain_arrays = explain_arrays
    workdir.write_part = write_part_hooked
    image_io.write_png = write_png_hooked


def main(argv: list[str]) -> None:
    hook_dir, enospc = os.environ.get("SCE_TEST_HOOK_DIR"), os.environ.get("SCE_TEST_ENOSPC")
    if hook_dir or enospc:
        install_hooks(hook_dir, os.environ.get("SCE_TEST_BLOCK"), enospc)
    sys.argv = [EXPLAIN, *argv]
    runpy.run_path(EXPLAIN, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
