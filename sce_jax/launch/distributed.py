"""Starting JAX on several processes (hosts) before a run: explicit values or the cluster's.

A run over several hosts starts one process per host (or per GPU); the processes find each
other through a coordinator (process 0's ``host:port``) and then behave as one JAX program
whose ``jax.devices()`` lists the devices of all of them. :func:`initialize_from_flags_or_env`
decides how to start, in this order:

1. **explicit values** (the ``--coordinator_address``, ``--num_processes``, ``--process_id``
   flags of ``scripts/explain.py``): used as given;
2. **SLURM** (``SLURM_PROCID`` and more than one task in ``SLURM_STEP_NUM_TASKS`` or
   ``SLURM_NTASKS``): process id = ``SLURM_PROCID``, process count = the task count,
   coordinator = the first host of ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST`` (compressed
   lists such as ``gpu[003-005,010]`` are expanded) on port :func:`slurm_port`;
3. **TPU pod slices and MPI-launched GPU clusters** (``TPU_WORKER_HOSTNAMES`` naming several
   hosts, ``MEGASCALE_COORDINATOR_ADDRESS``, or ``OMPI_COMM_WORLD_SIZE`` > 1):
   ``jax.distributed.initialize()`` without arguments, which reads the platform's own
   environment;
4. otherwise **one process**: nothing is initialised.

It must run before anything executes a JAX operation (JAX fixes its devices then). On CPU,
several processes talk through gloo collectives, and ``local_device_count`` splits each
process's CPU into that many devices (``jax_num_cpu_devices``; on GPUs and TPUs every process
uses the accelerators it can see).

Failing cleanly: processes that do not all join within ``initialization_timeout`` raise
:class:`~sce_jax.runs.collectives.PeerLostError` (JAX's client would abort the process: its
error callback is replaced while connecting). JAX's heartbeat, which also aborts a process
whose peer died, is set to :data:`HEARTBEAT_TIMEOUT_S` (a day): the run's own bounded waits
(:mod:`sce_jax.runs.collectives`) find a dead or stuck peer instead and name it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import jax
from absl import logging

from sce_jax.runs.collectives import PeerLostError

# The port a SLURM job's coordinator listens on: BASE + job id % SPAN (two jobs sharing a
# node rarely collide). An explicit --coordinator_address overrides it.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 20000
# JAX aborts every process this long after one stopped sending heartbeats; the run's own
# bounded waits (--peer_timeout) report a dead peer long before.
HEARTBEAT_TIMEOUT_S = 24 * 3600


class DistributedSetupError(ValueError):
    """Values for a multi-process start that cannot work (the message says which)."""


@dataclasses.dataclass(frozen=True)
class DistributedSetup:
    """How this process was started.

    Attributes:
      mode: "single" (nothing initialised), "explicit" (given values), "slurm" (from SLURM's
        environment) or "auto" (``jax.distributed.initialize()`` detected the cluster).
      process_id, num_processes: this process and how many there are (None for "auto"
        before JAX is asked; see ``jax.process_index()``).
      coordinator_address: ``host:port`` of process 0 (None for "single" and "auto").
    """

    mode: str
    process_id: int | None = None
    num_processes: int | None = None
    coordinator_address: str | None = None


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expands SLURM's compressed host list: ``"a[01-03,7],b"`` -> ``[a01, a02, a03, a7, b]``.

    Numeric ranges keep their zero padding (``[008-010]`` -> 008, 009, 010).
    """
    hosts = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,\[]*)", nodelist):
        prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
        if not prefix and not ranges:
            continue
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                if not (lo.isdigit() and hi.isdigit()):
                    raise DistributedSetupError(f"cannot parse SLURM node list {nodelist!r}: "
                                                f"range {part!r}")
                hosts.extend(f"{prefix}{i:0{len(lo)}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(prefix + part + suffix)
    return hosts


def slurm_port(job_id: str | None) -> int:
    """The coordinator port of a SLURM job: ``SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN``."""
    try:
        return SLURM_PORT_BASE + int(job_id or 0) % SLURM_PORT_SPAN
    except ValueError:
        raise DistributedSetupError(f"SLURM_JOB_ID={job_id!r} is not a number") from None


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def slurm_setup(env: Mapping[str, str]) -> DistributedSetup | None:
    """The multi-process setup SLURM's environment describes, or None outside a multi-task step."""
    process_id = _int_env(env, "SLURM_PROCID")
    num_processes = _int_env(env, "SLURM_STEP_NUM_TASKS") or _int_env(env, "SLURM_NTASKS")
    if process_id is None or num_processes is None or num_processes < 2:
        return None
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    hosts = expand_slurm_nodelist(nodelist)
    if not hosts:
        raise DistributedSetupError(
            f"SLURM runs {num_processes} tasks but SLURM_JOB_NODELIST is empty: cannot find the "
            "coordinator host; pass --coordinator_address=HOST:PORT")
    address = f"{hosts[0]}:{slurm_port(env.get('SLURM_JOB_ID'))}"
    return DistributedSetup("slurm", process_id, num_processes, address)


def cluster_is_auto_detectable(env: Mapping[str, str]) -> bool:
    """True in a TPU pod slice or an MPI-launched job with several processes."""
    tpu_hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return (len(tpu_hosts) > 1 or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))
            or (_int_env(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1)


def resolve_setup(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, env: Mapping[str, str] | None = None
                  ) -> DistributedSetup:
    """Decides how to start (see the module docstring) without starting anything."""
    env = os.environ if env is None else env
    given = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in given):
        if num_processes is None:
            raise DistributedSetupError(
                "--process_id/--coordinator_address without --num_processes: give all three "
                "(or none, to use the cluster's environment)")
        if num_processes < 1:
            raise DistributedSetupError(f"--num_processes={num_processes}: must be >= 1")
        if num_processes == 1:
            if process_id not in (None, 0):
                raise DistributedSetupError(f"--process_id={process_id} with --num_processes=1: "
                                            "the only process is 0")
            return DistributedSetup("single", 0, 1)
        if process_id is None:
            raise DistributedSetupError(f"--num_processes={num_processes} without --process_id: "
                                        "each process needs its own id in 0..num_processes-1")
        if not 0 <= process_id < num_processes:
            raise DistributedSetupError(f"--process_id={process_id}: must be in 0..{num_processes - 1}")
        if not coordinator_address:
            raise DistributedSetupError(
                f"--num_processes={num_processes} without --coordinator_address: give process "
                "0's HOST:PORT (the same on every process)")
        if not re.fullmatch(r"\[?[^\s\[\]]+\]?:\d+", coordinator_address):
            raise DistributedSetupError(f"--coordinator_address={coordinator_address!r}: "
                                        "expected HOST:PORT, e.g. 10.0.0.1:1234")
        return DistributedSetup("explicit", process_id, num_processes, coordinator_address)
    slurm = slurm_setup(env)
    if slurm is not None:
        return slurm
    if cluster_is_auto_detectable(env):
        return DistributedSetup("auto")
    return DistributedSetup("single", 0, 1)


