"""One run per workdir: an exclusive lock file, ``run.lock``, that names the run holding it.

A run (process 0 of a multi-process run, once for the whole run) takes the lock before it
reads or writes anything else of the workdir and removes it when it ends, whichever way it ends
(returning, SIGTERM / SIGINT, an exception: :meth:`WorkdirLock.release` in a ``finally``). A
second run on the same workdir stops at once with :class:`WorkdirBusyError` naming the owner.
The file is one JSON object: the owner's ``host``, ``pid``, ``started`` (local time),
``command``, and what tells whether that process still runs: ``boot_id`` (Linux's
``/proc/sys/kernel/random/boot_id``), ``pid_namespace`` and ``process_start`` (the process's
start in clock ticks since boot, ``/proc/<pid>/stat``), plus a random ``token`` that makes
each lock's text unique.

Taking it is one atomic create, never a check followed by a write: the owner's text is written
to a temporary file beside the lock, which is then hard-linked to ``run.lock``
(``os.link`` fails if the name exists). The link is atomic on local file systems and on NFS
(v2 and later), the lock is complete from the moment it is visible, and success is judged by
reading the lock back (a retried NFS request can report ``EEXIST`` for a link that succeeded).
Where hard links are not supported (some FUSE and SMB mounts), the lock is created with
``O_CREAT | O_EXCL``, atomic on NFSv3 and later. ``fcntl`` / ``flock`` locks are not used: on
NFS they depend on the lock daemons (a crashed client's lock may outlive it or vanish after a
server restart), ``flock`` is local to one client on some systems, and an ``fcntl`` lock is
silently dropped when the process closes any descriptor of the file; none of them says who
holds the lock. A plain file does, and survives the owner's death as a stale lock.

A stale lock (SIGKILL, power cut): on this host (same host name, and the same boot and PID
namespace where they are known), a lock whose process is gone (no such pid, a zombie, or a pid
since reused by a process that started later) or that was taken before the host restarted is
taken over, with a warning. The takeover renames the stale file aside and checks that the file
moved is the one judged stale (two runs taking over at once: the second puts the first's new
lock back), then takes the lock as usual. A lock from another host (or another container of
this one) cannot be checked from here: it is refused, naming the owner and how to remove it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import secrets
import socket
import sys
from typing import Any

from absl import logging

from sce_jax.workdir import layout

# Errors of os.link on a file system without hard links: the lock is then created O_EXCL.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK,
                  errno.EXDEV}
_TRIES = 5  # takeovers and races in a row before giving up


class WorkdirBusyError(ValueError):
    """Another run holds the workdir's lock (the message names it and what to do)."""


# ----------------------------------------------------------------------------- the owner


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start in clock ticks since boot) of a Linux process; None where not known."""
    line = _read_first_line(f"/proc/{int(pid)}/stat")
    if line is None or ")" not in line:
        return None
    fields = line.rsplit(")", 1)[1].split()  # the command (field 2) may hold spaces
    try:
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _host() -> dict[str, Any]:
    """What identifies this host's processes: the host name, its boot, the PID namespace."""
    return {"host": socket.gethostname(), "boot_id": _read_first_line(
        "/proc/sys/kernel/random/boot_id"), "pid_namespace": _pid_namespace()}


def this_process() -> dict[str, Any]:
    """The owner record of a lock taken by this process now."""
    stat = _proc_stat(os.getpid())
    return {**_host(), "pid": os.getpid(), "process_start": stat[1] if stat else None,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500], "token": secrets.token_hex(8)}


def _alive(pid: int, process_start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    if state == "Z":
        return False  # killed, not yet reaped by its parent
    return process_start is None or start == process_start  # else the pid was reused


def stale_reason(owner: dict[str, Any]) -> str | None:
    """Why the lock of ``owner`` is stale ("is no longer running", ...); None if it may be live
    or cannot be checked from here (another host or PID namespace, an unreadable lock)."""
    here = _host()
    if not owner or owner.get("host") != here["host"]:
        return None
    if owner.get("boot_id") and here["boot_id"] and owner["boot_id"] != here["boot_id"]:
        return "was taken before this host restarted"
    pid = owner.get("pid")
    if owner.get("pid_namespace") != here["pid_namespace"] or not isinstance(pid, int) or pid <= 0:
        return None
    if not _alive(pid, owner.get("process_start")):
        return "is no longer running"
    return None


def describe_owner(owner: dict[str, Any]) -> str:
    """``process 123 on host h (started ...: command)``, from a lock's owner record."""
    here = _host()
    where = "this host" if owner.get("host") == here["host"] else f"host {owner.get('host')}"
    if owner.get("host") == here["host"] and owner.get("pid_namespace") != here["pid_namespace"]:
        where += " (another PID namespace: a container)"
    started = f", started {owner['started']}" if owner.get("started") else ""
    command = f": {owner['command']}" if owner.get("command") else ""
    return f"process {owner.get('pid')} on {where}{started}{command}"


def _busy_message(workdir: str, path: str, owner: dict[str, Any]) -> str:
    remove = f"remove the lock (rm {path}) and rerun"
    if not owner or "pid" not in owner:
        return (f"the workdir {workdir} is locked by {path}, which does not say which run holds "
                f"it; if no run is using this workdir, {remove}")
    if owner.get("host") == _host()["host"] and owner.get("pid_namespace") == _pid_namespace():
        return (f"the workdir {workdir} is in use by another run ({describe_owner(owner)}); wait "
                "for it to end or stop it, or choose another --workdir")
    return (f"the workdir {workdir} is in use by another run ({describe_owner(owner)}), which "
            f"cannot be checked from here; if that run has ended (its host crashed or it was "
            f"killed), {remove}; else choose another --workdir")


# ----------------------------------------------------------------------------- the file


def _write_new(path: str, text: str) -> None:
    """Creates ``path`` (O_EXCL: FileExistsError if it exists) holding ``text``, on disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise
    os.close(fd)


def _temporary(path: str, kind: str = "") -> str:
    """A name beside ``path`` of the form remove_stale_temporaries clears after a kill."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}{kind}.tmp")


