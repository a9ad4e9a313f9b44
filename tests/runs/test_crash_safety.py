"""A run killed at any point resumes to exactly the results of an uninterrupted run.

Every run here is ``scripts/explain.py`` in a subprocess (tests/multiprocess_helpers.py), on
9 tiny images (one corrupt) in 5 batches of 2. Hooks in the worker stop a run at a chosen
point deterministically (before a batch's search, after its PNGs but before its part file,
inside a PNG write); the test then kills it with SIGKILL or sends SIGTERM. The runs share a
persistent compilation cache, so only the first compiles.
"""

import json
import os
import signal
import time

import numpy as np
import pytest

from tests import run_helpers as helpers

TIMEOUT = 240  # seconds for any one run; a hang fails instead of blocking the suite


@pytest.fixture(scope="module")
def setup(run_fixtures):
    return run_fixtures  # models, images, config, reference run (tests/conftest.py)


def _start(setup, workdir, hook_dir=None, block=None, env=None):
    env = dict(env or setup["env"])
    if hook_dir:
        os.makedirs(hook_dir, exist_ok=True)
        env["SCE_TEST_HOOK_DIR"] = str(hook_dir)
    if block:
        env["SCE_TEST_BLOCK"] = block
    return helpers.start([f"--config={setup['config']}", f"--workdir={workdir}"], env)


def _kill_when(proc, marker, delay=0.0):
    helpers.wait_for_file(str(marker), proc, TIMEOUT)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _parts(workdir):
    folder = os.path.join(workdir, "parts")
    if not os.path.isdir(folder):
        return {}
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                found[name] = [json.loads(line) for line in f]
    return found


def _committed_ids(workdir):
    return sorted(r["example_id"] for records in _parts(workdir).values() for r in records)


def _temporaries(workdir):
    return [os.path.join(r, n) for r, _, names in os.walk(workdir) for n in names if n.endswith(".tmp")]


