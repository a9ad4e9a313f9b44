"""A dependency-free progress line for long runs: done/total, rate, ETA.

Writes ``\\r``-updated lines to a stream when it is a terminal, and at most one plain line
every ``min_interval`` seconds otherwise (so CI logs and files stay readable).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``update(n)`` after each unit of work; ``rate`` counts units per second of wall time.
    ``update(n, found=f)`` also shows ``f`` (the found counterfactuals so far) and its rate."""

    def __init__(self, total: int, *, unit: str = "items", stream: TextIO | None = None,
                 min_interval: float = 5.0, clock=time.monotonic):
        self.total = int(total)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.found: int | None = None
        self._last_print = -float("inf")
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else float("inf")

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        width = 24
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = self.elapsed
        found = ("" if self.found is None else
                 f"{self.found} found ({self.found / elapsed if elapsed > 0 else 0.0:.2f}/s), ")
        return (f"[{bar}] {self.done}/{self.total} {self.unit} ({pct:5.1f}%) "
                f"{self.rate:.2f} {self.unit}/s, {found}elapsed {format_seconds(elapsed)}, "
                f"ETA {format_seconds(self.eta)}")

    def update(self, n: int = 1, *, found: int | None = None, force: bool = False) -> None:
        self.done += n
        if found is not None:
            self.found = found
        now = self.clock()
        if force or self._tty or now - self._last_print >= self.min_interval or self.done >= self.total:
            self._last_print = now
            end = "\r" if self._tty and self.done < self.total else "\n"
            print(self.line(), end=end, file=self.stream, flush=True)


def announce(message: str, *, stream: TextIO | None = None) -> None:
    """One line saying what a long silent stage is doing (loading, compiling), on stderr."""
    print(message, file=stream if stream is not None else sys.stderr, flush=True)
