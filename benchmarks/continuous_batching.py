"""Continuous batching against the batch engine on the shipped Fashion-MNIST demo.

    python -m benchmarks.continuous_batching                      # 200 test images, K = 2
    python -m benchmarks.continuous_batching --images=16 --label=check

Both engines explain the same Fashion-MNIST test images (the first ``--images``, zero-padded
to 32x32 as the demo's subset is) with the demo's models and search config
(``configs/fashion_mnist.py``: latent prior, its step budget, K = 2, leave-the-prediction
targets), in this process, one after the other:

- ``batch``: :meth:`sce_jax.Explainer.explain_arrays` on batches of ``--batch`` images (the last
  one padded with rows that do no work); each batch runs until its slowest search is done;
- ``slots``: :class:`sce_jax.search.slot_scheduler.SlotScheduler` with ``--slots`` searches in flight,
  refilled every ``--chunk_steps`` steps.

Each engine is compiled and warmed up first on ``--warmup`` images (not timed; the slot engine
also compiles its chunk at every size it shrinks to, ``SlotScheduler.precompile``). Reported:
found counterfactuals per second of wall time (what a user gets: attempts that reached the goal,
neither near the boundary nor a background spot; judged on the float image here), and
counterfactuals (attempts, images x K) per second, their ratios, and the share of useful
example-steps: the steps of searches still running over the example-steps computed (the batch
engine computes every row of a batch for every step of its slowest search, padding rows
included; an attempt that ends at step ``s`` has run ``min(s + 1, budget)`` steps). The slot
engine's phases (encode, refill, chunks, harvest) are timed to say where its time goes.
Results go to ``benchmarks/results/continuous-batching-<machine>-<date>[-label].{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import numpy as np

from benchmarks import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_images(count: int) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images, (N, 32, 32, 1) float32 in [0, 1]."""
    from sce_jax.demos import fashion_mnist

    split = fashion_mnist.load_split("test")
    if count > split.images.shape[0]:
        raise SystemExit(f"error: --images={count}: the test split has {split.images.shape[0]}")
    images = np.pad(split.images[:count], ((0, 0), (2, 2), (2, 2)))
    return (images.astype(np.float32) / 255.0)[..., None]


def demo_explainer():
    """The demo's models and search settings, as ``configs/fashion_mnist.py`` runs them."""
    from sce_jax import Explainer
    from sce_jax.launch.config_files import load_config_module
    from sce_jax.runs.loaders import load_classifier, load_generator, load_prior
    from sce_jax.search.config import settings_from_config

    config = load_config_module(os.path.join(ROOT, "configs", "fashion_mnist.py")).get_config()
    settings = settings_from_config(config.search)
    explainer = Explainer(load_generator(config.generator), load_classifier(config.classifier),
                          settings, prior=load_prior(config.prior))
    return explainer, config


def steps_run(steps: np.ndarray, budget: int) -> np.ndarray:
    """Steps an attempt ran: it stopped after step ``s`` (``s < budget``) or at the budget."""
    return np.minimum(np.asarray(steps) + 1, budget)


def found(result) -> np.ndarray:
    """(B, K) attempts that found a counterfactual: reached the goal, not near the boundary, not
    a spot in empty background (the record's outcome ``found``, judged on the float image)."""
    return (np.asarray(result.success) & ~np.asarray(result.no_second_reason)
            & ~np.asarray(result.near_boundary)[:, None])


def rates(success: np.ndarray, hits: np.ndarray, steps: np.ndarray, seconds: float) -> dict:
    """The figures both engines report: counts and rates of attempts and found ones."""
    return {"success": success, "seconds": seconds, "counterfactuals": int(steps.size),
            "found": int(hits.sum()), "found_per_second": float(hits.sum()) / seconds,
            "counterfactuals_per_second": steps.size / seconds, "steps": steps}


