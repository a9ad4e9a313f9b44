"""The errors a user fixes by changing the command, the inputs or the disk.

``scripts/explain.py`` reports each of :data:`USER_ERRORS` as one line (``error: ...``, exit
2) without a traceback; all of them are raised before any work, except a write that fails
mid-run (:class:`~sce_jax.workdir.layout.WorkdirWriteError`).
"""

from __future__ import annotations

from sce_jax.runs.collectives import PeerFailedError
from sce_jax.runs.config import RunConfigError
from sce_jax.runs.memory_check import MemoryLimitError
from sce_jax.search.config import SearchConfigError
from sce_jax.workdir.inputs import InputSetChangedError
from sce_jax.workdir.layout import ResumeConfigError, WorkdirReadError, WorkdirWriteError
from sce_jax.workdir.lock import WorkdirBusyError


class RunInputError(ValueError):
    """An input of the run (data, weights, targets, sizes) that cannot work; raised before any work."""


USER_ERRORS = (RunConfigError, SearchConfigError, RunInputError, WorkdirWriteError,
               WorkdirReadError, ResumeConfigError, InputSetChangedError, PeerFailedError,
               MemoryLimitError, WorkdirBusyError)
