"""The machine's measured peak FLOP/s per dtype: what a step's achieved FLOP/s is a share of.

One kernel is not a bound: a single 2048 x 2048 float32 matmul ran at 92 GFLOP/s on a 2-core
AMD EPYC where the SD 64x64 search step reached 149 (a "162% of peak"). So the peak is taken
over several kernels, each at its best:

    rate(kernel) = flops(kernel) / min over ``repeats`` calls of the call time   (after a warm-up)
    kernel peak  = max over the kernels of rate(kernel)

with the kernels: matmuls of several sizes in three layouts (``a b``, ``a b^T``, ``a^T b``),
a batched matmul and a 3x3 convolution, in XLA and in PyTorch, for float32 and bfloat16
separately (bfloat16 operands accumulate in float32, as the bfloat16 convolutions do). The
fastest call is the one least disturbed by other processes, so the best of the repeats is
the kernel's rate (the step times stay medians: they are what a run gets).

A step's share of the peak is ``achieved / peak`` with ``peak = max(kernel peak, every
achieved rate of that dtype in the report)`` (:func:`bounding_peak`): if a step beats every
kernel, the kernels did not bound it, so the step itself is the best rate observed and its
share is 100% (the report says which set the peak). The share never exceeds 1.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

LAYOUTS = ("NN", "NT", "TN")  # a b, a b^T, a^T b
BATCHED_MATMULS = 8


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One candidate for the peak: ``fn(*args)`` does ``flops`` floating-point operations."""

    name: str
    flops: float
    fn: Callable[..., Any]
    args: tuple
    wait: Callable[[Any], Any] = lambda out: out  # blocks until the result is computed

    def __call__(self) -> Any:
        return self.wait(self.fn(*self.args))


def best_rate(kernel: Kernel, repeats: int) -> float:
    """``flops / fastest call`` over ``repeats`` calls after one warm-up (compiling) call."""
    kernel()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        kernel()
        best = min(best, time.perf_counter() - start)
    return kernel.flops / best


def measure_peak(kernels: Sequence[Kernel], repeats: int,
                 rate: Callable[[Kernel, int], float] = best_rate) -> dict[str, Any]:
    """``{"flops_per_s": max rate, "best": its kernel, "kernels": {name: rate}}`` over the
    kernels given (``rate``: how one is measured, :func:`best_rate`)."""
    rates = {k.name: float(rate(k, repeats)) for k in kernels}
    if not rates:
        return {"flops_per_s": None, "best": None, "kernels": {}}
    best = max(rates, key=rates.get)
    return {"flops_per_s": rates[best], "best": best, "kernels": rates}


def bounding_peak(kernel_peak: float | None, achieved: Iterable[float | None]) -> float | None:
    """The larger of the kernels' peak and every achieved rate given (None when none is)."""
    values = [v for v in (kernel_peak, *achieved) if v]
    return max(values) if values else None


def share_of_peak(achieved: float | None, peak: float | None) -> float | None:
    """``achieved / peak`` (None without either); ``peak`` from :func:`bounding_peak`."""
    if not achieved or not peak:
        return None
    if achieved > peak * (1 + 1e-9):
        raise ValueError(f"achieved {achieved:g} FLOP/s is above the peak {peak:g}: the peak "
                         "must be the bounding_peak over the achieved rates")
    return achieved / peak


def sizes_for(backend: str) -> tuple[tuple[int, ...], tuple[int, int, int, int]]:
    """``(matmul sizes n, convolution input (B, H, W, C))`` for a backend: a CPU's caches
    favour mid sizes, an accelerator needs large ones to fill."""
    if backend == "cpu":
        return (512, 1024, 2048), (4, 64, 64, 128)
    return (2048, 4096, 8192), (32, 64, 64, 512)


def _matmul_flops(n: int) -> float:
    return 2.0 * n ** 3


def _conv_flops(shape: Sequence[int]) -> float:
    b, h, w, c = shape
    return 2.0 * b * h * w * c * c * 9  # 3x3, C -> C channels, 'SAME'


