"""Throughput of sce_jax against a PyTorch implementation of the same counterfactual search.

    python scripts/benchmark.py --quick                          # < 10 minutes on a 2-core CPU
    python scripts/benchmark.py --settings=demo,sd64_b8_pixel_n8 --steps=5 --bf16
    python scripts/benchmark.py --list                           # the settings table

Each setting (benchmarks/settings.py) runs the same search, on the same models and weights,
with the same steps, noise samples and batch, in sce_jax (``Explainer``: one compiled program)
and in PyTorch (benchmarks/torch_search.py: diffusers' AutoencoderKL, a torch classifier, a
Python step loop). Results go to benchmarks/results/<machine>-<date>.json and .md.

How it is measured (the same way on both sides; the modules say how in detail):

- ``benchmarks/search_timing.py``: success made impossible, one attempt timed, a first
  (compiling / warm-up) call then ``--repeats`` calls of ``--steps`` steps, each step timed
  inside the loop; counterfactuals per second EXTRAPOLATED to the setting's step budget (100):
  ``B / (fixed + budget x step)`` -- the full-budget (worst) case;
- ``benchmarks/memory.py``: peak memory of the steady calls above what the models use (host
  RSS on CPU, the allocators' peaks on GPU), and XLA's count of the search's temporaries;
- ``benchmarks/step_cost.py``: FLOPs per step from XLA's cost analysis (same algorithm, same
  FLOPs in PyTorch), and with ``--breakdown`` where a step's time goes;
- ``benchmarks/peak.py``: the peak a step's achieved FLOP/s is a share of, the best of
  several matmuls and a convolution in XLA and in PyTorch, per dtype (never below a step);
- with ``--bf16``, both implementations run again with the autoencoder in bfloat16 (sce_jax:
  ``generator.dtype``, on CPU through ``sce_jax.models.bf16_conv``; PyTorch: the VAE cast to
  bfloat16, latents in and images out in float32), the classifier staying float32.

Each implementation of each setting runs in its own process (``--isolate``), so that memory
peaks and caches do not carry over from one to the other. Other processes on the machine
slow both sides at random: every figure is a median, and the load average is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch too

import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from absl import app, flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from benchmarks import machine, peak, report  # noqa: E402
from benchmarks import settings as bench_settings  # noqa: E402
from benchmarks.measure import measure_setting  # noqa: E402
from benchmarks.model_pairs import demo_missing  # noqa: E402
from benchmarks.torch_setup import TorchOptions  # noqa: E402
from sce_jax.launch import command_line  # noqa: E402

flags.DEFINE_list("settings", [], "Settings to run (see --list); default: the --quick preset.")
flags.DEFINE_bool("quick", False, "Run the quick preset (demo or demo_random, sd64_b1_pixel_n8, "
                  "sd64_b1_latent_n1).")
flags.DEFINE_integer("steps", 3, "Steps per timed search call (>= 2); throughput is "
                     "extrapolated from the step time to the setting's budget.")
flags.DEFINE_integer("repeats", 2, "Timed calls after the first; medians are reported.")
flags.DEFINE_integer("peak_repeats", 3, "Calls of each peak kernel after its first; the "
                     "fastest is its rate.")
flags.DEFINE_bool("prior", False, "Also time sce_jax with the demo's generative prior in the "
                  "loop (search.prior on; the demo setting only): the prior's step cost.")
flags.DEFINE_bool("bf16", False, "Also time both implementations with the autoencoder "
                  "computing in bfloat16 (the classifier stays float32).")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: every core this process may use).")
flags.DEFINE_bool("torch_channels_last", False, "Run PyTorch in the channels_last memory format "
                  "instead of its default contiguous NCHW (on a 2-core CPU: faster for the SD "
                  "models, much slower for the demo's).")
flags.DEFINE_bool("isolate", True, "Run each implementation of each setting in its own process.")
flags.DEFINE_string("out_dir", os.path.join(ROOT, "benchmarks", "results"), "Where results go.")
flags.DEFINE_bool("breakdown", False, "Also time a step's parts (decoder forward / VJP, "
                  "classifier forward+backward, sce_jax's step jitted alone) and count the "
                  "convolutions XLA:CPU compiled as plain loops.")
flags.DEFINE_bool("list", False, "Print the settings table and exit.")
flags.DEFINE_string("worker_out", "", "Internal: measure --worker_impl of the one setting in "
                    "this process and write the record as JSON to this path.")
flags.DEFINE_string("worker_impl", "", "Internal: one of " + ", ".join(report.IMPLEMENTATIONS))
FLAGS = flags.FLAGS


def torch_options() -> TorchOptions:
    return TorchOptions(threads=FLAGS.threads, channels_last=FLAGS.torch_channels_last)


def _run_worker(name: str, impl: str) -> dict:
    """One implementation of one setting in a fresh process of this script."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), f"--settings={name}",
                   f"--steps={FLAGS.steps}", f"--repeats={FLAGS.repeats}",
                   f"--threads={FLAGS.threads}",
                   f"--torch_channels_last={FLAGS.torch_channels_last}",
                   f"--breakdown={FLAGS.breakdown}", f"--worker_impl={impl}", f"--worker_out={out}"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = " ".join((proc.stderr or "").strip().splitlines()[-3:])
            reason = ("killed (out of memory?)" if proc.returncode in (-9, 137)
                      else f"exit code {proc.returncode}")
            return {"error": f"{impl}: {reason}: {tail}"}
        with open(out) as f:
            return json.load(f)


