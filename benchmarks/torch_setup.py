"""PyTorch in a benchmark process: its device, its threads and its memory format."""

from __future__ import annotations

import dataclasses

from benchmarks import machine


def torch_device():
    """CUDA when PyTorch sees a GPU, else the CPU."""
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device) -> None:
    """Waits for the device's queued work (CUDA); nothing on the CPU."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclasses.dataclass(frozen=True)
class TorchOptions:
    """How PyTorch runs: ``threads`` (0: every core this process may use) and the memory
    format (contiguous NCHW, or ``channels_last``)."""

    threads: int = 0
    channels_last: bool = False

    @property
    def num_threads(self) -> int:
        return self.threads or machine.cores()

    @property
    def format_name(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def memory_format(self):
        import torch
        return torch.channels_last if self.channels_last else torch.contiguous_format
