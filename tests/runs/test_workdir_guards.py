"""What a run checks of its workdir before it works in it: no other run uses it (the lock), and
every file the committed records name is there (else those examples are explained again).

Both start from a copy of the session's finished reference run (tests/conftest.py
``run_fixtures``), so each costs one ``scripts/explain.py`` subprocess.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sce_jax.workdir import layout
from sce_jax.workdir import lock as workdir_lock
from tests import run_helpers as helpers

TIMEOUT = 240


@pytest.fixture(scope="module")
def setup(run_fixtures):
    return run_fixtures  # models, images, config, reference run (tests/conftest.py)


def _copy_of_reference(setup, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(setup["reference"], workdir)
    return workdir


def _run(setup, workdir, *flags):
    return helpers.finish(helpers.start(
        [f"--config={setup['config']}", f"--workdir={workdir}", *flags], setup["env"]), TIMEOUT)


def test_a_second_run_on_a_busy_workdir_stops_at_once_and_writes_nothing(setup, tmp_path):
    workdir = _copy_of_reference(setup, tmp_path)
    with workdir_lock.acquire(workdir):  # a run of this host, alive: this test's process
        before = helpers.snapshot(workdir)
        code, out, err = _run(setup, workdir, "--config.search.steps=4")  # another config
        assert code == 2, err[-4000:]
        owner = json.loads(before[layout.LOCK][0])
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert errors == [f"error: the workdir {workdir} is in use by another run (process "
                          f"{os.getpid()} on this host, started {owner['started']}: "
                          f"{owner['command']}); wait for it to end or stop it, or choose "
                          "another --workdir"], err[-4000:]
        assert "Traceback" not in err and "loading the models" not in err and out == ""
        assert helpers.snapshot(workdir) == before  # not a byte written, the lock left to its owner
    assert not os.path.exists(os.path.join(workdir, layout.LOCK))


def test_deleted_files_of_a_finished_run_are_explained_again(setup, tmp_path):
    reference = setup["reference"]
    workdir = _copy_of_reference(setup, tmp_path)
    records = helpers.read_manifest(reference)
    # example 4's folder and one counterfactual of example 7: redone together as one batch of
    # 2, each in the row it had in the reference (batches (4, 5) and (6, 7))
    shutil.rmtree(os.path.join(workdir, layout.example_folder(4)))
    deleted = next(r["files"]["counterfactual"] for r in records
                   if r["example_id"] == 7 and r["attempt"] == 1)
    os.remove(os.path.join(workdir, deleted))
    # and a lock left by a killed run of this host: taken over
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    with open(os.path.join(workdir, layout.LOCK), "w") as f:
        json.dump({**workdir_lock.this_process(), "pid": dead.pid, "process_start": None}, f)

    code, out, err = _run(setup, workdir)
    assert code == 0, err[-4000:]
    assert "16 counterfactuals for 9 images (1 skipped)" in out
    assert f"took over the stale lock {os.path.join(workdir, layout.LOCK)}" in err
    missing_4 = sorted({name for r in records if r["example_id"] == 4 for name in r["files"].values()})
    assert f"example 4: {len(missing_4)} committed file(s) missing ({', '.join(missing_4)})" in err
    assert f"example 7: 1 committed file(s) missing ({deleted}); explaining it again" in err

    for name in (layout.MANIFEST, layout.RESULTS_CSV):  # the records byte for byte
        with open(os.path.join(workdir, name), "rb") as a, open(os.path.join(reference, name), "rb") as b:
            assert a.read() == b.read(), name
    assert helpers.output_files(workdir) == helpers.output_files(reference)
    pixels = helpers.read_pngs(workdir)
    for name, expected in helpers.read_pngs(reference).items():
        np.testing.assert_array_equal(pixels[name], expected, err_msg=name)
    committed = [r["example_id"] for r in layout.read_part_records(workdir)]
    assert sorted(committed) == sorted(r["example_id"] for r in records)  # each once
    with open(os.path.join(workdir, layout.SUMMARY)) as f:
        assert json.load(f)["complete"] is True
    assert not os.path.exists(os.path.join(workdir, layout.LOCK))
    assert [n for _, _, names in os.walk(workdir) for n in names if n.endswith(".tmp")] == []
