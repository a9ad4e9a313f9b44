"""Explains a dataset with visual counterfactuals (the main job).

    python scripts/explain.py                      # the shipped Fashion-MNIST demo
    python scripts/explain.py --config=configs/squares.py --workdir=runs/squares
    python scripts/explain.py --config=configs/fashion_mnist.py --config.search.steps=50
    python scripts/explain.py --config=squares:tiny --workdir=/tmp/sq   # a shipped config by name
    python scripts/explain.py --print_config          # every --config.* key, its value and meaning
    python scripts/explain.py --config.targets.kind=class --config.targets.class_name=Dress

Installed as a package (no checkout): ``sce-jax-explain`` takes the same flags.

Writes counterfactual PNGs, difference maps, manifest.jsonl, summary.json and report.html into
--workdir. Rerunning on the same workdir resumes where the last run stopped: after SIGTERM,
after SIGKILL or a power cut at any point, nothing is lost or duplicated.

Several processes (hosts, or one process per GPU) share one run and one --workdir on a shared
file system; each explains the examples with ``id % num_processes == process_id``:

    # explicit (any machines): the same command on each, with its own --process_id
    python scripts/explain.py --coordinator_address=10.0.0.1:1234 --num_processes=2 \\
        --process_id=0 --workdir=/shared/run
    # SLURM: srun sets the process id, count and coordinator host (sce_jax.launch.distributed)
    srun --ntasks=4 python scripts/explain.py --workdir=/shared/run
    # TPU pod slice / Open MPI: jax.distributed detects the cluster itself
    gcloud compute tpus tpu-vm ssh NAME --worker=all --command="python scripts/explain.py ..."

``--cpu_devices_per_process=N`` splits each process's CPU into N devices (testing and CPU
clusters). With no distributed flag and no cluster environment the run is one process.

Independent tasks (a job array, a Kubernetes Indexed Job, Cloud Run/Batch tasks): each task
explains one shard into its own workdir, with no coordination, and ``scripts/merge.py`` joins
them into one workdir, as a one-process run would have written it (sce_jax.runs.shards):

    python scripts/explain.py --shard=0/3 --workdir=/shared/shard0    # ... 1/3, 2/3
    sbatch --array=0-2 --wrap="python scripts/explain.py --shard=auto \
        --workdir=/shared/shard\$SLURM_ARRAY_TASK_ID"
    python scripts/merge.py --workdirs='/shared/shard*' --workdir=/shared/run

Exit codes:
    0   the run is complete (every example has its counterfactuals or a recorded skip reason)
    2   a problem with the inputs, the config or the workdir: one line ``error: ...`` on stderr,
        no traceback, stopped before any work (an unknown or invalid flag or config key, a data
        source or weights that cannot be used, a target the classifier does not have, a
        read-only workdir, a workdir another run is using: its run.lock names it); or a write
        that failed mid-run (a full disk): the batches already completed are kept and rerunning
        the same command resumes
    75  stopped by SIGTERM (preemption) or SIGINT (Ctrl-C) before the end, at any moment from
        the start: the batch in flight was finished and the manifest written; rerun the same
        command to resume (EX_TEMPFAIL: "try again"). A stop during the last batch leaves
        nothing to resume: the run completes with 0
    69  a multi-process run lost a process: one did not start or join within --peer_timeout
        seconds, died, or stopped answering; the message names it. Batches completed are kept;
        rerun every process (a scheduler may retry) to resume
    1   an unexpected error (a bug): traceback on stderr
"""

import os
import signal
import sys
import threading

# First thing, before the imports and start-up that take seconds: SIGTERM (preemption) and
# SIGINT (Ctrl-C) only ask the run to stop after the batch in flight (exit code 75).
STOP = threading.Event()


def _request_stop(signum, frame):
    os.write(2, f"{signal.Signals(signum).name}: stopping after the batch in flight\n".encode())
    STOP.set()


for _signal in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signal, _request_stop)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(ROOT, "sce_jax")):
    sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax.launch import command_line, compilation_cache, distributed
from sce_jax.runs import collectives  # noqa: E402  (imports jax; starts no backend)
from sce_jax.runs import loop as run
from sce_jax.runs import shards
from sce_jax.workdir import layout as workdir_files  # noqa: E402

EXIT_COMPLETE = 0
EXIT_USER_ERROR = 2
EXIT_PEER_LOST = 69  # EX_UNAVAILABLE: another process is missing, dead or stuck; rerun all
EXIT_STOPPED = 75



_error = command_line.error
_plain_message = command_line.plain_message


def _leave_without_peers(code: int) -> int:
    """Exits at once when another process is lost: JAX's exit handler would wait for it."""
    if collectives.distributed_client() is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# --config by path or by shipped name (squares, squares:tiny); a missing file, a syntax error
