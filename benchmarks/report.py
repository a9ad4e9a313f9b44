"""The throughput benchmark's results: derived figures per setting and the Markdown page."""

from __future__ import annotations

import os

from benchmarks.peak import bounding_peak, peak_lines, share_of_peak

MB = 2.0 ** -20
IMPLEMENTATIONS = ("sce_jax", "torch", "sce_jax_bf16", "torch_bf16", "sce_jax_prior")
# The implementations whose step computes in each dtype (the autoencoder's; the classifier
# stays float32).
DTYPE_IMPLEMENTATIONS = {"float32": ("sce_jax", "torch"),
                         "bfloat16": ("sce_jax_bf16", "torch_bf16")}


def finish_record(record: dict) -> dict:
    """Adds achieved FLOP/s and the sce_jax / PyTorch throughput ratios."""
    flops = record.get("flops_per_step")
    for impl in IMPLEMENTATIONS:
        if impl in record and flops and record[impl].get("step_s", 0) > 0:
            record[impl]["achieved_flops_per_s"] = flops / record[impl]["step_s"]
    if "sce_jax" in record and "torch" in record:
        jax_rate, torch_rate = record["sce_jax"]["cf_per_s"], record["torch"]["cf_per_s"]
        record["speedup"] = jax_rate / torch_rate if jax_rate and torch_rate else None
    for jax_impl, torch_impl, key in (("sce_jax_bf16", "torch", "speedup_bf16_vs_torch"),
                                      ("sce_jax_bf16", "torch_bf16", "speedup_bf16_vs_torch_bf16")):
        if jax_impl in record and torch_impl in record:
            a, b = record[jax_impl]["cf_per_s"], record[torch_impl]["cf_per_s"]
            record[key] = a / b if a and b else None
    if "step_s" in record.get("sce_jax_prior", {}) and "sce_jax" in record:
        record["prior_step_ratio"] = record["sce_jax_prior"]["step_s"] / record["sce_jax"]["step_s"]
    return record


def achieved(results: list[dict], dtype: str) -> list[float]:
    """Every achieved FLOP/s of a step computing in ``dtype`` in these results."""
    return [r[impl]["achieved_flops_per_s"] for r in results
            for impl in DTYPE_IMPLEMENTATIONS[dtype]
            if r.get(impl, {}).get("achieved_flops_per_s")]


def report_peaks(report: dict) -> dict[str, float | None]:
    """Per dtype, the peak a share is taken of: the kernels' peak, raised to the best achieved
    rate of that dtype if a step beat every kernel (:func:`benchmarks.peak.bounding_peak`)."""
    peaks = report.get("peak", {})
    return {dtype: bounding_peak((peaks.get(dtype) or {}).get("flops_per_s"),
                                 achieved(report["results"], dtype))
            for dtype in DTYPE_IMPLEMENTATIONS}


def fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def _peak_note(report: dict, bounds: dict[str, float | None]) -> str:
    kernels = peak_lines(report.get("peak", {}))
    text = ("- measured peak (the best of several matmul sizes and layouts, a batched matmul and "
            "a 3x3 convolution, in XLA and in PyTorch, each the fastest of its repeats; "
            "'% of peak' below is of that dtype's peak): " + (", ".join(kernels) or "n/a"))
    for dtype, bound in bounds.items():
        kernel = (report.get("peak", {}).get(dtype) or {}).get("flops_per_s")
        if bound and (not kernel or bound > kernel):
            text += (f"; a {dtype} step ran faster than every kernel, so its "
                     f"{bound / 1e9:.1f} GFLOP/s is the {dtype} peak")
    return text


