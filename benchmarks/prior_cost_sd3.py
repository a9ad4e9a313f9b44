"""Cost of one SD3 prior step: the SD3 transformer's forward in sce_jax vs diffusers (PyTorch).

The SD3-medium transformer has 2.08B parameters (8.3 GB in float32; 57M of them the
192 x 192 position grid): too much to build twice
on a shared 2-core, 24 GiB machine. So this times ``blocks`` joint blocks (default 2) at the
full SD3-medium width (24 heads x 64 = 1536, joint_attention_dim 4096, pooled 2048,
patch 2, 16 latent channels) with random weights, in both frameworks in the same process, on
the shapes an SD3 search feeds the prior: one image's latent (image / 8) and 333 context
tokens (77 CLIP + 256 T5). The full model's time is **extrapolated by the block count**::

    full_ms ~= measured_ms * 24 / blocks

(every block costs the same but the last, context-pre-only one, a little cheaper; the
embeddings and the output projection, < 1% of the FLOPs, are counted 24 / blocks times). The
full model's parameters are counted on an abstract (shape-only) port. Memory: how far the
process's resident set rose during the *first* forward of a shape (Linux ``VmHWM``, reset
through ``/proc/self/clear_refs``), per batch of ``batch`` images; a lower bound where the
allocator reuses memory freed by an earlier row. For sce_jax also XLA's temporary buffers
(``memory_analysis``), which do not depend on reuse. A forward pass keeps about one block's
activations at a time, so the full model needs its weights plus about this peak.

    python -m benchmarks.prior_cost_sd3                     # 256 and 512, float32 and bfloat16
    python -m benchmarks.prior_cost_sd3 --sizes=256 --dtypes=float32 --repeats=2

Writes ``benchmarks/results/<machine>-<date>-sd3-prior.md``.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import machine, timing
from sce_jax.models.sd3_transformer import SD3Transformer2DModel, SD3TransformerConfig
from sce_jax.weights.strict import load_torch_state_dict_into

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                  attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                  caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                  pos_embed_max_size=192)
CONTEXT_TOKENS = 333  # 77 CLIP tokens + 256 T5 tokens (SD3 pipelines' max_sequence_length)
VAE_DOWNSAMPLE = 8
MB = 2.0 ** -20
JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _torch_dtype(name: str):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


_rss = machine.process_memory


def peak_rss_during(fn: Callable[[], Any]) -> int | None:
    """Bytes by which the resident set's high-water mark rose above its level before ``fn``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
    except OSError:
        return None
    before = _rss("VmRSS")
    fn()
    after = _rss("VmHWM")
    return None if before is None or after is None else max(0, after - before)


median_ms = timing.median_ms


def parameter_count(config: dict) -> int:
    """Parameters of the port for ``config``, counted on shapes only (nothing allocated)."""
    model = nnx.eval_shape(lambda: SD3Transformer2DModel(SD3TransformerConfig(**config),
                                                         rngs=nnx.Rngs(0)))
    return int(sum(np.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))))


