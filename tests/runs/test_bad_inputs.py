"""Bad inputs at the run and command-line level: what a user sees, and that nothing is lost.

- one bad image (truncated, corrupt, not an image, a decompression bomb, a FIFO) is skipped
  with its reason in the manifest; odd but valid files (grey, RGBA, palette, 16-bit, CMYK, 1x1,
  500x300) are explained like any other;
- a bad run-level input (data, weights, targets, config keys, workdir) stops before any work
  with one clear message: through ``scripts/explain.py``, exit code 2 and ``error: ...`` on
  stderr without a traceback;
- a full disk mid-run stops with a clear error; the batches already committed are kept, and
  the rerun finishes without touching them.

Decoding details of single files are tested in test_data.py and test_image_io.py; here they
go through a whole run.
"""

import errno
import json
import os

import numpy as np
import pytest

from sce_jax.data import image_io
from sce_jax.runs import loop as run
from tests import bad_input_corpus as corpus
from tests import run_helpers as helpers
from tests import warm_start

ENOSPC_FOLDER = os.path.join("images", "0000005")  # the second example of batch 3
TIMEOUT = 240


def tiny_config(checkpoints, source):
    return helpers.tiny_config(checkpoints, source, search__steps=2)


@pytest.fixture(scope="module")
def shared(run_fixtures):
    return run_fixtures  # models, config file, compilation cache (tests/conftest.py)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoints):
    folder = str(tmp_path_factory.mktemp("bad_inputs") / "odd")
    return {"checkpoints": tiny_checkpoints,
            "folder": folder, "expected": corpus.write_odd_folder(folder)}


def test_full_disk_mid_run_keeps_what_was_written_then_odd_images_finish(inputs, shared, tmp_path):
    workdir = str(tmp_path / "run")
    args = [f"--config={shared['config']}", f"--config.data.source={inputs['folder']}",
            f"--workdir={workdir}"]
    # the disk fills up while batch 3 (ids 4, 5) writes its images
    code, _, err = helpers.finish(helpers.start(args, dict(shared["env"], SCE_TEST_ENOSPC=ENOSPC_FOLDER)),
                                 TIMEOUT)
    assert code == 2 and "Traceback" not in err, err[-4000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: the disk is full: No space left on device (")
    assert ENOSPC_FOLDER in message
    assert message.endswith(f"The 2 batch(es) this run completed are kept in {workdir}; fix the "
                            "problem and rerun the same command to resume")

    before = helpers.snapshot(workdir)
    parts = sorted(k for k in before if k.startswith("parts"))
    assert len(parts) == 2  # batches 1 and 2 committed, batch 3 not
    committed = [json.loads(line) for p in parts for line in before[p][0].decode().splitlines()]
    assert sorted({r["example_id"] for r in committed}) == [0, 1, 2, 3]
    for r in committed:  # their images are complete
        for relative in r["files"].values():
            assert image_io.read_png(os.path.join(workdir, relative)).dtype == np.uint8

    code, _, err = helpers.finish(helpers.start(args, shared["env"]), TIMEOUT)
    assert code == 0, err[-4000:]
    after = helpers.snapshot(workdir)
    kept = ("parts",) + tuple(os.path.join("images", f"{i:07d}") for i in range(4))
    for name, (content, mtime) in before.items():  # the committed batches were left alone
        if name.startswith(kept):
            assert after[name] == (content, mtime), name
    records = helpers.read_manifest(workdir)
    keys = [(r["example_id"], r["target"], r["attempt"]) for r in records]
    assert len(keys) == len(set(keys))
    assert [r for r in records if r["example_id"] < 4] == sorted(
        committed, key=lambda r: (r["example_id"], r["target"], r["attempt"]))
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["complete"] and summary["num_images"] == 16 and summary["num_skipped"] == 8

    # odd but valid files are explained; bad ones are skipped with their reason
    by_name = {}
    for r in records:
        by_name.setdefault(os.path.basename(r["source"]), []).append(r)
    assert sorted(by_name) == sorted(inputs["expected"])  # none left out
    for name, expected in inputs["expected"].items():
        rows = by_name[name]
        if isinstance(expected, str):
            assert len(rows) == 1 and rows[0]["status"] == "skipped" and rows[0]["files"] == {}
            assert rows[0]["reason"].startswith(expected), rows[0]
            continue
        assert [r["status"] for r in rows] == ["ok", "ok"], name
        original = image_io.read_png(os.path.join(workdir, rows[0]["files"]["original"]))[..., 0]
        assert np.abs(original.astype(int) - expected).max() <= 1, name
        for r in rows:
            assert image_io.read_png(os.path.join(workdir, r["files"]["counterfactual"])).shape == (16, 16, 1)
    assert "400000000 pixels" in by_name["h_bomb.png"][0]["reason"]
    assert "truncated" in by_name["i_truncated.png"][0]["reason"].lower()


def _assert_stops_before_work(config, workdir, message):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "notes.txt"), "w") as f:
        f.write("kept")
    with pytest.raises(run.USER_ERRORS, match=message):
        run.explain_dataset(config, workdir)
    # nothing written (no run_config.json, inputs.json, run.lock, parts/), nothing overwritten
    assert sorted(os.listdir(workdir)) == ["notes.txt"]
    with open(os.path.join(workdir, "notes.txt")) as f:
        assert f.read() == "kept"