def run_batches(explainer, images: np.ndarray, ids: np.ndarray, batch: int) -> dict:
    """The batch engine over ``images`` in batches of exactly ``batch`` rows."""
    budget = explainer.settings.steps
    computed = useful = 0
    steps, success, hits = [], [], []
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        rows = np.arange(first, min(first + batch, len(images)))
        pad = np.concatenate([rows, np.repeat(rows[:1], batch - len(rows))])
        valid = np.arange(batch) < len(rows)
        arrays, _ = explainer.prepare_batch(images[pad], None, kind="other", example_ids=ids[pad],
                                            valid=valid)
        result = explainer.explain_arrays(arrays, kind="other")
        result_steps = np.asarray(result.steps)[valid]                 # (rows, K)
        run = steps_run(result_steps, budget)
        computed += batch * int(run.max(axis=0).sum())   # every row, slowest search, per attempt
        useful += int(run.sum())
        steps.append(result_steps)
        success.append(np.asarray(result.success)[valid])
        hits.append(found(result)[valid])
    seconds = time.perf_counter() - start
    return {**rates(np.concatenate(success), np.concatenate(hits), np.concatenate(steps), seconds),
            "example_steps_computed": computed, "example_steps_useful": useful,
            "useful_share": useful / computed}


def run_slots(explainer, images: np.ndarray, ids: np.ndarray, slots: int, chunk_steps: int,
              precompile: bool = False) -> dict:
    """The slot engine over ``images``, read ``slots`` at a time (``precompile``: first compile
    every state size the scheduler may shrink to, as a warm-up)."""
    scheduler = explainer.slot_scheduler("other", slots=slots, chunk_steps=chunk_steps or None)

    def blocks():
        for first in range(0, len(images), scheduler.slots):
            rows = np.arange(first, min(first + scheduler.slots, len(images)))
            pad = np.concatenate([rows, np.repeat(rows[:1], scheduler.slots - len(rows))])
            arrays, _ = explainer.prepare_batch(images[pad], None, kind="other",
                                                example_ids=ids[pad],
                                                valid=np.arange(len(pad)) < len(rows))
            yield arrays, rows.tolist()   # one encode shape: blocks padded to the slots

    if precompile:
        scheduler.precompile(next(blocks())[0])
    start = time.perf_counter()
    results = dict(scheduler.run(blocks()))
    seconds = time.perf_counter() - start
    rows = [results[i] for i in range(len(images))]
    work = scheduler.work
    return {**rates(np.concatenate([r.success for r in rows]), np.concatenate([found(r) for r in rows]),
                    np.concatenate([r.steps for r in rows]), seconds),
            "example_steps_computed": work.computed, "example_steps_useful": work.useful,
            "useful_share": work.useful_share, "chunks": work.chunks, "refills": work.refills,
            "shrinks": work.shrinks, "chunk_steps": scheduler.search.chunk_steps,
            "min_slots": scheduler.min_slots,
            "phase_seconds": {k: round(v, 2) for k, v in work.seconds.items()}}


def _times(ratio: float | None) -> str:
    return "n/a (none found)" if ratio is None else f"{ratio:.2f}x"


