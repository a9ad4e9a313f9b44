"""Timing the search in sce_jax and in PyTorch, the same way on both sides.

Success is made impossible (goal probability 2), so every example takes every step, and one
attempt is timed (each of the K attempts costs the same per step; a counterfactual is one
attempt's result). A first call (compilation / warm-up), then ``repeats`` calls of ``steps``
steps, each step timed inside the loop (sce_jax: the host progress callback after every step;
PyTorch: its Python loop). From these::

    step      = median step time
    fixed     = median call - steps x step        (encoding, D(z0), the final re-check)
    cf/s      = B / (fixed + budget x step)       (extrapolated to the setting's step budget)
    compile   = first call - median call
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax

from benchmarks.memory import MemoryWatch
from benchmarks.model_pairs import ModelPair
from benchmarks.torch_setup import TorchOptions, torch_device

UNREACHABLE_GOAL = 2.0  # probability >= 2 never happens: every example runs every step
                       # (set on the validated settings: a config refuses goals above 1)
TIMED_ATTEMPTS = 1  # every attempt costs the same per step: one is timed, cf/s is per attempt


def search_config(setting, steps: int):
    """The setting's search config, ``steps`` per attempt, one attempt, success impossible."""
    import sce_jax
    c = sce_jax.default_search_config()
    c.steps = steps
    c.attempts = TIMED_ATTEMPTS
    c.smoothing.update(setting.smoothing_overrides())
    return c


def search_settings(config):
    """The validated settings of a benchmark config, with success made impossible."""
    from sce_jax.search.config import settings_from_config
    return dataclasses.replace(settings_from_config(config), goal_probability=UNREACHABLE_GOAL)


def summarise(first: float, calls: list[float], step_times: list[float], steps: int, setting,
              **extra) -> dict:
    """Step time = median of the steps timed inside the loops; fixed = call - steps x step;
    counterfactuals per second extrapolated to the step budget: B / (fixed + budget x step)."""
    call = statistics.median(calls)
    step = statistics.median(step_times)
    fixed = call - steps * step
    per_attempt = fixed + setting.steps_budget * step
    return dict(first_call_s=first, compile_s=first - call, call_s=call, calls_s=calls,
                step_s=step, step_s_min=min(step_times), step_s_max=max(step_times),
                steps_timed=len(step_times), fixed_s=fixed,
                cf_per_s=setting.batch / per_attempt if per_attempt > 0 else None, **extra)


def measure_jax(pair: ModelPair, setting, steps: int, repeats: int, generator=None,
                prior=None, prior_config=None) -> dict:
    """Times sce_jax's Explainer: whole calls, and each step through the progress callback
    (with the generative ``prior`` in the loop when one is given, run with the search's
    ``prior_config`` keys: strength, Euler steps, ...)."""
    from sce_jax import Explainer

    stamps: list[tuple[int, float]] = []

    def progress(attempt, step, num_done, num_valid):  # runs on the host after every step
        stamps.append((int(step), time.perf_counter()))

    config = search_config(setting, steps)
    config.progress_every = 1
    if prior_config is not None:
        config.prior.update(prior_config)
    config.prior.enabled = prior is not None
    explainer = Explainer(generator or pair.jax_generator, pair.jax_classifier,
                          search_settings(config), progress=progress, prior=prior)
    batch, _ = explainer.prepare_batch(pair.images, pair.targets, kind=pair.kind)

    def call() -> float:
        stamps.clear()
        start = time.perf_counter()
        jax.block_until_ready(explainer.explain_arrays(batch, kind=pair.kind))
        return time.perf_counter() - start

    watch = MemoryWatch("jax")
    watch.reset_peak()
    first = call()
    first_peak = watch.peak()
    watch.reset_peak()
    calls, step_times = [], []
    for _ in range(repeats):
        calls.append(call())
        ordered = sorted(stamps, key=lambda s: s[1])
        step_times += [t1 - t0 for (s0, t0), (s1, t1) in zip(ordered, ordered[1:]) if s1 == s0 + 1]
    if not step_times:
        raise RuntimeError("the progress callback did not time any step; use --steps >= 2")
    peak = watch.peak()
    # XLA's own accounting of the compiled search (the executable is cached: no recompilation).
    memory = explainer.compile(batch, kind=pair.kind).memory_analysis()
    return summarise(first, calls, step_times, steps, setting, peak_bytes=peak,
                     first_call_peak_bytes=first_peak,
                     xla_temp_bytes=getattr(memory, "temp_size_in_bytes", None),
                     xla_argument_bytes=getattr(memory, "argument_size_in_bytes", None))


def measure_torch(pair: ModelPair, setting, steps: int, repeats: int, torch_options: TorchOptions,
                  generator=None) -> dict:
    """Times the PyTorch search: whole calls, and each step inside its Python loop (with
    ``pair.torch_generator`` unless ``generator``)."""
    from benchmarks.torch_search import explain_batch_torch

    device = torch_device()
    settings = search_settings(search_config(setting, steps))
    step_times: list[float] = []

    def call(record: bool) -> float:
        start = time.perf_counter()
        explain_batch_torch(generator or pair.torch_generator, pair.torch_classifier, pair.images,
                            pair.targets, settings, kind=pair.kind, device=device,
                            memory_format=torch_options.memory_format(),
                            step_times=step_times if record else None)
        return time.perf_counter() - start

    watch = MemoryWatch("torch")
    watch.reset_peak()
    first = call(False)
    first_peak = watch.peak()
    watch.reset_peak()
    calls = [call(True) for _ in range(repeats)]
    return summarise(first, calls, step_times, steps, setting, peak_bytes=watch.peak(),
                     first_call_peak_bytes=first_peak)
