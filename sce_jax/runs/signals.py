"""Stopping a run on request: SIGTERM (preemption) and SIGINT (Ctrl-C) finish the batch in
flight, then the run returns with ``complete: False`` and a rerun resumes."""

from __future__ import annotations

import dataclasses
import signal
import threading

from absl import logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # preemption, Ctrl-C: both finish the batch


@dataclasses.dataclass
class RunState:
    """What another thread (or a signal handler) tells a running run: ``stop`` asks it to stop
    after the batch in flight."""

    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


def install_stop_handlers(state: RunState) -> dict:
    """Makes the stop signals set ``state.stop`` (main thread only); returns the old handlers."""
    previous = {}

    def handler(signum, frame):
        logging.warning("%s: finishing the current batch, then stopping",
                        signal.Signals(signum).name)
        state.stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict) -> None:
    """Puts back the handlers :func:`install_stop_handlers` replaced."""
    for sig, old in previous.items():
        signal.signal(sig, old)
