"""Throughput benchmark of sce_jax against a PyTorch implementation of the same search.

``benchmarks.settings``       the table of benchmark settings (models, sizes, batch, smoothing)
``benchmarks.torch_search``   the PyTorch reference search (diffusers AutoencoderKL + a torch
                              classifier), step for step the algorithm of ``sce_jax.search``
``benchmarks.model_pairs``    the same models and weights in both frameworks
``benchmarks.search_timing``  how one search is timed, in each framework
``benchmarks.step_cost``      FLOPs per step and where a step's time goes
``benchmarks.peak``           the measured peak FLOP/s per dtype and a step's share of it
``benchmarks.memory``         peak memory of the timed calls
``benchmarks.measure``        every implementation of one setting in one process
``benchmarks.report``         derived figures and the Markdown page
``benchmarks.machine``, ``benchmarks.timing``, ``benchmarks.torch_setup``: the machine's
facts, a median-of-calls timer, PyTorch's device / threads / memory format

The entry point is ``scripts/benchmark.py``; results go to ``benchmarks/results/``.
"""
