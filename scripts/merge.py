"""Joins the workdirs of a sharded run into one, as a one-process run would have written it.

    python scripts/explain.py --shard=0/3 --workdir=/shared/shard0     # ... 1/3, 2/3: any hosts
    python scripts/merge.py --workdirs=/shared/shard0,/shared/shard1,/shared/shard2 \\
        --workdir=/shared/run
    python scripts/merge.py --workdirs='/shared/shard*' --workdir=/shared/run   # a glob

Checks that the workdirs are the shards of one run (the same config, the same input set, each
index once, none missing or unfinished: each problem is named), then writes --workdir: the
manifest, the images (hard links to the shards' files, or copies with --images=copy),
summary.json with the throughput of every shard, results.csv and report.html;
scripts/evaluate.py reads it as any run. Merging again (after a shard was rerun) rewrites it.
How shards are cut: sce_jax/runs/shards.py; what the merge checks: sce_jax/workdir/merge.py.

Installed as a package (no checkout): ``sce-jax-merge`` takes the same flags.

Exit codes: 0 merged (every shard finished, or --allow_incomplete); 2 shards that cannot be
merged or a bad flag (``error: ...`` names the problem); 1 an unexpected error (a bug).
"""

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(ROOT, "sce_jax")):
    sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax.launch import command_line  # noqa: E402
from sce_jax.workdir import layout  # noqa: E402
from sce_jax.workdir import merge  # noqa: E402

flags.DEFINE_string("workdirs", None, "The shards' workdirs: comma-separated folders or globs.")
flags.DEFINE_string("workdir", None, "The merged workdir (new, empty, or an earlier merge).")
flags.DEFINE_bool("allow_incomplete", False, "Merge the shards that are there even if some are "
                  "missing or unfinished (the merged run is then incomplete).")
flags.DEFINE_enum("images", "link", merge.IMAGE_MODES, "Hard-link the shards' PNGs (copies "
                  "where a link cannot be made) or copy them.")


def main(argv):
    if len(argv) > 1:
        return command_line.error(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    if not FLAGS.workdirs or not FLAGS.workdir:
        return command_line.error("give the shards as --workdirs=A,B,... and the output as --workdir=OUT")
    try:
        workdirs = merge.expand_workdirs(FLAGS.workdirs)
        summary = merge.merge_shards(workdirs, FLAGS.workdir, allow_incomplete=FLAGS.allow_incomplete,
                                     images=FLAGS.images)
    except (merge.MergeError, layout.WorkdirReadError, layout.WorkdirWriteError) as e:
        return command_line.error(e)
    out = os.path.abspath(FLAGS.workdir)
    print(f"merged {summary['merged_shards']} shards: {summary['num_counterfactuals']} "
          f"counterfactuals for {summary['num_images']} images ({summary['num_skipped']} skipped)"
          f"{'' if summary['complete'] else ', incomplete'} into {out}")
    report = os.path.join(out, layout.REPORT)
    if os.path.exists(report):
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=command_line.parse_flags)
