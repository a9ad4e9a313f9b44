"""Shards as independent tasks and their merge: the same records as one process, whatever the
split; a merge that refuses what does not belong together, by name; job-array environments."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sce_jax.runs import loop as run
from sce_jax.runs import shards
from sce_jax.runs.shards import Shard, ShardError
from sce_jax.workdir import layout, merge
from sce_jax.workdir.layout import ResumeConfigError
from tests import ROOT
from tests import run_helpers as helpers

MERGE = os.path.join(ROOT, "scripts", "merge.py")
TIMING_FIELDS = ("counterfactuals_per_second", "elapsed_seconds", "runs")


def _assert_same_records(records, expected, rel=1e-5):
    """Every field equal, floats to ``rel``: a float32 reduction's rounding (a distance, a
    probability) can depend on a row's place in its batch (1e-6 relative on these models with
    the batch engine); every decision, outcome and step count is exact."""
    assert len(records) == len(expected)
    for r, e in zip(records, expected):
        floats = [k for k, v in e.items() if isinstance(v, float)]
        assert {k: v for k, v in r.items() if k not in floats} == {
            k: v for k, v in e.items() if k not in floats}
        for k in floats:
            assert r[k] == pytest.approx(e[k], rel=rel, abs=1e-7), (k, r, e)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return helpers.write_image_folder(str(tmp_path_factory.mktemp("shard_images")), 7,
                                      corrupt=(4,))


def _config(checkpoints, images, engine="auto", **overrides):
    return helpers.tiny_config(checkpoints, images, **{
        "engine": engine, "search__steps": 4, "output__report": True, **overrides})


def _run_shards(config, root, count=3):
    return [run.explain_dataset(config, os.path.join(root, f"shard{i}"), shard=Shard(i, count))
            for i in range(count)]


@pytest.fixture(scope="module")
def one_process(tiny_checkpoints, images, tmp_path_factory):
    """The one-process runs the shards must reproduce, per engine."""
    root = tmp_path_factory.mktemp("one_process")
    return {engine: (run.explain_dataset(_config(tiny_checkpoints, images, engine), str(root / engine)),
                     str(root / engine)) for engine in ("slots", "batch")}


@pytest.fixture(scope="module")
def batch_shards(tiny_checkpoints, images, tmp_path_factory):
    """The three finished shards of the batch engine's run (the tests only read them)."""
    root = str(tmp_path_factory.mktemp("batch_shards"))
    summaries = _run_shards(_config(tiny_checkpoints, images, "batch"), root)
    return [os.path.join(root, f"shard{i}") for i in range(3)], summaries


# The batch engine: every decision and pixel exact. The slot engine's searches run beside
# other searches in a shard than in the whole run, and their rounding differs more: the same
# decisions and step counts, distances to 1% (0.1% here), the PNGs not bit for bit.
@pytest.mark.parametrize("engine,rel", [("slots", 1e-2), ("batch", 1e-5)])
def test_three_shards_merged_are_the_one_process_run(tiny_checkpoints, images, one_process,
                                                     batch_shards, tmp_path, engine, rel):
    if engine == "batch":
        workdirs, parts = batch_shards
    else:
        parts = _run_shards(_config(tiny_checkpoints, images, engine), str(tmp_path))
        workdirs = merge.expand_workdirs(str(tmp_path / "shard*"))
    assert [p["complete"] for p in parts] == [True] * 3
    assert sum(p["num_images"] for p in parts) == 7   # each shard its own examples
    expected_summary, reference = one_process[engine]
    summary = merge.merge_shards(workdirs, str(tmp_path / "merged"))
    merged = str(tmp_path / "merged")
    _assert_same_records(helpers.read_manifest(merged), helpers.read_manifest(reference), rel)
    assert helpers.output_files(merged) == helpers.output_files(reference)
    pixels, expected = helpers.read_pngs(merged), helpers.read_pngs(reference)
    assert sorted(pixels) == sorted(expected)
    for name, value in expected.items() if engine == "batch" else ():  # (slots: not yet)
        np.testing.assert_array_equal(pixels[name], value, err_msg=name)
    assert summary["merged_shards"] == 3 and summary["complete"] is True
    counts = [k for k, v in expected_summary.items() if isinstance(v, (int, bool)) and k not in TIMING_FIELDS]
    assert {k: summary[k] for k in counts} == {k: expected_summary[k] for k in counts}
    assert set(summary) == set(expected_summary) | {"merged_shards"}
    assert len(summary["runs"]) == 3                  # every shard's throughput
    assert os.path.exists(os.path.join(merged, layout.REPORT))
    assert os.path.exists(os.path.join(merged, layout.RESULTS_CSV))
    # the merged images are links to the shards' files, not copies
    record = next(r for r in helpers.read_manifest(merged) if r["status"] == "ok")
    assert os.stat(os.path.join(merged, record["files"]["counterfactual"])).st_nlink == 2


