"""Throughput benchmark of sce_jax against a PyTorch implementation of the same search.

``benchmarks.settings``      the table of benchmark settings (models, sizes, batch, smoothing)
``benchmarks.torch_search``  the PyTorch reference search (diffusers AutoencoderKL + a torch
                             classifier), step for step the algorithm of ``sce_jax.search``

The entry point is ``scripts/benchmark.py``; results go to ``benchmarks/results/``.
"""
