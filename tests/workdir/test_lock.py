"""The workdir's lock (sce_jax/workdir/lock.py): taken, refused naming its owner, stale locks of
this host taken over, locks of another host refused, released."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from sce_jax.workdir import layout
from sce_jax.workdir import lock as workdir_lock


def _lock_path(workdir):
    return os.path.join(str(workdir), layout.LOCK)


def _write_lock(workdir, **owner):
    """A lock file as another run would have left it: this process's record with ``owner``."""
    os.makedirs(workdir, exist_ok=True)
    record = {**workdir_lock.this_process(), **owner}
    with open(_lock_path(workdir), "w") as f:
        json.dump(record, f)
    with open(_lock_path(workdir)) as f:
        return f.read()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # gone and reaped
    return proc.pid


def _read(workdir):
    with open(_lock_path(workdir)) as f:
        return f.read()


def test_take_and_release_leave_no_trace(tmp_path):
    workdir = tmp_path / "new" / "run"
    held = workdir_lock.acquire(str(workdir))
    owner = json.loads(_read(workdir))
    assert owner["pid"] == os.getpid() and owner["host"] == os.uname().nodename
    assert {"started", "command", "boot_id", "process_start"} <= set(owner)
    assert os.listdir(workdir) == [layout.LOCK]  # no temporary left beside it
    held.release()
    assert not os.path.exists(tmp_path / "new")  # the folders it made are removed again
    held.release()  # twice is harmless

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("x")
    with workdir_lock.acquire(str(tmp_path / "kept")):
        assert os.path.exists(_lock_path(tmp_path / "kept"))
    assert os.listdir(tmp_path / "kept") == ["notes.txt"]


def test_a_second_run_is_refused_naming_the_owner(tmp_path):
    with workdir_lock.acquire(str(tmp_path)):
        before = _read(tmp_path)
        with pytest.raises(workdir_lock.WorkdirBusyError,
                           match=rf"is in use by another run \(process {os.getpid()} on this "
                                 r"host, started .*; wait for it to end or stop it"):
            workdir_lock.acquire(str(tmp_path))
        assert _read(tmp_path) == before  # the refused run changed nothing


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead, process_start=None)
    with caplog.at_level(logging.WARNING):
        held = workdir_lock.acquire(str(tmp_path))
    assert json.loads(_read(tmp_path))["pid"] == os.getpid()
    assert f"took over the stale lock {_lock_path(tmp_path)}: its run (process {dead} on this " \
           f"host" in caplog.text and "is no longer running" in caplog.text
    held.release()
    assert os.listdir(tmp_path) == []


def test_a_reused_pid_or_a_zombie_is_not_the_owner(tmp_path):
    # this process's pid, but the lock says it started at another time: the pid was reused
    start = workdir_lock.this_process()["process_start"]
    if start is None:
        pytest.skip("no /proc: process start times are not known here")
    _write_lock(tmp_path, process_start=start + 1)
    workdir_lock.acquire(str(tmp_path)).release()

    # a killed child its parent has not reaped yet
    proc = subprocess.Popen([sys.executable, "-c", ""])
    deadline = time.monotonic() + 30
    while workdir_lock._proc_stat(proc.pid)[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        _write_lock(tmp_path, pid=proc.pid, process_start=None)
        workdir_lock.acquire(str(tmp_path)).release()
    finally:
        proc.wait()


def test_a_lock_of_another_host_is_refused_saying_how_to_remove_it(tmp_path):
    text = _write_lock(tmp_path, host="elsewhere.example", pid=1234, boot_id="other")
    with pytest.raises(workdir_lock.WorkdirBusyError) as refused:
        workdir_lock.acquire(str(tmp_path))
    message = str(refused.value)
    assert "in use by another run (process 1234 on host elsewhere.example, started " in message
    assert f"remove the lock (rm {_lock_path(tmp_path)}) and rerun" in message
    assert _read(tmp_path) == text

    # a live process of this host in another PID namespace cannot be checked either
    _write_lock(tmp_path, pid=_dead_pid(), pid_namespace="pid:[1]")
    with pytest.raises(workdir_lock.WorkdirBusyError, match="another PID namespace"):
        workdir_lock.acquire(str(tmp_path))

    # nor can a lock that says nothing (damaged, or being written)
    with open(_lock_path(tmp_path), "w") as f:
        f.write("")
    with pytest.raises(workdir_lock.WorkdirBusyError, match=r"does not say which run holds it; "
                       r"if no run is using this workdir, remove the lock \(rm "):
        workdir_lock.acquire(str(tmp_path))


def test_a_lock_from_before_this_host_restarted_is_taken_over(tmp_path):
    if workdir_lock.this_process()["boot_id"] is None:
        pytest.skip("no boot id on this system")
    _write_lock(tmp_path, boot_id="an-earlier-boot")  # even with a live pid
    held = workdir_lock.acquire(str(tmp_path))
    assert json.loads(_read(tmp_path))["boot_id"] != "an-earlier-boot"
    held.release()


def test_release_leaves_a_lock_another_run_took_over(tmp_path):
    held = workdir_lock.acquire(str(tmp_path))
    other = _write_lock(tmp_path, pid=1, token="another run")
    held.release()
    assert _read(tmp_path) == other


def test_an_unwritable_workdir_is_a_write_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(layout.WorkdirWriteError, match=r"the workdir .*a_file/run cannot be written"):
        workdir_lock.acquire(str(tmp_path / "a_file" / "run"))
