"""The cost of one FLUX prior step (a transformer forward), sce_jax against diffusers.

FLUX.1 has 11.9e9 parameters (47.6 GB in float32, 23.8 GB in bfloat16): the whole model does
not fit a 2-core, 24 GiB machine shared with others, so it is never built here. Instead one
double-stream block (``FluxTransformerBlock``) and one single-stream block
(``FluxSingleTransformerBlock``) at FLUX width (24 heads x 128 = 3072, MLP 4x) are timed in
both implementations, with the same random weights (diffusers' initialisation, copied into the
port through the strict loader), on the token counts of a 256x256 and a 512x512 image
(16-channel latent of 32x32 / 64x64, packed into 2x2 patches: 256 / 1024 image tokens) with
512 text tokens (FLUX.1-dev's T5 length; schnell uses 256). The forward of the whole model is
then *extrapolated*::

    full ~ 19 x double + 38 x single

leaving out the embedders and the output layer (two linear layers on 256-wide timestep
features and the pooled text vector, one 3072x3072 text projection and 3072 x 64 in and out:
<1% of the FLOPs). Every row is one call at batch 1 (time per image); each implementation's
time is the median of ``repeats`` calls after a first (compiling / warm-up) call. PyTorch
runs with ``torch.set_num_threads(cores)`` under ``no_grad``.

Memory: XLA's temporary buffers of the compiled block at batch 1 (the weights are arguments,
not temporaries): the activations in float32; in bfloat16 mostly a float32 copy of the
modulation weights that XLA:CPU makes for the batch-1 matrix-vector product on ``temb`` (a
fixed cost, not per image). PyTorch's CPU allocator reports nothing comparable.

Run ``python -m benchmarks.prior_cost_flux`` (5 min and 4.7 GB peak, measured with the 2-core
machine's load at 8-12 from other jobs; each block runs 3 times per implementation) or call
:func:`flux_cost_rows` / :func:`markdown`.
"""

from __future__ import annotations

import datetime
import gc
import os
import re
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import machine
from sce_jax.models.flux_layers import FluxLayerFactory, rope_tables
from sce_jax.models.flux_packing import latent_image_ids, text_ids
from sce_jax.models.flux_transformer import (
    FluxSingleTransformerBlock,
    FluxTransformer2DModel,
    FluxTransformer2DModelConfig,
    FluxTransformerBlock,
)
from sce_jax.weights.strict import load_torch_state_dict_into

FLUX_DEV = FluxTransformer2DModelConfig(guidance_embeds=True)   # diffusers' defaults = FLUX.1
TEXT_TOKENS = 512
VAE_DOWNSAMPLE = 8
LATENT_CHANNELS = 16
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BLOCKS = ("double", "single")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def image_tokens(image_size: int) -> int:
    """Packed latent tokens of a square image: (image / 8 / 2)^2."""
    side = image_size // VAE_DOWNSAMPLE // 2
    return side * side


def parameter_count(config: FluxTransformer2DModelConfig = FLUX_DEV) -> dict[str, int]:
    """Parameters of the whole model and of one block of each kind (counted abstractly)."""
    def count(module) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module)))

    model = nnx.eval_shape(lambda: FluxTransformer2DModel(config, rngs=nnx.Rngs(0)))
    return {"model": count(model), "double": count(model.transformer_blocks[0]),
            "single": count(model.single_transformer_blocks[0])}


def _torch_block(kind: str, config: FluxTransformer2DModelConfig, dtype: str):
    import torch
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock as T1
    from diffusers.models.transformers.transformer_flux import FluxTransformerBlock as T2
    cls = T2 if kind == "double" else T1
    torch.manual_seed(0)
    block = cls(config.inner_dim, config.num_attention_heads, config.attention_head_dim).eval()
    return block.to(getattr(torch, dtype))