def markdown(report: dict) -> str:
    """The results as a Markdown page: what was measured where, and one row per setting."""
    m = report["machine"]
    bounds = report_peaks(report)
    peak_f32, peak_bf16 = bounds["float32"], bounds["bfloat16"]
    torch_device = f"; PyTorch on {m['torch_device']}" if "torch_device" in m else ""
    lines = [
        f"# sce_jax vs PyTorch: counterfactual search throughput ({report['date']})", "",
        f"- machine: {m['cpu']}, {m['cores']} cores; JAX backend {m['jax_backend']} "
        f"({m['jax_device']}){torch_device}",
        f"- versions: python {m['python']}, jax {m['jax']}, flax {m['flax']}, torch {m['torch']} "
        f"({m['torch_threads']} threads, {m['torch_memory_format']} memory format), "
        f"diffusers {m['diffusers']}",
        _peak_note(report, bounds),
        f"- load average (1, 5, 15 min) before / after: {report['load_before']} / "
        f"{report['load_after']}; other processes shared the machine, so every time is a median",
        f"- method: one attempt timed, {report['steps']} steps per call, {report['repeats']} calls "
        "after a first (compiling / warm-up) call; step = median step timed inside the loop; "
        "fixed = call - steps x step. **cf/s is extrapolated** to the step budget: "
        "B / (fixed + budget x step), every example running the whole budget (success disabled; "
        "real searches stop earlier). A counterfactual is one attempt's result (K attempts cost "
        "K times as much).",
        "",
    ]
    bf16 = any("sce_jax_bf16" in r for r in report["results"])
    head = ["setting", "B", "smoothing", "budget", "sce_jax cf/s", "PyTorch cf/s",
            "sce_jax / PyTorch", "step ms (sce_jax / PyTorch)", "fixed s (sce_jax / PyTorch)",
            "sce_jax compile s", "peak MB (sce_jax / PyTorch)", "XLA temp MB", "GFLOP/step",
            "GFLOP/s (sce_jax / PyTorch)", "% of f32 peak (sce_jax / PyTorch)"]
    if bf16:
        head += ["bf16-VAE cf/s (sce_jax / PyTorch)", "bf16-VAE step ms (sce_jax / PyTorch)",
                 "sce_jax bf16 / PyTorch f32", "sce_jax bf16 / PyTorch bf16",
                 "% of bf16 peak (sce_jax bf16)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        s = r["setting"]
        smoothing = f"{s['space']} N={s['num_samples']}" + (f" (chunk {s['chunk_size']})"
                                                              if s["chunk_size"] else "")
        if "skipped" in r or "error" in r or "sce_jax" not in r or "torch" not in r:
            note = r.get("skipped") or r.get("error") or "incomplete"
            cells = [s["name"], str(s["batch"]), smoothing, str(s["steps_budget"]),
                     ("skipped: " if "skipped" in r else "failed: ") + note.replace("|", "/")]
            lines.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
            continue
        j, t = r["sce_jax"], r["torch"]
        rates = [x.get("achieved_flops_per_s") for x in (j, t)]
        shares = [share_of_peak(a, peak_f32) for a in rates]
        row = [s["name"], str(s["batch"]), smoothing, str(s["steps_budget"]),
               fmt(j["cf_per_s"], ".3g"), fmt(t["cf_per_s"], ".3g"),
               fmt(r.get("speedup"), ".2f") + "x",
               f"{fmt(j['step_s'], '.0f', 1e3)} / {fmt(t['step_s'], '.0f', 1e3)}",
               f"{fmt(j['fixed_s'], '.2f')} / {fmt(t['fixed_s'], '.2f')}",
               fmt(j["compile_s"], ".1f"),
               f"{fmt(j['peak_bytes'], '.0f', MB)} / {fmt(t['peak_bytes'], '.0f', MB)}",
               fmt(j.get("xla_temp_bytes"), ".0f", MB),
               fmt(r.get("flops_per_step"), ".2f", 1e-9),
               f"{fmt(rates[0], '.1f', 1e-9)} / {fmt(rates[1], '.1f', 1e-9)}",
               f"{fmt(shares[0], '.0f', 100.0)}% / {fmt(shares[1], '.0f', 100.0)}%"]
        if bf16:
            b, tb = r.get("sce_jax_bf16") or {}, r.get("torch_bf16") or {}
            row += [f"{fmt(b.get('cf_per_s'), '.3g')} / {fmt(tb.get('cf_per_s'), '.3g')}",
                    f"{fmt(b.get('step_s'), '.0f', 1e3)} / {fmt(tb.get('step_s'), '.0f', 1e3)}",
                    fmt(r.get("speedup_bf16_vs_torch"), ".2f") + "x",
                    fmt(r.get("speedup_bf16_vs_torch_bf16"), ".2f") + "x",
                    fmt(share_of_peak(b.get("achieved_flops_per_s"), peak_bf16), ".0f", 100.0)
                    + "%"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += prior_markdown(report["results"])
    lines += breakdown_markdown(report["results"])
    return "\n".join(lines)


def prior_markdown(results: list[dict]) -> list[str]:
    """The step cost of the generative prior (``--prior``): sce_jax with it on vs off."""
    rows = [r for r in results if "step_s" in r.get("sce_jax_prior", {})]
    if not rows:
        return []
    lines = ["## The generative prior's step cost (sce_jax, same run)", "",
             "| setting | step ms, prior off | step ms, prior on | on / off | cf/s on / off |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        off, on = r["sce_jax"], r["sce_jax_prior"]
        lines.append(f"| {r['setting']['name']} | {fmt(off['step_s'], '.1f', 1e3)} | "
                     f"{fmt(on['step_s'], '.1f', 1e3)} | {fmt(r.get('prior_step_ratio'), '.2f')}x"
                     f" | {fmt(on['cf_per_s'], '.3g')} / {fmt(off['cf_per_s'], '.3g')} |")
    return lines + [""]


def breakdown_markdown(results: list[dict]) -> list[str]:
    """A table of where a step's time goes, for the settings measured with --breakdown."""
    rows = []
    for r in results:
        parts = r.get("breakdown") or {}
        j, t = parts.get("sce_jax", {}), parts.get("torch", {})
        if not j and not t:
            continue
        name = r["setting"]["name"]
        dec, cls = (j or t)["decoder_images"], (j or t)["classifier_images"]

        def row(part: str, key: str) -> str:
            return f"| {name} | {part} | {fmt(j.get(key), '.0f')} | {fmt(t.get(key), '.0f')} |"

        in_loop = [fmt(r.get(impl, {}).get("step_s"), ".0f", 1e3) for impl in ("sce_jax", "torch")]
        rows += [row(f"decoder forward ({dec} images)", "decoder_forward_ms"),
                 row(f"decoder forward + VJP ({dec} images)", "decoder_forward_vjp_ms"),
                 row(f"classifier forward + backward ({cls} images)",
                     "classifier_forward_backward_ms"),
                 row("one step, jitted alone", "step_alone_ms"),
                 f"| {name} | one step inside the search loop | {in_loop[0]} | {in_loop[1]} |"]
        if "search_convolutions" in j:
            rows.append(
                f"| {name} | convolutions XLA:CPU emitted as plain loops: whole search / step "
                f"alone | {j['search_loop_nest_convolutions']} of {j['search_convolutions']} / "
                f"{j['step_alone_loop_nest_convolutions']} of {j['step_alone_convolutions']} | |")
    if not rows:
        return []
    return ["## Where a step's time goes (ms, medians)", "",
            "| setting | part | sce_jax | PyTorch |", "|---|---|---|---|"] + rows + [""]


def output_paths(out_dir: str, slug: str, date: str) -> tuple[str, str]:
    """``<out_dir>/<slug>-<date>[-n].json`` and ``.md``, never overwriting earlier results."""
    base = os.path.join(out_dir, f"{slug}-{date}")
    candidate, n = base, 1
    while os.path.exists(candidate + ".json"):
        n += 1
        candidate = f"{base}-{n}"
    return candidate + ".json", candidate + ".md"