# or a refused argument is one error line here, before ml_collections loads it.
sys.argv[:] = command_line.resolve_config_argv(sys.argv)
try:  # ml_collections applies --config.* overrides here, while defining the flag
    config_flags.DEFINE_config_file(
        "config", command_line.find_config_file("fashion_mnist"),
        "Run config file: a path, or the name of a shipped config (fashion_mnist, squares, "
        "ablation), optionally with :ARG (squares:tiny). Any key can be overridden with "
        "--config.KEY=VALUE; --print_config lists every key with its meaning.",
        lock_config=True)
except Exception as e:  # noqa: BLE001 - unknown key, wrong type, a config file that fails
    overrides = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config")]
    sys.exit(_error(f"the config or its overrides ({' '.join(overrides) or 'none'}) cannot be "
                    f"applied: {type(e).__name__}: {_plain_message(e)}"))
flags.DEFINE_string("workdir", os.path.join("runs", "fashion_mnist"), "Output directory.")
flags.DEFINE_bool("print_config", False,
                  "Print the resolved config (file + --config.* overrides), one --config.KEY=VALUE "
                  "line per key with its meaning, and exit without running.")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs: HOST:PORT of process 0, the same on every process.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes take part.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process, 0..num_processes-1.")
flags.DEFINE_integer("cpu_devices_per_process", None,
                     "Split each process's CPU into this many JAX devices (CPU runs only).")
flags.DEFINE_float("peer_timeout", run.DEFAULT_PEER_TIMEOUT_S,
                   "Multi-process runs: seconds to wait for the other processes at start-up and "
                   "at every exchange; a process missing that long ends the run (exit code 69).")
flags.DEFINE_string("shard", None,
                    "Explain one shard of the inputs as an independent task, into its own "
                    "--workdir: I/N (the examples with id % N == I), or auto (auto/N) for the "
                    "task index of a SLURM array, a Kubernetes Indexed Job or Cloud Run/Batch. "
                    "Join the shards' workdirs with scripts/merge.py.")
flags.DEFINE_string("compilation_cache", None,
                    "Folder for JAX's persistent compilation cache: a rerun, a resumed run and "
                    "every process of a multi-process run then load the compiled search instead "
                    "of compiling it again. Default: $JAX_COMPILATION_CACHE_DIR if set, else off.")


def parse_flags(argv):
    """absl's flag parsing: a bad flag or config key is ``error: ...``, exit 2; --help exits 0."""
    return command_line.parse_flags(argv)


def main(argv):
    if len(argv) > 1:
        return _error(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # library INFO chatter off; progress still shows
        logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    if FLAGS.print_config:
        from sce_jax.runs import config_doc
        print(config_doc.describe(FLAGS.config))
        return EXIT_COMPLETE
    if FLAGS.compilation_cache:
        try:
            compilation_cache.enable(FLAGS.compilation_cache)
        except compilation_cache.CompilationCacheError as e:
            return _error(e)
    try:
        shard = shards.parse(FLAGS.shard)
    except shards.ShardError as e:
        return _error(e)
    if not FLAGS.peer_timeout > 0:
        return _error(f"--peer_timeout={FLAGS.peer_timeout}: must be a number of seconds > 0")
    try:  # before anything runs a JAX operation
        distributed.initialize_from_flags_or_env(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
            FLAGS.cpu_devices_per_process, initialization_timeout=FLAGS.peer_timeout)
        summary = run.explain_dataset(FLAGS.config, FLAGS.workdir, state=run.RunState(stop=STOP),
                                      peer_timeout=FLAGS.peer_timeout, shard=shard)
    except run.USER_ERRORS + (distributed.DistributedSetupError,) as e:  # all processes stop...
        if getattr(e, "alone", False):  # ...except a write failed mid-run on this one only
            return _leave_without_peers(_error(e))
        return _error(e)
    except collectives.PeerLostError as e:
        print(f"error: {e}", file=sys.stderr)
        return _leave_without_peers(EXIT_PEER_LOST)
    import jax  # already started above

    if jax.process_index() != 0:
        return EXIT_COMPLETE if summary["complete"] else EXIT_STOPPED
    workdir = os.path.abspath(FLAGS.workdir)
    print(run_outcome(summary))
    report = os.path.join(workdir, workdir_files.REPORT)
    if os.path.exists(report):
        print(f"report: {report}")
    if not summary["complete"]:
        print(f"stopped on request before the end; rerun the same command to resume "
              f"(exit code {EXIT_STOPPED})", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_COMPLETE


def run_outcome(summary) -> str:
    """The closing line: flip rate as a percentage, counts."""
    from sce_jax.workdir.report import format_value
    return (f"flip rate {format_value(summary['flip_rate'], 'percent')} (first attempts "
            f"{format_value(summary['flip_rate_first_attempt'], 'percent')}), "
            f"{summary['num_counterfactuals']} counterfactuals for {summary['num_images']} images "
            f"({summary['num_skipped']} skipped)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