def jax_kernels(dtype, sizes: Sequence[int], conv_shape: Sequence[int]) -> list[Kernel]:
    """XLA's kernels for ``dtype`` (float32 accumulation); ``sizes``: the matmuls' n."""
    import jax
    import jax.numpy as jnp

    acc = jnp.float32
    dims = {"NN": ((1,), (0,)), "NT": ((1,), (1,)), "TN": ((0,), (0,))}
    kernels = []
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        for layout in LAYOUTS:
            contract = dims[layout]
            fn = jax.jit(lambda x, y, c=contract: jax.lax.dot_general(
                x, y, (c, ((), ())), preferred_element_type=acc))
            kernels.append(Kernel(f"XLA matmul {n} {layout}", _matmul_flops(n), fn, (a, b),
                                  jax.block_until_ready))
    m = max(sizes) // 2
    a = jax.random.normal(jax.random.key(2), (BATCHED_MATMULS, m, m), dtype)
    bmm = jax.jit(lambda x, y: jnp.einsum("bij,bjk->bik", x, y, preferred_element_type=acc))
    kernels.append(Kernel(f"XLA batched matmul {BATCHED_MATMULS}x{m}",
                          BATCHED_MATMULS * _matmul_flops(m), bmm, (a, a), jax.block_until_ready))
    b_, h, w, c = conv_shape
    x = jax.random.normal(jax.random.key(3), (b_, h, w, c), dtype)
    k = jax.random.normal(jax.random.key(4), (3, 3, c, c), dtype)
    conv = jax.jit(lambda x_, k_: jax.lax.conv_general_dilated(
        x_, k_, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=acc))
    kernels.append(Kernel(f"XLA conv3x3 {b_}x{h}x{w}x{c}", _conv_flops(conv_shape), conv, (x, k),
                          jax.block_until_ready))
    return kernels


def torch_kernels(dtype, sizes: Sequence[int], conv_shape: Sequence[int],
                  threads: int) -> list[Kernel]:
    """PyTorch's kernels for ``dtype`` on its device (its BLAS / oneDNN / cuBLAS)."""
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_setup import synchronize, torch_device

    torch.set_num_threads(threads)
    device = torch_device()

    def wait(out):
        synchronize(device)
        return out

    ops = {"NN": lambda x, y: torch.mm(x, y), "NT": lambda x, y: torch.mm(x, y.t()),
           "TN": lambda x, y: torch.mm(x.t(), y)}
    kernels = []
    generator = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        for layout in LAYOUTS:
            kernels.append(Kernel(f"PyTorch matmul {n} {layout}", _matmul_flops(n), ops[layout],
                                  (a, b), wait))
    m = max(sizes) // 2
    a = torch.randn(BATCHED_MATMULS, m, m, generator=generator).to(device=device, dtype=dtype)
    kernels.append(Kernel(f"PyTorch batched matmul {BATCHED_MATMULS}x{m}",
                          BATCHED_MATMULS * _matmul_flops(m), torch.bmm, (a, a), wait))
    b_, h, w, c = conv_shape
    x = torch.randn(b_, c, h, w, generator=generator).to(device=device, dtype=dtype)
    k = torch.randn(c, c, 3, 3, generator=generator).to(device=device, dtype=dtype)
    kernels.append(Kernel(f"PyTorch conv3x3 {b_}x{h}x{w}x{c}", _conv_flops(conv_shape),
                          lambda x_, k_: F.conv2d(x_, k_, padding=1), (x, k), wait))
    return kernels


def machine_peaks(*, bf16: bool, torch_threads: int, repeats: int = 3) -> dict[str, dict]:
    """``{"float32": measure_peak(...), "bfloat16": ...}`` over XLA's and PyTorch's kernels
    (bfloat16 on an accelerator or when ``bf16``)."""
    import jax
    import jax.numpy as jnp
    import torch

    backend = jax.default_backend()
    sizes, conv = sizes_for(backend)
    dtypes = {"float32": (jnp.float32, torch.float32)}
    if bf16 or backend != "cpu":
        dtypes["bfloat16"] = (jnp.bfloat16, torch.bfloat16)
    return {name: measure_peak(jax_kernels(jax_dtype, sizes, conv)
                               + torch_kernels(torch_dtype, sizes, conv, torch_threads), repeats)
            for name, (jax_dtype, torch_dtype) in dtypes.items()}


def peak_lines(peaks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown bullet text per dtype: the peak and the kernel that reached it."""
    return [f"{dtype} {p['flops_per_s'] / 1e9:.1f} GFLOP/s ({p['best']})"
            for dtype, p in peaks.items() if p.get("flops_per_s")]
