"""Facts about the machine a benchmark runs on (Linux ``/proc``; fallbacks elsewhere)."""

from __future__ import annotations

import os
import platform
import re


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def process_memory(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` (current / peak resident memory) of this process in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes slow every measurement)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def framework_info(torch_threads: int, torch_memory_format: str) -> dict:
    """What the throughput benchmark's numbers were measured on: CPU, JAX's device, versions,
    PyTorch's threads and memory format (and its GPU, if any)."""
    import diffusers
    import flax
    import jax
    import torch

    device = jax.devices()[0]
    info = {"cpu": cpu_model(), "cores": cores(), "jax_backend": jax.default_backend(),
            "jax_device": device.device_kind, "python": platform.python_version(),
            "jax": jax.__version__, "flax": flax.__version__, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "torch_threads": torch_threads,
            "torch_memory_format": torch_memory_format}
    if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name(0)
    return info


def machine_slug(info: dict) -> str:
    """A file-name part for the machine: the accelerator, else ``<cpu model>-<cores>c``."""
    name = info["jax_device"] if info["jax_backend"] != "cpu" else f"{info['cpu']}-{info['cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
