"""Multi-process runs: two processes on this CPU reproduce the single-process run.

Two ``scripts/explain.py`` processes (gloo collectives, a loopback coordinator on a free port,
2 CPU devices each) share one workdir, with a batch of 4 rows per process (global batch 8
over 4 devices). The reference is the single-process run of the same config on one device
with batches of 2 rows: every device computes 2 rows in both, and every decision (success,
outcome, steps, target, decision after) must be the same, the counterfactuals within 1/255.
The rows are not the same ones beside each other (example 2 is row 1 beside example 0 here,
row 0 of the reference's batch (2, 3)), and on some CPUs (AMD EPYC) XLA's result for a row
depends on its position in the batch in the last float bit; over the search's steps the
edit mask's threshold turns that into a pixel more or less in the mask. So the distances may
differ by a few percent, and the mask and heat-map PNGs (a thresholded and a
max-normalised map) are not compared pixel by pixel.

Also: how :mod:`sce_jax.launch.distributed` reads explicit values and cluster environments, and that
processes which cannot work together (one never started, different configs, a check failing on
one, one killed mid-run) all end within bounded time with one ``error:`` line each.
"""

import json
import os
import socket

import numpy as np
import pytest

from sce_jax.launch import distributed
from sce_jax.launch.distributed import DistributedSetup, DistributedSetupError, resolve_setup
from tests import run_helpers as helpers

TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_fixtures):
    shared = run_fixtures
    multi = str(tmp_path_factory.mktemp("multiprocess") / "run")
    # 9 examples: process 0 gets ids 0, 2, 4, 6, 8 (2 batches of 4), process 1 ids 1, 3, 5, 7
    # (1 batch, then an all-padding batch to keep the collectives in step); id 3 is corrupt.
    port = _free_port()
    procs = [helpers.start([f"--config={shared['config']}", f"--workdir={multi}",
                           "--config.batch_size=4", f"--coordinator_address=127.0.0.1:{port}",
                           "--num_processes=2", f"--process_id={p}",
                           "--cpu_devices_per_process=2"], helpers.worker_env())
             for p in range(2)]
    try:
        results = [helpers.finish(proc, TIMEOUT) for proc in procs]
    finally:
        for proc in procs:  # a process left waiting for its peer must not outlive the test
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for code, _, err in results:
        assert code == 0, err[-4000:]
    return shared["reference"], multi, results


