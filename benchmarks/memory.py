"""Peak memory of a benchmark's steady calls, above what was in use before them."""

from __future__ import annotations

from benchmarks import machine
from benchmarks.torch_setup import torch_device


class MemoryWatch:
    """Peak memory above a baseline (taken when the watch is made, after the models are built).

    CPU: host RSS, from Linux's ``VmHWM`` / ``VmRSS`` (the high-water mark is reset through
    ``/proc/self/clear_refs``). GPU: ``torch.cuda.max_memory_allocated`` (resettable) or JAX's
    ``peak_bytes_in_use`` (a whole-process peak: each implementation runs in its own process).
    What the allocators keep between calls counts: it is memory the search needs.
    """

    def __init__(self, framework: str):
        import jax

        self.framework = framework
        self.gpu = (torch_device().type == "cuda" if framework == "torch"
                    else jax.default_backend() != "cpu")
        self.baseline = self._current()

    _status = staticmethod(machine.process_memory)

    def _current(self) -> int | None:
        if self.gpu and self.framework == "torch":
            import torch
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        if self.gpu:
            import jax
            return (jax.local_devices()[0].memory_stats() or {}).get("bytes_in_use")
        return self._status("VmRSS")

    def reset_peak(self) -> None:
        if self.gpu and self.framework == "torch":
            import torch
            torch.cuda.reset_peak_memory_stats()
        elif not self.gpu:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # VmHWM := VmRSS
            except OSError:
                pass

    def peak(self) -> int | None:
        """Bytes of the peak since the last reset, above the baseline."""
        if self.baseline is None:
            return None
        if self.gpu and self.framework == "torch":
            import torch
            value = torch.cuda.max_memory_allocated()
        elif self.gpu:
            import jax
            value = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        else:
            value = self._status("VmHWM")
        return None if value is None else value - self.baseline