def _link_or_create(source: str, path: str, text: str) -> None:
    """Makes ``path`` the file ``source`` (holding ``text``) unless ``path`` exists."""
    try:
        os.link(source, path)
    except (FileExistsError, FileNotFoundError):
        pass  # taken by another run, or our temporary was cleared by a run that holds it
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        with contextlib.suppress(FileExistsError):
            _write_new(path, text)


def _try_create(path: str, text: str) -> None:
    """Creates the lock holding ``text`` if there is none (the caller reads back who won)."""
    tmp = _temporary(path)
    try:
        _write_new(tmp, text)
        _link_or_create(tmp, path, text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _read(path: str) -> str | None:
    """The lock's text; None when there is no lock."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _parse(text: str) -> dict[str, Any]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _set_aside(path: str, stale_text: str) -> bool:
    """Moves the stale lock away; True if the file moved was the stale one (else it is put back)."""
    aside = _temporary(path, ".stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another run moved it first
    try:
        moved = _read(aside)
        if moved == stale_text:
            return True
        _link_or_create(aside, path, moved or "")  # another run's new lock: put it back
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(aside)


def _missing_folders(workdir: str) -> list[str]:
    """The folders from ``workdir`` up that do not exist yet (deepest first)."""
    missing, folder = [], workdir
    while folder and not os.path.exists(folder) and folder != os.path.dirname(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _remove_empty(folders: list[str]) -> None:
    for folder in folders:  # deepest first; one that holds anything stays
        try:
            os.rmdir(folder)
        except OSError:
            return


class WorkdirLock:
    """The lock a run holds on its workdir; :meth:`release` (or ``with``) gives it back."""

    def __init__(self, path: str, text: str, created: list[str]):
        self.path, self.text, self.created = path, text, created
        self.owner = _parse(text)
        self.released = False

    def release(self) -> None:
        """Removes the lock file if it is still this run's, then the folders :func:`acquire`
        created if they are empty (a run that stopped before any work leaves no workdir)."""
        if self.released:
            return
        self.released = True
        try:
            if _read(self.path) == self.text:
                os.remove(self.path)
            else:
                logging.warning("%s is no longer this run's lock (another run took it over); "
                                "left as it is", self.path)
        except OSError as e:
            logging.warning("the lock %s could not be removed (%s); remove it before the next "
                            "run of this workdir", self.path, e)
        _remove_empty(self.created)

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(workdir: str) -> WorkdirLock:
    """Takes the lock of ``workdir`` (creating the folder), or stops naming the run holding it.

    A stale lock of a process of this host that is gone is taken over (with a warning).

    Raises:
      WorkdirBusyError: another run holds it (a live process of this host, or a lock of
        another host, which cannot be checked: the message says how to remove it).
      WorkdirWriteError: the workdir cannot be written (worded as
        :func:`~sce_jax.workdir.layout.check_writable` words it, which the run calls once it
        holds the lock: two runs probing at once could remove each other's probe file).
    """
    workdir = os.path.abspath(workdir)
    created = _missing_folders(workdir)
    path = os.path.join(workdir, layout.LOCK)
    mine = json.dumps(this_process(), sort_keys=True) + "\n"
    try:
        for _ in range(_TRIES):
            os.makedirs(workdir, exist_ok=True)
            try:
                _try_create(path, mine)
            except FileNotFoundError:
                continue  # the new folder was removed meanwhile (a run that stopped at once)
            text = _read(path)
            if text == mine:
                return WorkdirLock(path, mine, created)
            if text is None:
                continue  # released in between: try again
            owner = _parse(text)
            reason = stale_reason(owner)
            if reason is None:
                raise WorkdirBusyError(_busy_message(workdir, path, owner))
            if _set_aside(path, text):
                logging.warning("took over the stale lock %s: its run (%s) %s", path,
                                describe_owner(owner), reason)
        raise WorkdirBusyError(f"the workdir {workdir} is being taken by other runs at the same "
                               f"moment (its lock {path} changed {_TRIES} times while this run "
                               "tried to take it); start one run per workdir")
    except OSError as e:  # the lock is the first write: the probe's message
        _remove_empty(created)
        raise layout.WorkdirWriteError(
            e.errno, f"the workdir {workdir} cannot be written ({e.strerror or e}"
            f"{': ' + str(e.filename) if e.filename else ''}); choose a writable --workdir") from e
    except BaseException:
        _remove_empty(created)
        raise