def initialize_from_flags_or_env(coordinator_address: str | None = None,
                                 num_processes: int | None = None, process_id: int | None = None,
                                 local_device_count: int | None = None, *,
                                 initialization_timeout: int = 300) -> DistributedSetup:
    """Starts this process's part of a multi-process run (or nothing, for one process).

    Call it once, before any JAX operation.

    Args:
      coordinator_address: ``host:port`` of process 0, the same on every process.
      num_processes: how many processes take part.
      process_id: this process, ``0 <= process_id < num_processes``.
      local_device_count: on CPU, how many devices each process shows (None: JAX's default).
      initialization_timeout: seconds to wait for all processes to join.

    Returns:
      The :class:`DistributedSetup` used.

    Raises:
      DistributedSetupError: inconsistent values (e.g. a process id without a process count),
        or a device count given after JAX has started.
    """
    setup = resolve_setup(coordinator_address, num_processes, process_id)
    if local_device_count is not None:
        if local_device_count < 1:
            raise DistributedSetupError(f"--cpu_devices_per_process={local_device_count}: must be >= 1")
        try:
            jax.config.update("jax_num_cpu_devices", int(local_device_count))
        except RuntimeError as e:
            raise DistributedSetupError(
                f"cannot set {local_device_count} CPU devices per process: JAX has already "
                f"started ({e})") from None
    if setup.mode == "single":
        return setup
    # CPU processes exchange data through gloo; harmless where accelerators do the work.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = dict(initialization_timeout=int(initialization_timeout),
                   heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    if setup.mode == "explicit" or setup.mode == "slurm":
        logging.info("initialising jax.distributed (%s): process %d of %d, coordinator %s",
                     setup.mode, setup.process_id, setup.num_processes, setup.coordinator_address)
        options.update(coordinator_address=setup.coordinator_address,
                       num_processes=setup.num_processes, process_id=setup.process_id)
    else:
        logging.info("initialising jax.distributed from the cluster's environment")
    try:
        with _connect_errors_raised():
            jax.distributed.initialize(**options)
    except Exception as e:  # noqa: BLE001 - a deadline or a refused connection, in JAX's words
        who = (f"process {setup.process_id} of {setup.num_processes}, coordinator "
               f"{setup.coordinator_address}" if setup.process_id is not None else "auto-detected")
        first_line = (str(e).strip().splitlines() or [""])[0]
        detail = "" if "bad_cast" in first_line or not first_line else f" ({first_line})"
        raise PeerLostError(
            f"the processes did not all join within {initialization_timeout:g} s ({who}): a "
            "process was not started, has other --num_processes/--coordinator_address values, "
            f"or cannot reach the coordinator{detail}; start all of them and retry") from None
    return setup


class _connect_errors_raised:
    """While connecting, a failure raises in Python instead of aborting the process.

    JAX's client calls an error callback on a failed connection whose default terminates the
    process; any Python callback instead makes ``connect()`` raise (JAX cannot pass the error
    status to Python, so the callback itself never runs). Wraps the one private call involved.
    """

    def __enter__(self):
        from jax._src import distributed as jax_distributed

        self._module = jax_distributed._jax
        self._original = self._module.get_distributed_runtime_client

        def client(*args, **kwargs):
            kwargs.setdefault("missed_heartbeat_callback", lambda *_: None)
            return self._original(*args, **kwargs)

        self._module.get_distributed_runtime_client = client
        return self

    def __exit__(self, *exc):
        self._module.get_distributed_runtime_client = self._original
        return False
