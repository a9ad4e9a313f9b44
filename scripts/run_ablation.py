"""Runs the ablations of configs/ablation.py, evaluates them and writes one comparison table.

    python scripts/run_ablation.py                         # every variant, runs/ablation/
    python scripts/run_ablation.py --tiny --root=/tmp/ablation     # quick check (minutes)
    python scripts/run_ablation.py --variants=full,no_mask
    python scripts/run_ablation.py --demo=squares          # the squares demo, runs/ablation_squares/

For each variant: ``sce_jax.runs.loop.explain_dataset`` into ``<root>/<variant>`` (resumable: a
rerun finishes what is missing and redoes nothing), then ``sce_jax.evaluation`` over all of
them, which writes each run's ``evaluation/`` folder and ``<root>/ablation.md`` and
``<root>/ablation.csv`` (one row per variant). ``ablation.md`` starts with what each variant
changed.

Exit codes: 0 done; 2 a problem with a config, the inputs or a workdir (``error: ...``);
1 an unexpected error (a bug).
"""

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax import evaluation  # noqa: E402
from sce_jax.data import image_io
from sce_jax.launch import log_filter
from sce_jax.launch.config_files import load_config_module  # noqa: E402
from sce_jax.runs import loop as run

EXIT_USER_ERROR = 2
TABLE = "ablation"


ABLATION = load_config_module(os.path.join(ROOT, "configs", "ablation.py"))

flags.DEFINE_list("variants", list(ABLATION.VARIANTS), "Variants of configs/ablation.py to run.")
flags.DEFINE_bool("tiny", False, "Use each variant's ',tiny' shrink (a check, not a measurement).")
flags.DEFINE_enum("demo", "fashion_mnist", list(ABLATION.DEMOS), "The demo the variants change.")
flags.DEFINE_string("root", "", "Folder for the runs and the table (default: runs/ablation, "
                    "or runs/ablation_squares with --demo=squares).")
flags.DEFINE_string("surrogate", "auto", "Surrogate for the non-adversarial rate ('auto': the "
                    "demo's own; '': none).")


DEMO_TITLES = {"fashion_mnist": "Fashion-MNIST", "squares": "squares"}


def variant_arg(variant: str, demo: str, tiny: bool) -> str:
    """The configs/ablation.py argument of a variant on a demo."""
    options = ([] if demo == "fashion_mnist" else [demo]) + (["tiny"] if tiny else [])
    return ",".join([variant] + options)


def legend(variants, demo: str = "fashion_mnist") -> str:
    """The Markdown lines saying what each variant changed from ``full``."""
    lines = [f"# Ablation on the {DEMO_TITLES[demo]} demo", "", "Each variant changes one key of "
             f"configs/{ABLATION.DEMOS[demo]} (configs/ablation.py):", ""]
    for variant in variants:
        key = ABLATION.CHANGED_KEYS[variant]
        if key is None:
            lines.append(f"- `{variant}`: the demo config as shipped")
            continue
        value = ABLATION.get_config(variant_arg(variant, demo, False))
        for part in key.split("."):
            value = value[part]
        lines.append(f"- `{variant}`: `{key} = {value!r}`")
    return "\n".join(lines + ["", ""])


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        return EXIT_USER_ERROR
    log_filter.keep_own_info(os.path.dirname(os.path.abspath(__file__)))
    FLAGS = flags.FLAGS
    root = FLAGS.root or os.path.join(
        "runs", "ablation" if FLAGS.demo == "fashion_mnist" else f"ablation_{FLAGS.demo}")
    try:
        configs = {v: ABLATION.get_config(variant_arg(v, FLAGS.demo, FLAGS.tiny))
                   for v in FLAGS.variants}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    workdirs = []
    for variant, config in configs.items():
        workdir = os.path.join(root, variant)
        logging.info("ablation %s: explaining into %s", variant, workdir)
        try:
            summary = run.explain_dataset(config, workdir)
        except run.USER_ERRORS as e:
            print(f"error: ablation {variant}: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
        if not summary["complete"]:
            print(f"error: ablation {variant} stopped before the end; rerun to resume",
                  file=sys.stderr)
            return EXIT_USER_ERROR
        workdirs.append(workdir)
    try:
        evaluation.evaluate_workdirs(workdirs, root, table_name=TABLE,
                                     options=evaluation.EvaluationOptions(surrogate=FLAGS.surrogate))
    except evaluation.EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    path = os.path.join(root, f"{TABLE}.md")
    with open(path, encoding="utf-8") as f:
        table = f.read()
    with image_io.atomic_write(path, "w", encoding="utf-8") as f:
        f.write(legend(list(configs), FLAGS.demo) + table)
    print(f"table: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    from sce_jax.launch.command_line import parse_flags
    app.run(main, flags_parser=parse_flags)  # bad flag: error line, exit 2; --help: exit 0