def markdown(report: dict) -> str:
    b, s = report["batch"], report["slots"]
    a = report["args"]
    lines = [
        f"# Continuous batching on the Fashion-MNIST demo ({report['machine']})",
        "",
        f"`python -m benchmarks.continuous_batching --images={a['images']} --batch={a['batch']} "
        f"--slots={a['slots']} --chunk_steps={a['chunk_steps']}`, {report['date']}; "
        f"{report['cores']} cores, load average {report['load_before']} before the run "
        "(the machine is shared with other work).",
        "",
        f"{a['images']} Fashion-MNIST test images, K = {report['attempts']}, step budget "
        f"{report['budget']}, the demo's models and search config (latent prior on). Steps per "
        f"counterfactual: median {report['median_steps']}, mean {report['mean_steps']:.1f}, "
        f"{report['at_budget']} of {report['counterfactuals']} at the budget.",
        "",
        "| engine | found/s | counterfactuals/s | found | seconds | useful example-steps |",
        "|---|---:|---:|---:|---:|---:|",
        f"| batch engine, batch {a['batch']} | {b['found_per_second']:.3f} | "
        f"{b['counterfactuals_per_second']:.3f} | {b['found']} | "
        f"{b['seconds']:.1f} | {100 * b['useful_share']:.1f}% |",
        f"| slot engine, {a['slots']} slots, chunks of {s['chunk_steps']} steps | "
        f"{s['found_per_second']:.3f} | {s['counterfactuals_per_second']:.3f} | {s['found']} | "
        f"{s['seconds']:.1f} | {100 * s['useful_share']:.1f}% |",
        "",
        f"Ratio (slots / batch): **{_times(report['found_ratio'])}** found counterfactuals per "
        f"second, {report['ratio']:.2f}x counterfactuals per second. Attempts with the same steps and "
        f"success in both engines: {report['same_share']:.1%} (the demo amplifies float rounding "
        "differences: the batch engine itself differs between batch sizes, see docs/continuous_batching.md).",
        "",
        f"Slot engine: {s['chunks']} chunks, {s['refills']} refills, the state halved "
        f"{s['shrinks']} times at the end (down to {s['min_slots']} slots at least); wall time "
        "by phase (s): "
        + ", ".join(f"{k} {v}" for k, v in s["phase_seconds"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--chunk_steps", type=int, default=0,
                        help="steps between refills (0: the scheduler's default)")
    parser.add_argument("--warmup", type=int, default=2, help="images run first to compile")
    parser.add_argument("--label", default="", help="suffix of the result files")
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch < 1 or args.slots < 1 or args.chunk_steps < 0:
        parser.error("--images, --batch and --slots must be at least 1, --chunk_steps at least 0")

    load_before = round(os.getloadavg()[0], 2)
    explainer, _ = demo_explainer()
    images = demo_images(args.images + args.warmup)
    ids = np.arange(len(images), dtype=np.int32)
    warm, timed = slice(args.images, None), slice(0, args.images)
    print("compiling and warming up both engines ...", flush=True)
    run_batches(explainer, images[warm], ids[warm], args.batch)
    run_slots(explainer, images[warm], ids[warm], args.slots, args.chunk_steps, precompile=True)
    print(f"batch engine on {args.images} images ...", flush=True)
    batch = run_batches(explainer, images[timed], ids[timed], args.batch)
    print(f"  {batch['found_per_second']:.3f} found/s, {batch['counterfactuals_per_second']:.3f} "
          "counterfactuals/s", flush=True)
    print(f"slot engine on {args.images} images ...", flush=True)
    slots = run_slots(explainer, images[timed], ids[timed], args.slots, args.chunk_steps)
    print(f"  {slots['found_per_second']:.3f} found/s, {slots['counterfactuals_per_second']:.3f} "
          "counterfactuals/s", flush=True)

    steps = batch["steps"]
    budget = explainer.settings.steps
    report = {
        "machine": machine.cpu_model(), "cores": machine.cores(), "load_before": load_before,
        "date": datetime.date.today().isoformat(), "args": vars(args),
        "attempts": explainer.settings.attempts, "budget": budget,
        "counterfactuals": int(steps.size), "median_steps": float(np.median(steps)),
        "mean_steps": float(steps.mean()), "at_budget": int((steps >= budget).sum()),
        "same_share": float(np.mean((steps == slots["steps"]) & (batch["success"] == slots["success"]))),
        "ratio": slots["counterfactuals_per_second"] / batch["counterfactuals_per_second"],
        "found_ratio": (slots["found_per_second"] / batch["found_per_second"]
                        if batch["found_per_second"] > 0 else None),
        "batch": {k: v for k, v in batch.items() if k not in ("steps", "success")},
        "slots": {k: v for k, v in slots.items() if k not in ("steps", "success")},
    }
    text = markdown(report)
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    name = "continuous-batching-{}-{}{}".format(
        machine.cpu_model().lower().replace(" ", "-").replace("(", "").replace(")", "")[:24].strip("-"),
        report["date"], f"-{args.label}" if args.label else "")
    with open(os.path.join(args.out_dir, name + ".json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    with open(os.path.join(args.out_dir, name + ".md"), "w") as f:
        f.write(text)
    print(f"wrote {os.path.join(args.out_dir, name)}.{{json,md}}")


if __name__ == "__main__":
    main()
