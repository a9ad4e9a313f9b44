"""Command-line log output: this package's INFO lines, other libraries' warnings only.

Loading a checkpoint makes orbax and jax log many INFO lines through absl; a script that
reports its own progress at INFO calls :func:`keep_own_info` so only its lines (and every
library's warnings and errors) reach the terminal. ``--verbosity`` on the command line is
left alone when given.
"""

from __future__ import annotations

import logging as std_logging
import os

from absl import logging

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sce_jax/


class OwnInfoFilter(std_logging.Filter):
    """Passes warnings and errors, and lower levels only from files under ``folders``."""

    def __init__(self, *folders: str):
        super().__init__()
        self.folders = tuple(os.path.join(os.path.abspath(f), "") for f in folders)

    def filter(self, record: std_logging.LogRecord) -> bool:
        return (record.levelno >= std_logging.WARNING
                or os.path.abspath(record.pathname).startswith(self.folders))


def keep_own_info(*extra_folders: str) -> None:
    """INFO verbosity, filtered to this package (and ``extra_folders``, e.g. ``scripts/``)."""
    if logging.FLAGS.is_parsed() and logging.FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(OwnInfoFilter(PACKAGE_DIR, *extra_folders))