def _jax_block(kind: str, config: FluxTransformer2DModelConfig, dtype: str, torch_block):
    """The port's block holding ``torch_block``'s weights (strict load)."""
    cls = FluxTransformerBlock if kind == "double" else FluxSingleTransformerBlock
    block = nnx.eval_shape(lambda: cls(
        config.inner_dim, config.num_attention_heads, config.attention_head_dim,
        make=FluxLayerFactory(nnx.Rngs(0), DTYPES[dtype], DTYPES[dtype])))
    state = {k: v.float().numpy() for k, v in torch_block.state_dict().items()}
    return load_torch_state_dict_into(block, state, what=f"FLUX {kind} block")


def _median_ms(fn, repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` calls of ``fn``, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), out


def time_block(kind: str, image_size: int, dtype: str, *, repeats: int = 2,
               config: FluxTransformer2DModelConfig = FLUX_DEV, batch: int = 1) -> dict[str, Any]:
    """One block of ``kind`` at ``image_size`` in both implementations (see the module doc)."""
    import torch
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    n_img = image_tokens(image_size)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, n_img, config.inner_dim)).astype(np.float32)
    c = rng.normal(size=(batch, TEXT_TOKENS, config.inner_dim)).astype(np.float32)
    temb = rng.normal(size=(batch, config.inner_dim)).astype(np.float32)
    side = image_size // VAE_DOWNSAMPLE
    ids = np.concatenate([text_ids(TEXT_TOKENS), latent_image_ids(side, side)], axis=0)

    tblock = _torch_block(kind, config, dtype)
    tdtype = getattr(torch, dtype)
    tx, tc, ttemb = (torch.from_numpy(a).to(tdtype) for a in (x, c, temb))
    trope = FluxPosEmbed(theta=10000, axes_dim=list(config.axes_dims_rope))(torch.from_numpy(ids))

    def torch_call():
        with torch.no_grad():
            return tblock(tx, tc, ttemb, image_rotary_emb=trope)

    jblock = _jax_block(kind, config, dtype, tblock)
    graphdef, params = nnx.split(jblock)
    rope = rope_tables(ids, config.axes_dims_rope)
    jdtype = DTYPES[dtype]
    args = (params, jnp.asarray(x, jdtype), jnp.asarray(c, jdtype), jnp.asarray(temb, jdtype))

    def forward(params, x, c, temb):
        return nnx.merge(graphdef, params)(x, c, temb, rope)

    start = time.perf_counter()
    compiled = jax.jit(forward).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp_mb = (memory.temp_size_in_bytes / 2 ** 20) if memory is not None else float("nan")
    jax_ms, (_, out_x) = _median_ms(lambda: jax.block_until_ready(compiled(*args)), repeats)

    _, ref_x = torch_call()                 # warm-up; its output is the reference below
    torch_ms, _ = _median_ms(torch_call, repeats)

    # parity at FLUX width: the timed programs compute the same thing
    out_x, ref_x = np.asarray(out_x, np.float32), ref_x.float().numpy()
    rel = float(np.abs(out_x - ref_x).max() / max(1.0, np.abs(ref_x).max()))
    row = dict(block=kind, image=image_size, tokens=n_img + TEXT_TOKENS, dtype=dtype,
               sce_jax_ms=jax_ms, diffusers_ms=torch_ms, ratio=torch_ms / jax_ms,
               compile_s=compile_s, temp_mb=temp_mb, max_rel_diff=rel)
    del tblock, jblock, params, args, compiled
    gc.collect()
    return row


def flux_cost_rows(image_sizes=(256, 512), dtypes=("float32", "bfloat16"), *, repeats: int = 2,
                   config: FluxTransformer2DModelConfig = FLUX_DEV) -> list[dict[str, Any]]:
    """Measured block rows, then one extrapolated full-forward row per (image, dtype):
    ``num_layers x double + num_single_layers x single`` (times at batch 1, i.e. per image;
    the full row's XLA temporaries are the larger block's, since blocks run one after
    another, and its ``weights_gb`` is ``params x bytes``)."""
    import torch
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count())
    try:
        return _rows(image_sizes, dtypes, repeats, config)
    finally:
        torch.set_num_threads(previous_threads)


def _rows(image_sizes, dtypes, repeats, config) -> list[dict[str, Any]]:
    counts = parameter_count(config)
    rows = []
    for dtype in dtypes:
        for size in image_sizes:
            measured = {kind: time_block(kind, size, dtype, repeats=repeats, config=config)
                        for kind in BLOCKS}
            for kind in BLOCKS:
                rows.append({**measured[kind], "params": counts[kind], "measured": True})
            d, s = measured["double"], measured["single"]
            n_d, n_s = config.num_layers, config.num_single_layers
            full = {key: n_d * d[key] + n_s * s[key] for key in ("sce_jax_ms", "diffusers_ms")}
            rows.append(dict(block=f"full ({n_d} double + {n_s} single)", image=size,
                             tokens=d["tokens"], dtype=dtype, **full,
                             ratio=full["diffusers_ms"] / full["sce_jax_ms"],
                             compile_s=float("nan"),
                             temp_mb=max(d["temp_mb"], s["temp_mb"]),
                             max_rel_diff=max(d["max_rel_diff"], s["max_rel_diff"]),
                             params=counts["model"], measured=False,
                             weights_gb=counts["model"] * jnp.dtype(DTYPES[dtype]).itemsize / 1e9))
    return rows


_cpu_model = machine.cpu_model


def markdown(rows: list[dict[str, Any]], *, load_before=None, load_after=None) -> str:
    """The rows as the results page: method first, then one table."""
    import diffusers
    import torch
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"# FLUX prior step: sce_jax vs diffusers ({datetime.datetime.now():%Y-%m-%d %H:%M})",
        "",
        f"- machine: {_cpu_model()}, {cores} cores; JAX backend {jax.default_backend()}; "
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"diffusers {diffusers.__version__}",
        f"- load average (1, 5, 15 min) before / after: {load_before} / {load_after}; the machine "
        "was shared, so times are medians and the ratio is the figure to read",
        "- method: one double-stream and one single-stream block at FLUX.1 width (3072, 24 heads) "
        "with the same random weights, batch 1, 512 text tokens + the packed image tokens; median "
        "of the timed calls after a compiling/warm-up call. **The `full` rows are extrapolated** "
        "(19 x double + 38 x single; embedders and output layer left out, <1% of the FLOPs); "
        "the whole 11.9e9-parameter model was not built. `XLA temp MiB` is the temporary memory "
        "of the compiled block at batch 1 (weights excluded; in bfloat16 mostly a float32 copy "
        "of the modulation weights, not per image); `rel diff` is "
        "max |sce_jax - diffusers| / max(1, max |diffusers|) of the block's image-stream output.",
        "",
        "| block | image | tokens | dtype | sce_jax ms | diffusers ms | diffusers / sce_jax | "
        "compile s | params | XLA temp MiB (batch 1) | weights GB | rel diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        weights = f"{r['weights_gb']:.1f}" if "weights_gb" in r else ""
        compile_s = "" if not r["measured"] else f"{r['compile_s']:.1f}"
        lines.append(
            f"| {r['block']} | {r['image']}x{r['image']} | {r['tokens']} | {r['dtype']} | "
            f"{r['sce_jax_ms']:.0f} | {r['diffusers_ms']:.0f} | {r['ratio']:.2f}x | {compile_s} | "
            f"{r['params'] / 1e6:.0f}M | {r['temp_mb']:.0f} | {weights} | "
            f"{r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> str:
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = flux_cost_rows()
    load_after = [round(x, 2) for x in os.getloadavg()]
    text = markdown(rows, load_before=load_before, load_after=load_after)
    slug = re.sub(r"[^a-z0-9]+", "-", _cpu_model().lower()).strip("-")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"flux-prior-cost-{slug}-{datetime.date.today()}.md")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
