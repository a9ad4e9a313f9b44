"""Explains a dataset with visual counterfactuals (the main job).

    python scripts/explain.py                      # the shipped Fashion-MNIST demo
    python scripts/explain.py --config=configs/squares.py --workdir=runs/squares
    python scripts/explain.py --config=configs/fashion_mnist.py --config.search.steps=50

Writes counterfactual PNGs, difference maps, manifest.jsonl, summary.json and report.html into
--workdir. Rerunning on the same workdir resumes where the last run stopped.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax import run  # noqa: E402

config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "configs", "fashion_mnist.py"), "Run config file.",
    lock_config=True)
flags.DEFINE_string("workdir", os.path.join("runs", "fashion_mnist"), "Output directory.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = flags.FLAGS.config
    workdir = flags.FLAGS.workdir
    try:
        summary = run.explain_dataset(config, workdir)
    except (run.RunConfigError, ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = os.path.join(os.path.abspath(workdir), "report.html")
    print(f"flip rate {summary['flip_rate']}, {summary['num_counterfactuals']} counterfactuals "
          f"for {summary['num_images']} images ({summary['num_skipped']} skipped)")
    if os.path.exists(report):
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    app.run(main)