def _same_record(a, b, rel=1e-5, changed_pixels=0):
    """``rel``: the relative tolerance of float fields; ``changed_pixels``: how many pixels of
    the 16x16 images ``changed_fraction`` may count more or fewer."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if "changed_fraction" in key and value is not None:
            assert abs(b[key] - value) <= changed_pixels / 256 + 1e-7, key
        elif isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=rel, abs=1e-7), key
        else:
            assert b[key] == value, key


def test_two_processes_reproduce_the_single_process_run(runs):
    single, multi, results = runs
    records, expected = helpers.read_manifest(multi), helpers.read_manifest(single)
    assert len(records) == len(expected) == 17
    for a, b in zip(expected, records):
        _same_record(a, b, rel=0.05, changed_pixels=1)
    assert helpers.output_files(multi) == helpers.output_files(single)
    reference_pixels = helpers.read_pngs(single)
    for name, pixels in helpers.read_pngs(multi).items():
        if os.path.basename(name).startswith(("original", "cf_")):
            assert np.abs(pixels.astype(int) - reference_pixels[name]).max() <= 1, name
    summaries = []
    for workdir in (single, multi):
        with open(os.path.join(workdir, "summary.json")) as f:
            summaries.append({k: v for k, v in json.load(f).items() if k not in helpers.TIMING_FIELDS})
    _same_record(summaries[0], summaries[1], rel=0.05, changed_pixels=1)
    assert summaries[1]["num_images"] == 9 and summaries[1]["num_skipped"] == 1
    # process 0 prints the result; process 1 does not repeat it
    assert "16 counterfactuals for 9 images (1 skipped)" in results[0][1]
    assert "counterfactuals" not in results[1][1]


def test_each_process_wrote_only_its_own_examples(runs):
    _, multi, _ = runs
    parts = os.path.join(multi, "parts")
    owners = {}
    for name in os.listdir(parts):
        with open(os.path.join(parts, name)) as f:
            for line in f:
                owners.setdefault(json.loads(line)["example_id"], set()).add(name[:4])
    assert owners == {i: {f"p{i % 2:03d}"} for i in range(9)}


def test_explicit_values_are_checked():
    assert resolve_setup(env={}) == DistributedSetup("single", 0, 1)
    assert resolve_setup("h:1", 2, 1, env={}) == DistributedSetup("explicit", 1, 2, "h:1")
    assert resolve_setup(None, 1, None, env={}).mode == "single"
    cases = [
        ((None, None, 1), "without --num_processes"),
        (("h:1", None, None), "without --num_processes"),
        (("h:1", 2, None), "without --process_id"),
        (("h:1", 2, 2), r"--process_id=2: must be in 0\.\.1"),
        ((None, 2, 0), "without --coordinator_address"),
        (("nohostport", 2, 0), "expected HOST:PORT"),
        (("h:1", 0, 0), "must be >= 1"),
        ((None, 1, 3), "the only process is 0"),
    ]
    for args, message in cases:
        with pytest.raises(DistributedSetupError, match=message):
            resolve_setup(*args, env={})
    with pytest.raises(DistributedSetupError, match="must be >= 1"):
        distributed.initialize_from_flags_or_env(local_device_count=0)


def test_slurm_and_auto_detected_clusters():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "123456",
           "SLURM_JOB_NODELIST": "gpu[007-009,012],login1"}
    assert resolve_setup(env=env) == DistributedSetup(
        "slurm", 3, 4, f"gpu007:{distributed.SLURM_PORT_BASE + 123456 % distributed.SLURM_PORT_SPAN}")
    # the step's own task count and node list win over the job's; explicit values over both
    step = dict(env, SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NODELIST="n[1-2]", SLURM_PROCID="1")
    assert resolve_setup(env=step).num_processes == 2
    assert resolve_setup(env=step).coordinator_address.startswith("n1:")
    assert resolve_setup("a:9", 2, 0, env=env).mode == "explicit"
    # one task (an interactive allocation) is a single process
    assert resolve_setup(env=dict(env, SLURM_NTASKS="1")).mode == "single"
    with pytest.raises(DistributedSetupError, match="SLURM_PROCID='x' is not an integer"):
        resolve_setup(env=dict(env, SLURM_PROCID="x"))
    with pytest.raises(DistributedSetupError, match="SLURM_JOB_NODELIST is empty"):
        resolve_setup(env=dict(env, SLURM_JOB_NODELIST=""))
    assert distributed.expand_slurm_nodelist("a[01-03,7],b,c[8-10]-ib") == [
        "a01", "a02", "a03", "a7", "b", "c8-ib", "c9-ib", "c10-ib"]
    for env in ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, {"OMPI_COMM_WORLD_SIZE": "8"},
                {"MEGASCALE_COORDINATOR_ADDRESS": "x:1"}):
        assert resolve_setup(env=env).mode == "auto"
    for env in ({"TPU_WORKER_HOSTNAMES": "localhost"}, {"OMPI_COMM_WORLD_SIZE": "1"}):
        assert resolve_setup(env=env).mode == "single"


def _start_processes(shared, workdir, extra=(), count=2, env=None, port=None):
    port = port or _free_port()
    return [helpers.start([f"--config={shared['config']}", f"--workdir={workdir}",
                          f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
                          f"--process_id={p}", "--cpu_devices_per_process=1", *extra_p],
                         (env or {}).get(p, helpers.worker_env()))
            for p, extra_p in enumerate(extra or [()] * count)]


def _finish_all(procs):
    try:
        return [helpers.finish(proc, TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _last_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "Fatal Python error" not in err, err[-4000:]
    return lines[-1]


def test_processes_that_cannot_agree_fail_cleanly(run_fixtures, tmp_path):
    """Each case once hung (> 400 s) or aborted; now every process ends with one error line."""
    shared = run_fixtures
    (tmp_path / "a_file").write_text("not a folder")
    alone = _start_processes(shared, str(tmp_path / "alone"), [("--peer_timeout=5",)])
    mismatch = _start_processes(shared, str(tmp_path / "mismatch"),
                                [("--config.search.steps=3",), ("--config.search.steps=4",)])
    unwritable = _start_processes(shared, str(tmp_path / "a_file" / "run"))
    (code, _, err), = _finish_all(alone)  # process 1 never started
    assert code == 69, err[-4000:]
    assert _last_line(err).startswith("error: the processes did not all join within 5 s "
                                      "(process 0 of 2, coordinator 127.0.0.1:")
    for code, _, err in _finish_all(mismatch):
        assert code == 2, err[-4000:]
        assert _last_line(err) == (
            "error: process 1 was started with another config than process 0 (differs in: "
            "search.steps); start every process with the same command apart from --process_id")
    (code0, _, err0), (code1, _, err1) = _finish_all(unwritable)  # only process 0 checks it
    assert code0 == code1 == 2, err0[-4000:] + err1[-4000:]
    assert "cannot be written" in _last_line(err0)
    assert _last_line(err1).startswith("error: process 0 stopped before any work: the workdir ")


def test_a_dead_process_ends_the_others_with_a_clean_error(run_fixtures, tmp_path):
    shared = run_fixtures
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    # process 1 holds before its second batch's search; process 0 goes on and waits for it
    env = {1: helpers.worker_env(SCE_TEST_HOOK_DIR=str(hooks), SCE_TEST_BLOCK="search:2")}
    procs = _start_processes(shared, str(tmp_path / "run"), [("--peer_timeout=12",)] * 2,
                             env=env)
    helpers.wait_for_file(str(hooks / "blocked"), procs[1], TIMEOUT)
    procs[1].kill()
    (code, _, err), _ = _finish_all(procs)
    assert code == 69, err[-4000:]
    line = _last_line(err)
    assert line.startswith("error: process 1 of 2 did not reach ") and "this is process 0" in line
    assert "rerun every process to resume" in line