def test_merge_refuses_what_does_not_belong_together_by_name(tiny_checkpoints, images,
                                                             batch_shards, tmp_path):
    s = batch_shards[0]
    out = str(tmp_path / "out")
    with pytest.raises(merge.MergeError, match=r"shard 1/3 is missing; merge what is there with "
                                               r"--allow_incomplete"):
        merge.merge_shards([s[0], s[2]], out)
    assert not os.path.exists(out)
    other = str(tmp_path / "other")
    run.explain_dataset(_config(tiny_checkpoints, images, "batch", search__steps=5), other,
                        shard=Shard(1, 3))
    with pytest.raises(merge.MergeError, match=r"other was made with another config than .*shard0 "
                                               r"\(differs in: search\)"):
        merge.merge_shards([s[0], other, s[2]], out)
    with pytest.raises(merge.MergeError, match=r"shard 0/3 given twice"):
        merge.merge_shards([s[0], s[0] + "/.", s[1], s[2]], out)
    with pytest.raises(merge.MergeError, match=r"not a shard's workdir \(no shard.json"):
        merge.merge_shards([os.path.join(s[0], "images"), s[1]], out)
    # merging what is there: an incomplete run, completed by a later merge
    partial = merge.merge_shards([s[0], s[2]], out, allow_incomplete=True)
    assert partial["complete"] is False and partial["merged_shards"] == 3
    assert merge.merge_shards(s, out)["complete"] is True
    with pytest.raises(merge.MergeError, match="is one of the shards"):
        merge.merge_shards(s, s[1])


def test_an_interrupted_shard_is_named_then_rerun_alone_and_merged_again(
        tiny_checkpoints, images, one_process, batch_shards, tmp_path):
    config = _config(tiny_checkpoints, images, "batch")
    s = [str(tmp_path / "shard0")] + batch_shards[0][1:]
    state = run.RunState()
    state.stop.set()  # as after SIGTERM: the batch in flight (of 2), then stop
    assert run.explain_dataset(config, s[0], shard=Shard(0, 3), state=state)["complete"] is False
    out = str(tmp_path / "merged")
    with pytest.raises(merge.MergeError, match=r"shard 0/3 \(.*shard0\) is unfinished: rerun it"):
        merge.merge_shards(s, out)
    with pytest.raises(ResumeConfigError, match=r"holds shard 0/3, this run is shard 2/3"):
        run.explain_dataset(config, s[0], shard=Shard(2, 3))
    assert run.explain_dataset(config, s[0], shard=Shard(0, 3))["complete"] is True
    merge.merge_shards(s, out)
    first = helpers.read_manifest(out)
    merge.merge_shards(s, out)  # twice: the same workdir
    assert helpers.read_manifest(out) == first
    _assert_same_records(first, helpers.read_manifest(one_process["batch"][1]))


def test_shard_values_and_job_array_environments():
    assert shards.parse("2/5", {}) == Shard(2, 5)
    assert shards.parse(None, {}) is None and shards.parse("", {}) is None
    slurm = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shards.parse("auto", slurm) == Shard(2, 4)
    assert shards.parse("auto/4", slurm) == Shard(2, 4)
    assert shards.parse("auto/3", {"JOB_COMPLETION_INDEX": "1"}) == Shard(1, 3)
    assert shards.parse("auto", {"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "2"}) == Shard(0, 2)
    assert shards.parse("auto", {"BATCH_TASK_INDEX": "3", "BATCH_TASK_COUNT": "5"}) == Shard(3, 5)
    for value, environ, message in [
            ("3/3", {}, r"shard index 3 is not in 0..2"),
            ("0/0", {}, r"the shard count must be >= 1"),
            ("1", {}, r"give the count too, as 1/N"),
            ("one/3", {}, r"give I/N \(shard I of N, from 0\), auto or auto/N"),
            ("auto", {}, r"none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, .* is set"),
            ("auto", {"JOB_COMPLETION_INDEX": "1"}, r"no count: give it as --shard=auto/N"),
            ("auto/3", slurm, r"--shard=auto/3 but SLURM_ARRAY_TASK_COUNT=4"),
            ("auto", {"JOB_COMPLETION_INDEX": "x"}, r"JOB_COMPLETION_INDEX='x' is not an integer")]:
        with pytest.raises(ShardError, match=message):
            shards.parse(value, environ)


def test_merge_script_names_a_missing_shard_and_merges_with_the_flag(batch_shards, tmp_path):
    s = batch_shards[0]
    env = helpers.worker_env()

    def merge_script(*flags):
        return subprocess.run([sys.executable, MERGE, f"--workdirs={s[0]},{s[2]}",
                               f"--workdir={tmp_path / 'out'}", *flags], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=120)

    refused = merge_script()
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "shard 1/3 is missing" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr
    merged = merge_script("--allow_incomplete", "--images=copy")
    assert merged.returncode == 0, merged.stderr
    assert "merged 3 shards: " in merged.stdout and ", incomplete into " in merged.stdout
    record = next(r for r in helpers.read_manifest(str(tmp_path / "out")) if r["status"] == "ok")
    assert os.stat(tmp_path / "out" / record["files"]["counterfactual"]).st_nlink == 1  # copied