def test_bad_run_level_inputs_stop_before_any_work(inputs, tmp_path):
    cases = corpus.run_level_cases(str(tmp_path / "corpus"), inputs["checkpoints"])
    assert len(cases) == len({c.name for c in cases})
    for i, case in enumerate(cases):
        config = corpus.apply(tiny_config(inputs["checkpoints"], inputs["folder"]), case.changes)
        try:
            _assert_stops_before_work(config, str(tmp_path / f"work{i}"), case.message)
        except BaseException as e:
            raise AssertionError(f"case {case.name!r}: {e}") from e


def test_unwritable_workdir_is_refused_before_any_work(inputs, tmp_path, monkeypatch):
    config = tiny_config(inputs["checkpoints"], inputs["folder"])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(run.WorkdirWriteError, match=r"the workdir .*a_file/run cannot be written"):
        run.explain_dataset(config, str(tmp_path / "a_file" / "run"))

    def read_only(path, *args, **kwargs):  # what a read-only mount answers
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(image_io, "atomic_write", read_only)
    with pytest.raises(run.WorkdirWriteError,
                       match=r"the workdir .*ro cannot be written \(Read-only file system: "):
        run.explain_dataset(config, str(tmp_path / "ro"))


def test_a_failed_write_of_the_run_record_is_a_user_error(inputs, tmp_path, monkeypatch):
    config = tiny_config(inputs["checkpoints"], inputs["folder"])
    real = image_io.atomic_write

    def full_disk_for_run_config(path, *args, **kwargs):
        if path.endswith("run_config.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(image_io, "atomic_write", full_disk_for_run_config)
    with pytest.raises(run.WorkdirWriteError, match=r"^the disk is full: No space left on device "
                       r"\(.*run_config.json\). Nothing was explained by this run; fix the problem"):
        run.explain_dataset(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "parts")


def test_read_only_workdir_by_permissions(inputs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("permissions do not stop writes for this user (root); the read-only "
                        "case is covered by test_unwritable_workdir_is_refused_before_any_work")
        config = tiny_config(inputs["checkpoints"], inputs["folder"])
        with pytest.raises(run.WorkdirWriteError, match="Permission denied"):
            run.explain_dataset(config, str(locked / "run"))
    finally:
        locked.chmod(0o755)


def test_command_line_reports_bad_input_with_exit_code_2_and_no_traceback(inputs, tmp_path):
    config = helpers.write_config_file(str(tmp_path / "config.py"), inputs["checkpoints"],
                                      inputs["folder"])
    workdir = str(tmp_path / "work")
    (tmp_path / "a_file").write_text("not a folder")
    cases = [
        (["--config.search.stepz=3"], 'stepz\' Did you mean "steps" instead of "stepz"?'),
        ([f"--compilation_cache={tmp_path / 'a_file' / 'cache'}"], "compilation cache"),
        (["--config.targets.kind=class", "--config.targets.class_index=7"], "out of range"),
        (["--process_id=1"], "--process_id/--coordinator_address without --num_processes"),
        (["--config.search.steps=3000000000"],
         "search config steps=3000000000: must be in [1, 2147483647]"),
        (["--config.search.learning_rate=nan"], "search config learning_rate=nan: must be a finite number"),
        (["--peer_timeout=0"], "--peer_timeout=0.0: must be a number of seconds > 0"),
        (["--shard=3/3"], "--shard=3/3: shard index 3 is not in 0..2"),
    ]
    env = helpers.worker_env()
    procs = [warm_start.start_script(helpers.EXPLAIN, [f"--config={config}", f"--workdir={workdir}", *args],
                                     env, cwd=str(tmp_path)) for args, _ in cases]
    for proc, (args, message) in zip(procs, cases):
        code, out, err = helpers.finish(proc, TIMEOUT)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (args, err)
        assert "Traceback" not in err, (args, err)
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, err)
    assert not os.path.exists(os.path.join(workdir, "manifest.jsonl"))
    assert not os.path.exists(os.path.join(workdir, "parts"))
