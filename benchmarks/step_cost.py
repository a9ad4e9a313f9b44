"""What one search step costs: XLA's FLOP count, and where its time goes (``--breakdown``).

FLOPs per step are XLA's cost analysis of the smoothed gradient compiled alone (a decoder
forward and VJP per decoder pass, N classifier forward/backward passes; the same algorithm, so
the same FLOPs, in PyTorch). The breakdown times the step's parts jitted alone (decoder
forward, decoder forward + VJP, classifier forward + backward, the whole step) in both
frameworks, and counts the convolutions XLA:CPU compiled as its own loop nests.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from benchmarks.model_pairs import ModelPair
from benchmarks.search_timing import search_config, search_settings
from benchmarks.torch_setup import TorchOptions, synchronize, torch_device

BREAKDOWN_REPEATS = 3  # at least: the parts are short, and other processes add spikes


def _jax_step(pair: ModelPair, settings):
    """One search step's smoothed gradient (``objective_gradient``), jitted, over parameters."""
    from sce_jax.search.smoothing import objective_gradient

    gen, clf = pair.jax_generator, pair.jax_classifier

    def step(gen_params, cls_params, z, inputs):
        return objective_gradient(z, 0, inputs, decode=lambda l: gen.decode_fn(gen_params, l),
                                  logits_fn=lambda x: clf.logits_fn(cls_params, x),
                                  settings=settings, kind=pair.kind)
    return jax.jit(step)


def _step_inputs(pair: ModelPair, concrete: bool):
    """``(z, StepInputs)`` for one step at ``z0``: arrays, or shapes only."""
    from sce_jax.search.smoothing import StepInputs

    gen = pair.jax_generator
    b, h, w, c = pair.images.shape
    keys = jax.vmap(jax.random.key)(jnp.arange(b))
    if not concrete:
        f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
        z = f32(b, *gen.latent_shape((h, w)))
        return z, StepInputs(f32(b, h, w, c), z, f32(b, h, w, c), f32(b, h, w, 1),
                             jax.ShapeDtypeStruct((b,), jnp.int32), f32(b),
                             jax.eval_shape(lambda: keys))
    x = jnp.asarray(pair.images)
    z0 = jax.jit(gen.encode_fn)(gen.params, x)
    decoded0 = jax.jit(gen.decode_fn)(gen.params, z0)
    return z0, StepInputs(x, z0, decoded0, jnp.ones((b, h, w, 1)), jnp.ones((b,), jnp.int32),
                          jnp.zeros((b,)), keys)


def step_flops(pair: ModelPair, setting) -> float | None:
    """FLOPs of one search step (smoothed gradient, all N samples in one pass) per XLA."""
    config = search_config(setting, 1)
    config.smoothing.chunk_size = 0  # the cost analysis counts a loop body once: no loop
    z, inputs = _step_inputs(pair, concrete=False)
    step = _jax_step(pair, search_settings(config))
    lowered = step.lower(pair.jax_generator.params, pair.jax_classifier.params, z, inputs)
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # compile / warm up
    return timing.median_ms(fn, repeats)


def _pass_sizes(setting) -> tuple[int, int]:
    """Images per decoder pass and per classifier pass of one step (one chunk of samples)."""
    samples = setting.chunk_size or setting.num_samples
    decoder = setting.batch * (samples if setting.space == "latent" else 1)
    return decoder, setting.batch * samples


def count_loop_nest_convolutions(hlo_text: str) -> tuple[int, int]:
    """(convolutions, those XLA:CPU emitted as its own loop nests rather than library calls).

    A heuristic on the optimised HLO text of XLA:CPU: a convolution it lowers itself carries
    the ``outer_dimension_partitions`` backend config of its parallel loop emitter.
    """
    convs = [line for line in hlo_text.splitlines() if " convolution(" in line]
    return len(convs), sum("outer_dimension_partitions" in line for line in convs)


