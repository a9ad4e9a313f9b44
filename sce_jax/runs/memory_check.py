"""Refusing a search that cannot fit in memory, before any work, with the estimate and the limit.

XLA knows what a compiled program needs per device (``compiled.memory_analysis()``): its
arguments, outputs and temporaries. The run compiles its search for the batch shape it will
use (the same compilation the first batch then reuses), before it writes anything to the
workdir (``run_config.json`` comes after every check), and compares

    need = argument + output + temporary - aliased bytes        (per device)

with the limit: ``max_memory_gb`` when set, else what the device has (an accelerator's
``memory_stats()["bytes_limit"]``; on CPU the machine's RAM, shared by the process's CPU
devices, so ``need`` is multiplied by their number). Where a backend reports no analysis the
check is skipped.
"""

from __future__ import annotations

import os

import jax

GB = 10 ** 9  # decimal gigabytes, as max_memory_gb counts them


class MemoryLimitError(ValueError):
    """The compiled search needs more memory than the limit (the message gives both)."""


def compiled_bytes(compiled) -> int | None:
    """Bytes one device needs to run ``compiled`` (a ``jax.stages.Compiled``); None if unknown."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def device_limit(device: jax.Device) -> tuple[int | None, str]:
    """Memory one device may use, and where the figure comes from."""
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the machine's RAM"
        except (ValueError, OSError, AttributeError):
            return None, "unknown"
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    return (int(limit), f"the memory of {device.device_kind}") if limit else (None, "unknown")


def check_fits(need_per_device: int | None, *, max_memory_gb: float, what: str) -> None:
    """Raises :class:`MemoryLimitError` if ``need_per_device`` exceeds the limit.

    ``what`` says what was compiled (batch and image size), for the message.
    """
    if need_per_device is None:
        return
    devices = jax.local_devices()
    need = need_per_device
    if max_memory_gb and max_memory_gb > 0:
        limit, source = int(max_memory_gb * GB), f"max_memory_gb={max_memory_gb:g}"
    else:
        limit, source = device_limit(devices[0])
        if devices[0].platform == "cpu":  # the CPU devices of a process share its RAM
            need *= len(devices)
    if limit is None or need <= limit:
        return
    raise MemoryLimitError(
        f"the search for {what} needs about {need / GB:.3g} GB of memory, more than "
        f"{limit / GB:.3g} GB ({source}); lower batch_size or data.image_size (or "
        "search.smoothing.chunk_size), or raise max_memory_gb if more is available")