def forward_flops(config: dict, image_tokens: int, context_tokens: int, batch: int = 1) -> float:
    """FLOPs of the matrix products of one forward (2 per multiply-add), for ``batch`` images.

    With D the width, T_x image and T_c context tokens, T = T_x + T_c, a joint block costs::

        24 T_x D^2                    image q, k, v, out (8 T_x D^2) and feed-forward (16)
        24 T_c D^2                    context likewise (6 T_c D^2 in the pre-only last block)
        4 T^2 D                       logits and probabilities x values over all heads
        8 T_x D^2 + 4 T_x^2 D         a dual-attention block's second attention (SD3.5)

    plus the context embedder (2 T_c J D), the patch embedding and the output projection
    (2 T_x p^2 C D each). Per-example AdaLN products are left out (< 0.1%).
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    tx, tc = image_tokens, context_tokens
    layers = config["num_layers"]
    total = 0.0
    for i in range(layers):
        pre_only = i == layers - 1
        total += 24 * tx * d * d + (6 if pre_only else 24) * tc * d * d + 4 * (tx + tc) ** 2 * d
        if i in tuple(config.get("dual_attention_layers", ())):
            total += 8 * tx * d * d + 4 * tx * tx * d
    patch = config["patch_size"] ** 2
    out_channels = config.get("out_channels") or config["in_channels"]
    total += 2 * tc * config["joint_attention_dim"] * d
    total += 2 * tx * patch * (config["in_channels"] + out_channels) * d
    return batch * total


def _inputs(config: dict, image: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = image // VAE_DOWNSAMPLE
    return dict(
        z=rng.standard_normal((batch, side, side, config["in_channels"])).astype(np.float32),
        context=rng.standard_normal((batch, CONTEXT_TOKENS, config["joint_attention_dim"]))
        .astype(np.float32),
        pooled=rng.standard_normal((batch, config["pooled_projection_dim"])).astype(np.float32),
        timestep=np.full((batch,), 500.0, np.float32))


def cost_rows(sizes=(256, 512), dtypes=("float32", "bfloat16"), *, blocks: int = 2,
              repeats: int = 3, batch: int = 1, config: dict | None = None,
              full_blocks: int | None = None, threads: int | None = None) -> list[dict]:
    """One row per (image size, dtype): times, their ratio, parameters, memory, agreement.

    Args:
      sizes: image sides; the latent is ``size / 8`` (SD3's VAE), tokens ``(size / 16)^2``.
      dtypes: compute dtypes ("float32", "bfloat16"); both frameworks hold parameters in it.
      blocks: joint blocks built and timed (the last is context-pre-only, as in SD3).
      repeats: timed calls after a first (compiling / warm-up) call; the median is reported.
      batch: images per forward.
      config: the architecture (default SD3-medium); ``num_layers`` is replaced by ``blocks``.
      full_blocks: the block count the time is extrapolated to (default config's num_layers).
      threads: PyTorch intra-op threads (default: the cores this process may use).

    Returns:
      dicts with image, latent, tokens, dtype, blocks, jax_ms, torch_ms, ratio (jax / torch),
      compile_s, full_jax_ms, full_torch_ms (extrapolated), params_measured, params_full,
      jax_peak_mb, torch_peak_mb, xla_temp_mb (per forward of ``batch`` images), full_gflop
      (:func:`forward_flops` of the full model: XLA's own count sees a loop's body once,
      and on CPU the heads run in a loop),
      max_rel_diff (max |jax - torch| / max(1, max |torch|)).
    """
    import diffusers
    import torch

    config = dict(config or SD3_MEDIUM)
    full_blocks = full_blocks or config["num_layers"]
    params_full = parameter_count(config)
    config["num_layers"] = blocks
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    reference = diffusers.SD3Transformer2DModel(**config).eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    params_measured = sum(int(v.size) for v in state.values()) - state["pos_embed.pos_embed"].size
    rows = []
    for dtype in dtypes:
        port = nnx.eval_shape(lambda: SD3Transformer2DModel(
            SD3TransformerConfig(**config), rngs=nnx.Rngs(0), dtype=JAX_DTYPES[dtype],
            param_dtype=JAX_DTYPES[dtype]))
        load_torch_state_dict_into(port, state)
        graphdef, params = nnx.split(port)
        forward = jax.jit(lambda p, *a: nnx.merge(graphdef, p)(*a))
        reference.to(torch.float32).load_state_dict(
            {k: torch.from_numpy(v) for k, v in state.items()})
        torch_model = reference.to(_torch_dtype(dtype))
        for size in sizes:
            x = _inputs(config, size, batch)
            args = [jnp.asarray(x[k]) for k in ("z", "context", "pooled", "timestep")]
            start = time.perf_counter()
            compiled = forward.lower(params, *args).compile()
            compile_s = time.perf_counter() - start
            memory = compiled.memory_analysis()
            result = []
            jax_peak = peak_rss_during(lambda: result.append(
                np.asarray(jax.block_until_ready(compiled(params, *args)))))
            out = result[0]
            jax_ms = median_ms(lambda: jax.block_until_ready(compiled(params, *args)), repeats)

            tz = torch.from_numpy(np.ascontiguousarray(x["z"].transpose(0, 3, 1, 2)))
            targs = [t.to(_torch_dtype(dtype)) for t in
                     (tz, torch.from_numpy(x["context"]), torch.from_numpy(x["pooled"]))]
            tstep = torch.from_numpy(x["timestep"])

            def torch_call():
                with torch.no_grad():
                    return torch_model(*targs, tstep).sample

            result = []
            torch_peak = peak_rss_during(lambda: result.append(torch_call()))
            expected = result[0].float().numpy().transpose(0, 2, 3, 1)
            torch_ms = median_ms(torch_call, repeats)
            tokens = (size // VAE_DOWNSAMPLE // config["patch_size"]) ** 2
            rows.append(dict(
                image=size, latent=size // VAE_DOWNSAMPLE, tokens=tokens, dtype=dtype,
                batch=batch, blocks=blocks, jax_ms=jax_ms, torch_ms=torch_ms,
                ratio=jax_ms / torch_ms, compile_s=compile_s,
                full_jax_ms=jax_ms * full_blocks / blocks,
                full_torch_ms=torch_ms * full_blocks / blocks, full_blocks=full_blocks,
                params_measured=params_measured, params_full=params_full,
                jax_peak_mb=None if jax_peak is None else jax_peak * MB,
                torch_peak_mb=None if torch_peak is None else torch_peak * MB,
                xla_temp_mb=getattr(memory, "temp_size_in_bytes", 0) * MB,
                full_gflop=forward_flops(dict(config, num_layers=full_blocks), tokens,
                                         CONTEXT_TOKENS, batch) / 1e9,
                max_rel_diff=float(np.abs(out - expected).max()
                                   / max(1.0, np.abs(expected).max()))))
    return rows


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: list[dict], *, note: str = "") -> str:
    """The results as a markdown page: method, machine, one table row per measurement."""
    import diffusers
    import flax
    import torch

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    first = rows[0]
    lines = [
        f"# SD3 prior step: SD3Transformer2DModel forward, sce_jax vs diffusers "
        f"({datetime.datetime.now():%Y-%m-%d %H:%M})", "",
        f"- machine: {cpu}, {len(os.sched_getaffinity(0))} cores, JAX backend "
        f"{jax.default_backend()}; load average {[round(v, 2) for v in os.getloadavg()]}",
        f"- versions: jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), diffusers {diffusers.__version__}",
        f"- method: SD3-medium width (24 heads x 64, joint 4096, pooled 2048), random weights, "
        f"**{first['blocks']} joint blocks built and timed** (the last context-pre-only), "
        f"{CONTEXT_TOKENS} context tokens, batch {first['batch']}, median of timed calls after a "
        f"compiling / warm-up call, both frameworks in one process. **Full-model times are "
        f"extrapolated** by the block count (x {first['full_blocks']} / {first['blocks']}). "
        f"Parameters: {first['params_measured'] / 1e6:.0f}M measured, "
        f"{first['params_full'] / 1e9:.2f}B in the full model. Peak MB: rise of the process's "
        f"resident set during the first forward of the shape (a lower bound where memory freed "
        f"by an earlier row is reused); XLA temp: XLA's temporary buffers.",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "| image | latent | tokens | dtype | sce_jax ms | diffusers ms | sce_jax / "
              "diffusers | full model ms, extrapolated (sce_jax / diffusers) | compile s | "
              "peak MB (sce_jax / diffusers) | XLA temp MB | full model GFLOP (products) | "
              "max rel diff |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['image']}x{r['image']} | {r['latent']}x{r['latent']}x16 | {r['tokens']} + "
            f"{CONTEXT_TOKENS} | {r['dtype']} | {r['jax_ms']:.0f} | {r['torch_ms']:.0f} | "
            f"{r['ratio']:.2f}x | {r['full_jax_ms'] / 1e3:.1f} s / {r['full_torch_ms'] / 1e3:.1f} s"
            f" | {r['compile_s']:.1f} | {_fmt(r['jax_peak_mb'], '.0f')} / "
            f"{_fmt(r['torch_peak_mb'], '.0f')} | {r['xla_temp_mb']:.0f} | "
            f"{_fmt(r['full_gflop'], '.0f')} | {r['max_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512", help="image sides, comma-separated")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="a line added to the results page")
    parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    rows = cost_rows([int(s) for s in args.sizes.split(",")], args.dtypes.split(","),
                     blocks=args.blocks, repeats=args.repeats)
    page = markdown(rows, note=args.note)
    cpu = re.sub(r"[^a-z0-9]+", "-", page.split("- machine: ")[1].split(",")[0].lower()).strip("-")
    cores = len(os.sched_getaffinity(0))
    path = os.path.join(args.out_dir, f"{cpu}-{cores}c-{datetime.date.today()}-sd3-prior.md")
    with open(path, "w") as f:
        f.write(page)
    print(page)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