def breakdown_jax(pair: ModelPair, setting, repeats: int) -> dict:
    """Where an sce_jax step's time goes: its parts jitted alone, the step alone, and how
    XLA compiled the convolutions of the whole search (inside its ``while`` loop)."""
    from sce_jax import Explainer

    gen, clf = pair.jax_generator, pair.jax_classifier
    dec_batch, clf_batch = _pass_sizes(setting)
    z0, inputs = _step_inputs(pair, concrete=True)
    z = jnp.tile(z0, (dec_batch // z0.shape[0], 1, 1, 1))
    x = jnp.tile(inputs.x, (clf_batch // z0.shape[0], 1, 1, 1))
    decode = jax.jit(gen.decode_fn)
    decode_vjp = jax.jit(lambda p, z_: jax.vjp(lambda l: gen.decode_fn(p, l), z_)[1](
        jnp.ones_like(gen.decode_fn(p, z_)))[0])
    clf_grad = jax.jit(lambda p, x_: jax.grad(lambda i: jnp.sum(clf.logits_fn(p, i)[:, 0]))(x_))
    settings = search_settings(search_config(setting, 1))
    step = _jax_step(pair, settings)
    ready = jax.block_until_ready
    out = {
        "decoder_forward_ms": _median_ms(lambda: ready(decode(gen.params, z)), repeats),
        "decoder_forward_vjp_ms": _median_ms(lambda: ready(decode_vjp(gen.params, z)), repeats),
        "classifier_forward_backward_ms": _median_ms(lambda: ready(clf_grad(clf.params, x)),
                                                     repeats),
        "step_alone_ms": _median_ms(lambda: ready(step(gen.params, clf.params, z0, inputs)),
                                    repeats),
        "decoder_images": dec_batch, "classifier_images": clf_batch,
    }
    if jax.default_backend() == "cpu":
        explainer = Explainer(gen, clf, search_settings(search_config(setting, 2)))
        batch, _ = explainer.prepare_batch(pair.images, pair.targets, kind=pair.kind)
        search = explainer.compiled(pair.kind).lower(explainer.search_params, batch)
        search_hlo = search.compile().as_text()
        step_hlo = step.lower(gen.params, clf.params, z0, inputs).compile().as_text()
        out["search_convolutions"], out["search_loop_nest_convolutions"] = \
            count_loop_nest_convolutions(search_hlo)
        out["step_alone_convolutions"], out["step_alone_loop_nest_convolutions"] = \
            count_loop_nest_convolutions(step_hlo)
    return out


def breakdown_torch(pair: ModelPair, setting, repeats: int, torch_options: TorchOptions) -> dict:
    """The same parts in PyTorch."""
    import torch

    gen, clf = pair.torch_generator, pair.torch_classifier
    device = torch_device()
    fmt = torch_options.memory_format()
    dec_batch, clf_batch = _pass_sizes(setting)
    x1 = torch.from_numpy(np.ascontiguousarray(pair.images.transpose(0, 3, 1, 2))).to(device)
    with torch.no_grad():
        z1 = gen.encode(x1)
    z = z1.repeat(dec_batch // z1.shape[0], 1, 1, 1).contiguous(memory_format=fmt)
    x = x1.repeat(clf_batch // x1.shape[0], 1, 1, 1).contiguous(memory_format=fmt)

    def decoder_forward():
        with torch.no_grad():
            gen.decode(z)
        synchronize(device)

    def decoder_forward_vjp():
        leaf = z.clone().requires_grad_(True)
        gen.decode(leaf).sum().backward()
        synchronize(device)

    def classifier_forward_backward():
        leaf = x.clone().requires_grad_(True)
        clf(leaf)[:, 0].sum().backward()
        synchronize(device)

    return {"decoder_forward_ms": _median_ms(decoder_forward, repeats),
            "decoder_forward_vjp_ms": _median_ms(decoder_forward_vjp, repeats),
            "classifier_forward_backward_ms": _median_ms(classifier_forward_backward, repeats),
            "decoder_images": dec_batch, "classifier_images": clf_batch}