def run_setting(setting) -> dict:
    """All implementations of one setting, each in its own process unless --isolate=false."""
    impls = (("sce_jax", "torch") + (("sce_jax_bf16", "torch_bf16") if FLAGS.bf16 else ())
             + (("sce_jax_prior",) if FLAGS.prior else ()))
    if not FLAGS.isolate:
        return report.finish_record(measure_setting(setting, impls, FLAGS.steps, FLAGS.repeats,
                                                    torch_options(), FLAGS.breakdown))
    record: dict[str, Any] = {"setting": dataclasses.asdict(setting)}
    for impl in impls:
        part = _run_worker(setting.name, impl)
        if "error" in part or "skipped" in part:
            record.update({k: part[k] for k in ("error", "skipped") if k in part})
            break
        record.setdefault("breakdown", {}).update(part.pop("breakdown", {}))
        record.update(part)
    if not record.get("breakdown"):
        record.pop("breakdown", None)
    return report.finish_record(record)


def _status(record: dict) -> str:
    fmt = report.fmt
    return record.get("skipped") or record.get("error") or (
        f"sce_jax {fmt(record['sce_jax']['cf_per_s'], '.3g')} cf/s, PyTorch "
        f"{fmt(record['torch']['cf_per_s'], '.3g')} cf/s, "
        f"ratio {fmt(record['speedup'], '.2f')}")


def main(argv):
    if len(argv) > 1:
        return command_line.error(f"unexpected arguments: {argv[1:]}")
    if FLAGS.list:
        for s in bench_settings.all_settings().values():
            print(f"{s.name:24s} {s.models:12s} {s.image_size:4d}px  B={s.batch:<3d} {s.space:6s} "
                  f"N={s.num_samples:<3d} chunk={s.chunk_size:<3d} budget={s.steps_budget}")
        return 0
    if FLAGS.steps < 2 or FLAGS.repeats < 1 or FLAGS.peak_repeats < 1:
        return command_line.error("--steps must be >= 2 (steps are timed between consecutive "
                                  "ones), --repeats and --peak_repeats >= 1")
    names = list(FLAGS.settings)
    if FLAGS.quick or not names:
        names = names + [n for n in bench_settings.quick_settings(demo_missing() is None)
                         if n not in names]
    try:
        settings = bench_settings.select(names)
    except ValueError as e:
        return command_line.error(str(e))

    if FLAGS.worker_out:
        record = measure_setting(settings[0], (FLAGS.worker_impl,), FLAGS.steps, FLAGS.repeats,
                                 torch_options(), FLAGS.breakdown)
        with open(FLAGS.worker_out, "w") as f:
            json.dump(record, f)
        return 0

    options = torch_options()
    info = machine.framework_info(options.num_threads, options.format_name)
    print("[benchmark] measuring the peak FLOP/s ...", flush=True)
    peaks = peak.machine_peaks(bf16=FLAGS.bf16, torch_threads=options.num_threads,
                               repeats=FLAGS.peak_repeats)
    results = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": info,
               "peak": peaks, "steps": FLAGS.steps, "repeats": FLAGS.repeats,
               "load_before": machine.load_average(), "results": []}
    for s in settings:
        print(f"[benchmark] {s.name} ...", flush=True)
        start = time.perf_counter()
        record = run_setting(s)
        results["results"].append(record)
        print(f"[benchmark] {s.name}: {_status(record)} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    results["load_after"] = machine.load_average()

    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path, md_path = report.output_paths(FLAGS.out_dir, machine.machine_slug(info),
                                             datetime.date.today().isoformat())
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
    text = report.markdown(results)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    print(f"written: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=command_line.parse_flags)  # bad flag: error line, exit 2
