"""All the measurements of one benchmark setting in this process, one implementation after
another: ``sce_jax``, ``torch``, their bfloat16-autoencoder variants and sce_jax with the
demo's generative prior (see :mod:`benchmarks.search_timing` for how each is timed)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from benchmarks import model_pairs, step_cost
from benchmarks.report import IMPLEMENTATIONS
from benchmarks.search_timing import measure_jax, measure_torch
from benchmarks.torch_setup import TorchOptions


def _demo_prior():
    """The shipped Fashion-MNIST prior and the prior settings its demo config runs it with."""
    from sce_jax.launch.config_files import load_config_module
    from sce_jax.runs.loaders import load_prior

    demo = load_config_module(os.path.join(model_pairs.ROOT, "configs", "fashion_mnist.py"))
    config = demo.get_config()
    return load_prior(config.prior), config.search.prior


def measure_setting(setting, impls: tuple[str, ...], steps: int, repeats: int,
                    torch_options: TorchOptions, breakdown: bool = False) -> dict:
    """Measures the named implementations of one setting in this process."""
    import torch

    unknown = [i for i in impls if i not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; one of {IMPLEMENTATIONS}")
    record: dict[str, Any] = {"setting": dataclasses.asdict(setting)}
    if setting.models == "demo" and model_pairs.demo_missing():
        record["skipped"] = model_pairs.demo_missing()
        return record
    torch.set_num_threads(torch_options.num_threads)
    if jax.default_backend() != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = True  # as JAX's default float32 precision on GPU
        torch.backends.cudnn.benchmark = True
    pair = model_pairs.model_pair(setting)
    pair.torch_generator.vae.to(memory_format=torch_options.memory_format())
    pair.torch_classifier.network.to(memory_format=torch_options.memory_format())
    parts_repeats = max(repeats, step_cost.BREAKDOWN_REPEATS)
    for impl in impls:
        logging.info("%s: timing %s", setting.name, impl)
        if impl == "sce_jax":
            record[impl] = measure_jax(pair, setting, steps, repeats)
            logging.info("%s: XLA cost analysis of one step", setting.name)
            record["flops_per_step"] = step_cost.step_flops(pair, setting)
            if breakdown:
                record.setdefault("breakdown", {})[impl] = step_cost.breakdown_jax(
                    pair, setting, parts_repeats)
        elif impl == "torch":
            record[impl] = measure_torch(pair, setting, steps, repeats, torch_options)
            if breakdown:
                record.setdefault("breakdown", {})[impl] = step_cost.breakdown_torch(
                    pair, setting, parts_repeats, torch_options)
        elif impl == "sce_jax_bf16":
            from sce_jax import Generator
            port = model_pairs.port_autoencoder(pair.autoencoder_state, pair.autoencoder_config,
                                                jnp.bfloat16)
            record[impl] = measure_jax(pair, setting, steps, repeats,
                                       generator=Generator.from_autoencoder(port))
        elif impl == "sce_jax_prior":
            if setting.models != "demo":
                record[impl] = {"skipped": "the prior is timed on the shipped demo only"}
                continue
            prior, prior_config = _demo_prior()
            record[impl] = measure_jax(pair, setting, steps, repeats, prior=prior,
                                       prior_config=prior_config)
        elif impl == "torch_bf16":
            record[impl] = measure_torch(pair, setting, steps, repeats, torch_options,
                                         generator=pair.torch_generator.in_bfloat16())
    return record