def _assert_same_as_reference(workdir, reference):
    records, expected = helpers.read_manifest(workdir), helpers.read_manifest(reference)
    keys = [(r["example_id"], r["target"], r["attempt"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicate records in the manifest"
    assert records == expected
    # every example was committed exactly once, over all part files
    ids = _committed_ids(workdir)
    per_example = {i: ids.count(i) for i in set(ids)}
    attempts = {r["example_id"]: 1 if r["status"] == "skipped" else 2 for r in expected}
    assert per_example == attempts
    assert _temporaries(workdir) == []
    assert helpers.output_files(workdir) == helpers.output_files(reference)
    pixels, expected_pixels = helpers.read_pngs(workdir), helpers.read_pngs(reference)  # all decode
    for name, value in expected_pixels.items():
        np.testing.assert_array_equal(pixels[name], value, err_msg=name)
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["complete"] is True and summary["num_images"] == 9 and summary["num_skipped"] == 1


def test_killed_at_every_stage_then_resumed_equals_the_uninterrupted_run(setup, tmp_path):
    workdir, hooks = str(tmp_path / "run"), tmp_path / "hooks"

    # 1. SIGKILL while the first batch compiles (own empty cache, so it really compiles)
    proc = _start(setup, workdir, hooks / "compile", env=helpers.worker_env(str(tmp_path / "cold_cache")))
    _kill_when(proc, hooks / "compile" / "search_started", delay=0.2)
    assert _committed_ids(workdir) == []
    assert not os.path.exists(os.path.join(workdir, "manifest.jsonl"))

    # 2. SIGKILL in the middle of batch 2 (batch 1 committed, batch 2 searching)
    proc = _start(setup, workdir, hooks / "search", "search:2")
    _kill_when(proc, hooks / "search" / "blocked")
    assert _committed_ids(workdir) == [0, 0, 1, 1]

    # 3. SIGKILL after batch 2's PNGs are written, before its part file: not committed
    proc = _start(setup, workdir, hooks / "part", "part:1")
    _kill_when(proc, hooks / "part" / "blocked")
    assert _committed_ids(workdir) == [0, 0, 1, 1]
    written = os.listdir(os.path.join(workdir, "images", "0000002"))  # batch 2's images
    assert "original.png" in written and len(written) == 1 + 2 * 3  # + cf, diff, mask per attempt

    # 4. SIGKILL inside a PNG write: a half-written temporary file stays behind
    proc = _start(setup, workdir, hooks / "png", "png:2")
    _kill_when(proc, hooks / "png" / "blocked")
    left = _temporaries(workdir)
    assert len(left) == 1 and os.path.basename(left[0]).startswith(".")
    assert _committed_ids(workdir) == [0, 0, 1, 1]

    # 5. an uninterrupted rerun finishes: same records and images as a run never killed
    code, out, err = helpers.finish(_start(setup, workdir), TIMEOUT)
    assert code == 0, err[-4000:]
    assert "16 counterfactuals for 9 images (1 skipped)" in out
    _assert_same_as_reference(workdir, setup["reference"])


def test_slot_engine_killed_at_several_points_resumes_to_the_uninterrupted_bytes(setup, tmp_path):
    """The slot engine commits examples as they finish; a run killed (SIGKILL) while a commit
    is held loses the searches in flight, and the resumed run, which replays the finished
    searches' schedule, writes the records and PNGs of a run never killed, to the bit."""
    # 3 chunks per attempt; searches of different lengths (tests/search/test_slots.py), some
    # ended early by the stall rule (a stalled search's slot is refilled at once)
    slots = ["--config.engine=slots", "--config.slots=3", "--config.search.steps=9",
             "--config.search.stall.window=3"]

    def run(workdir, hooks=None, block=None):
        env = dict(setup["env"])
        if hooks:
            os.makedirs(hooks, exist_ok=True)
            env.update(SCE_TEST_HOOK_DIR=str(hooks), SCE_TEST_BLOCK=block)
        return helpers.start([f"--config={setup['config']}", f"--workdir={workdir}", *slots], env)

    reference, workdir = str(tmp_path / "reference"), str(tmp_path / "run")
    code, _, err = helpers.finish(run(reference), TIMEOUT)
    assert code == 0, err[-4000:]
    committed = []
    for point in ("first", "second"):  # each run holds its second commit; killed there
        _kill_when(run(workdir, tmp_path / point, "part:2"), tmp_path / point / "blocked")
        committed.append(_committed_ids(workdir))
    assert 0 < len(committed[0]) < len(committed[1]) < 17   # each kill kept some commits
    code, out, err = helpers.finish(run(workdir), TIMEOUT)
    assert code == 0, err[-4000:]
    records, expected = helpers.read_manifest(workdir), helpers.read_manifest(reference)
    assert records == expected
    assert any(r.get("stalled") for r in expected)  # (their outcome: the originals are near the boundary)
    ids = _committed_ids(workdir)
    assert {i: ids.count(i) for i in set(ids)} == {
        r["example_id"]: 1 if r["status"] == "skipped" else 2 for r in expected}
    assert helpers.output_files(workdir) == helpers.output_files(reference)
    pixels, expected_pixels = helpers.read_pngs(workdir), helpers.read_pngs(reference)
    for name, value in expected_pixels.items():
        np.testing.assert_array_equal(pixels[name], value, err_msg=name)


def _handles(proc, signum):
    """True once ``proc`` has installed a handler for ``signum`` (Linux: SigCgt in /proc)."""
    with open(f"/proc/{proc.pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signum - 1) & 1)


def test_sigint_finishes_the_batch_exits_75_and_the_rerun_completes(setup, tmp_path):
    workdir, hooks = str(tmp_path / "run"), tmp_path / "hooks"
    # Hold the run after batch 2's PNGs, press Ctrl-C there, then let it go on.
    proc = _start(setup, workdir, hooks, "part:2")
    helpers.wait_for_file(str(hooks / "blocked"), proc, TIMEOUT)
    proc.send_signal(signal.SIGINT)
    (hooks / "release").write_text("")
    code, _, err = helpers.finish(proc, TIMEOUT)
    assert code == 75, err[-4000:]
    assert "stopped on request before the end; rerun the same command to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not os.path.exists(os.path.join(workdir, "run.lock"))  # a stopped run gives it back
    # the batch in flight was committed, nothing after it was started
    assert _committed_ids(workdir) == [0, 0, 1, 1, 2, 2, 3]
    records = helpers.read_manifest(workdir)
    assert sorted({r["example_id"] for r in records}) == [0, 1, 2, 3]
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["complete"] is False

    code, _, err = helpers.finish(_start(setup, workdir), TIMEOUT)
    assert code == 0, err[-4000:]
    _assert_same_as_reference(workdir, setup["reference"])


def test_sigterm_at_start_exits_75_and_during_the_last_batch_completes(setup, tmp_path):
    workdir, hooks = str(tmp_path / "run"), tmp_path / "hooks"
    # SIGTERM as soon as the script runs (before jax is even imported): one batch, then 75
    proc = _start(setup, workdir)
    deadline = time.monotonic() + TIMEOUT
    while not _handles(proc, signal.SIGTERM):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    code, _, err = helpers.finish(proc, TIMEOUT)
    assert code == 75, err[-4000:]
    assert "Traceback" not in err
    assert _committed_ids(workdir) == [0, 0, 1, 1]

    # SIGTERM while the last of the 4 remaining batches is written: nothing is left, exit 0
    proc = _start(setup, workdir, hooks, "part:4")
    helpers.wait_for_file(str(hooks / "blocked"), proc, TIMEOUT)
    proc.send_signal(signal.SIGTERM)
    (hooks / "release").write_text("")
    code, _, err = helpers.finish(proc, TIMEOUT)
    assert code == 0, err[-4000:]
    assert "rerun" not in err and "Traceback" not in err
    _assert_same_as_reference(workdir, setup["reference"])
