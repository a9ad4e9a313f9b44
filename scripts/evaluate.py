"""Evaluates finished runs: the desiderata per run, a comparison table, plots in each report.

    python scripts/evaluate.py --workdirs=runs/fashion_mnist
    python scripts/evaluate.py --workdirs=runs/ablation/full,runs/ablation/no_mask \\
        --out_dir=runs/ablation --table_name=ablation
    python scripts/evaluate.py --workdirs=runs/squares --surrogate=path/to/surrogate_ckpt

Reads each workdir written by scripts/explain.py (manifest.jsonl, run_config.json and the
PNGs), recomputes validity on the written 8-bit images with the run's classifier, and writes
``<workdir>/evaluation/metrics.json``, per-counterfactual values and PNG plots, which the
rewritten ``<workdir>/report.html`` links; then ``<out_dir>/<table_name>.md`` and ``.csv``,
one row per workdir. What each number means: sce_jax/evaluation/protocol.py.

Installed as a package (no checkout): ``sce-jax-evaluate`` takes the same flags.

Exit codes: 0 done (and for --help); 2 a workdir that cannot be evaluated (``error: ...`` names each one) or a
bad flag; 1 an unexpected error (a bug).
"""

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(ROOT, "sce_jax")):
    sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax import evaluation  # noqa: E402
from sce_jax.launch import command_line, log_filter
from sce_jax.workdir import layout as workdir_files  # noqa: E402

EXIT_USER_ERROR = 2

flags.DEFINE_list("workdirs", None, "Comma-separated run workdirs (scripts/explain.py --workdir).")
flags.DEFINE_string("out_dir", "", "Folder for the tables (default: <workdir>/evaluation with "
                    "one workdir; required with several).")
flags.DEFINE_string("table_name", "evaluation", "Tables are <out_dir>/<table_name>.md and .csv.")
flags.DEFINE_string("surrogate", "auto", "Surrogate classifier checkpoint for the "
                    "non-adversarial rate; 'auto': a shipped demo's own surrogate; '': none.")
flags.DEFINE_bool("encode_latents", True, "Encode originals and counterfactuals with the run's "
                  "generator for latent distances (slow for large autoencoders on CPU).")
flags.DEFINE_integer("batch_size", 64, "Images per network call.")
flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size (lowered to the smaller set).")
flags.DEFINE_integer("kid_subsets", 100, "Number of KID subsets.")
flags.DEFINE_bool("plots", True, "Write the PNG plots and link them from report.html.")
flags.DEFINE_integer("num_shown", 5, "Counterfactuals per row of best_worst.png.")


def main(argv):
    if len(argv) > 1:
        return command_line.error(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.workdirs:
        return command_line.error("--workdirs is required: the run folder(s) written by "
                                  "scripts/explain.py, e.g. --workdirs=runs/fashion_mnist")
    log_filter.keep_own_info(os.path.dirname(os.path.abspath(__file__)))
    FLAGS = flags.FLAGS
    out_dir = FLAGS.out_dir
    if not out_dir:
        if len(FLAGS.workdirs) != 1:
            print("error: several --workdirs need --out_dir for their table", file=sys.stderr)
            return EXIT_USER_ERROR
        out_dir = os.path.join(FLAGS.workdirs[0], evaluation.protocol.FOLDER)
    options = evaluation.EvaluationOptions(
        surrogate=FLAGS.surrogate, encode_latents=FLAGS.encode_latents,
        batch_size=FLAGS.batch_size, kid_subset_size=FLAGS.kid_subset_size,
        kid_subsets=FLAGS.kid_subsets, plots=FLAGS.plots, num_shown=FLAGS.num_shown)
    try:
        results = evaluation.evaluate_workdirs(FLAGS.workdirs, out_dir,
                                               table_name=FLAGS.table_name, options=options)
    except evaluation.EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    for result in results:
        logging.info("%s: %s", result["run"], os.path.join(result["workdir"], workdir_files.REPORT))
    print(f"table: {os.path.join(os.path.abspath(out_dir), FLAGS.table_name)}.md")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=command_line.parse_flags)
