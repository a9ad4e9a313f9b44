"""Bounded waits between the processes of a run: every wait ends, and says who is missing.

The processes of a multi-process run (``sce_jax.launch.distributed``) must agree at a few points:
the config they run, that every one of them passed its checks before any work, the finished
examples before the first batch, a stop request after each batch, all parts written before
process 0 assembles the manifest. JAX's own barriers (gloo collectives) wait forever for a
process that never comes, and a dead one makes them abort the survivors. Here every such
point is an all-gather of a short text through the key-value store of JAX's distributed
client, with a deadline:

    values = Collectives(timeout_s=600).allgather("stop requested", "0")

A process that does not arrive within ``timeout_s`` raises :class:`PeerLostError` on the
others, naming it (``scripts/explain.py``: one ``error:`` line, exit code 69, rerun all
processes to resume). With one process nothing is exchanged.

The client is ``jax._src.distributed.global_state.client`` (JAX has no public handle on it);
:func:`distributed_client` is the one place that reads it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax


class PeerLostError(RuntimeError):
    """A process of the run is missing, dead or stuck (the message names it); rerun to resume."""


class PeerFailedError(ValueError):
    """Another process stopped before any work with a user error (its message is quoted)."""


def distributed_client():
    """JAX's distributed runtime client (None when ``jax.distributed`` was not initialised)."""
    from jax._src import distributed

    return distributed.global_state.client


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Collectives:
    """All-gathers of short texts between the run's processes, each bounded by ``timeout_s``.

    Every process must make the same calls in the same order (the n-th call of each is one
    exchange); names only make messages readable.
    """

    def __init__(self, timeout_s: float, *, process_index: int | None = None,
                 process_count: int | None = None, client: Any = None):
        self.timeout_s = float(timeout_s)
        self.client = client if client is not None else distributed_client()
        single = self.client is None  # jax.distributed not initialised: one process
        self.process_index = (0 if single else jax.process_index()) if process_index is None else process_index
        self.process_count = (1 if single else jax.process_count()) if process_count is None else process_count
        self._calls = 0

    def allgather(self, name: str, value: str, *, timeout_s: float | None = None) -> list[str]:
        """Every process's ``value``, in process order.

        Raises:
          PeerLostError: a process did not arrive within the timeout (named), or the
            coordinator (process 0) is gone.
        """
        if self.process_count == 1:
            return [value]
        self._calls += 1
        prefix = f"sce_jax/{self._calls}"
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            self.client.key_value_set(f"{prefix}/{self.process_index}", "v" + value)
        except Exception as e:  # noqa: BLE001 - the coordinator is unreachable
            raise self._coordinator_lost(name, e) from None
        deadline = time.monotonic() + timeout_s
        values: list[str | None] = [None] * self.process_count
        for p in range(self.process_count):
            try:
                values[p] = self.client.blocking_key_value_get(
                    f"{prefix}/{p}", _ms(deadline - time.monotonic()))[1:]
            except Exception as e:  # noqa: BLE001 - a deadline, or the coordinator gone
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise self._coordinator_lost(name, e) from None
                missing = self._missing(prefix, range(p, self.process_count))
                raise PeerLostError(
                    f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                    f"of {self.process_count} did not reach '{name}' within {timeout_s:g} s "
                    f"(dead, stuck or never started; this is process {self.process_index}); "
                    "completed batches are kept: rerun every process to resume") from None
        return values  # type: ignore[return-value]

    def _missing(self, prefix: str, candidates) -> list[int]:
        missing = []
        for p in candidates:
            try:
                if self.client.key_value_try_get(f"{prefix}/{p}") is None:
                    missing.append(p)
            except Exception:  # noqa: BLE001 - NOT_FOUND is an exception in some versions
                missing.append(p)
        return missing or list(candidates)[:1]

    def _coordinator_lost(self, name: str, error: Exception) -> PeerLostError:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return PeerLostError(
            f"lost the coordinator (process 0) at '{name}': {first_line}; completed batches "
            "are kept: rerun every process to resume")

    def lost(self, name: str, error: Exception, *, probe_s: float = 30.0) -> PeerLostError:
        """The error for an exchange inside the search that failed (a peer died mid-batch).

        The live processes meet once more (at most ``probe_s`` seconds) to name the dead one.
        """
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        try:
            self.allgather(f"{name}: who is alive", "", timeout_s=min(self.timeout_s, probe_s))
        except PeerLostError as e:
            return PeerLostError(f"{e} (the search of {name} failed: {first_line})")
        return PeerLostError(f"the search of {name} failed between processes: {first_line}; "
                             "completed batches are kept: rerun every process to resume")

    def barrier(self, name: str) -> None:
        self.allgather(name, "")

    def any(self, name: str, flag: bool) -> bool:
        """True on every process if ``flag`` is True on any."""
        return "1" in self.allgather(name, "1" if flag else "0")

    def together(self, name: str, fn: Callable[[], Any], errors: tuple[type[BaseException], ...]):
        """Runs ``fn`` on every process; if it raises one of ``errors`` on any, all raise.

        The failing process raises its own error, the others :class:`PeerFailedError` quoting
        it, so no process goes on to wait for one that has stopped. (All of them then leave
        through JAX's exit handler, which waits until every process has arrived: process 0,
        which holds the key-value store, must not be gone while another still reads it.)
        """
        error, status = None, ""
        try:
            result = fn()
        except errors as e:
            error, status = e, f"{e}"
            status = " ".join(status.split()) or type(e).__name__
        statuses = self.allgather(name, ("x" + status) if error is not None else "")
        failed = [(p, s[1:]) for p, s in enumerate(statuses) if s]
        if failed:
            if error is not None:
                raise error
            p, message = failed[0]
            raise PeerFailedError(f"process {p} stopped before any work: {message}")
        return result

    def agree(self, name: str, value: str, describe: Callable[[str, str], str]) -> None:
        """Checks that every process has the same ``value``; ``describe(mine, theirs)`` words a difference.

        Raises:
          PeerFailedError: on every process, naming the first process that differs from process 0.
        """
        values = self.allgather(name, value)
        for p, other in enumerate(values):
            if other != values[0]:
                raise PeerFailedError(f"process {p} was started with another {name} than "
                                      f"process 0 ({describe(values[0], other)}); start every "
                                      "process with the same command apart from --process_id")


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (JSON-like)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys: Sequence[str] = sorted(set(a) | set(b))
        return [k for key in keys for k in differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix[:-1] or "(all)"]
