"""Script runs as real processes, forked from an interpreter that has already imported JAX.

A test that runs ``scripts/explain.py`` needs a process of its own (to kill it, to send it a
signal, to see its exit code and output), but a fresh interpreter spends ~4 s of its ~10 s
importing jax, flax, optax and sce_jax. A *warm server* (``python -m tests.warm_start
SOCKET``) imports them once and forks a child per request; the child sets the requested
environment, working directory and ``sys.argv``, runs the script as ``__main__``, runs the
``atexit`` handlers and exits with the script's code, as an interpreter would. The server
reaps it and reports its exit status (``-N`` for a signal, as :class:`subprocess.Popen`
does). :class:`WarmProcess` is the test's handle: ``pid``, ``poll``, ``wait``,
``send_signal``, ``kill``, ``communicate`` (text output), ``returncode``.

What makes a fork safe here: the server forks holding no thread but OpenBLAS's pool (which
numpy starts and OpenBLAS re-creates after a fork): no JAX backend, no other pool, checked in
``/proc/self/task`` before it serves, and JAX reads some
settings from the environment when it is imported, so a server serves one environment: every
variable except the run-time ones (``SCE_TEST_*``, read when the hooks are installed) is part
of its key, and another environment gets another server. ``SCE_TEST_COLD_START=1`` runs every
request as a plain subprocess instead.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from tests import ROOT

RUNTIME_VARIABLES = ("SCE_TEST_",)  # read after the fork, so not part of a server's key
READY = b"warm server ready\n"
_SERVERS: dict[tuple, "_Server"] = {}


# ----------------------------------------------------------------------------- the server


def _preload() -> None:
    """What every script run imports; nothing here may start a thread or a JAX backend."""
    import absl.app  # noqa: F401
    import absl.flags  # noqa: F401
    import jax  # noqa: F401
    import PIL.Image  # noqa: F401

    import sce_jax.launch.command_line  # noqa: F401
    import sce_jax.runs.loop  # noqa: F401
    import tests.multiprocess_worker  # noqa: F401


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested process, run it, exit. Never returns."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        try:
            if request["kind"] == "worker":  # tests/multiprocess_worker.py: hooks, then explain.py
                from tests import multiprocess_worker
                multiprocess_worker.main(request["args"])
            else:  # python SCRIPT ARGS: the script's folder first on the path, as for a script
                import runpy
                sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
                sys.argv = [request["script"], *request["args"]]
                runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # what an interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
        import threading
        for thread in threading.enumerate():  # an interpreter waits for them before atexit
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        try:
            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    """Accepts requests on the Unix socket ``path`` until the parent process goes away."""
    parent = os.getppid()
    import numpy  # noqa: F401  (OpenBLAS starts its pool here; it re-creates it after a fork)
    allowed = _threads()
    _preload()
    if _threads() != allowed:
        sys.stderr.write(f"warm server: {_threads() - allowed} threads started by the imports; "
                         "forking is unsafe\n")
        sys.exit(3)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    os.write(1, READY)
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        readable, _, _ = select.select([listener], [], [], 0.02)
        if readable:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in children.values():
                    other.close()
                conn.close()
                _run_child(json.loads(message), fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"pid": pid}).encode())
            children[pid] = conn
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
                except OSError:  # the test gave up on it
                    pass
                conn.close()
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- the client


class _Server:
    def __init__(self, env: dict[str, str]):
        self.folder = tempfile.mkdtemp(prefix="sce_jax_warm_")
        self.path = os.path.join(self.folder, "socket")
        log = os.path.join(self.folder, "server.log")
        with open(log, "wb") as errors:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.warm_start", self.path], cwd=ROOT,
                                         env=env, stdout=subprocess.PIPE, stderr=errors)
        line = self.proc.stdout.readline()
        if line != READY:
            self.proc.wait(timeout=60)
            with open(log) as f:
                raise RuntimeError(f"the warm server did not start ({self.proc.returncode}):\n"
                                   f"{f.read()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        import shutil
        shutil.rmtree(self.folder, ignore_errors=True)


def _server_for(env: dict[str, str]) -> _Server:
    key = tuple(sorted((k, v) for k, v in env.items() if not k.startswith(RUNTIME_VARIABLES)))
    server = _SERVERS.get(key)
    if server is None or server.proc.poll() is not None:
        server = _SERVERS[key] = _Server({k: v for k, v in key})
    return server


@atexit.register
def _close_servers() -> None:
    for server in _SERVERS.values():
        server.close()
    _SERVERS.clear()


class WarmProcess:
    """A script run in a child of a warm server; the subset of :class:`subprocess.Popen` the
    tests use (text output)."""

    def __init__(self, request: dict, env: dict[str, str]):
        self.args = request
        server = _server_for(env)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket.connect(server.path)
        socket.send_fds(self._socket, [json.dumps(dict(request, env=env)).encode()], [stdin, out_w, err_w])
        for fd in (stdin, out_w, err_w):
            os.close(fd)
        self.pid = json.loads(self._socket.recv(4096))["pid"]
        self.returncode: int | None = None
        self._pipes = {out_r: bytearray(), err_r: bytearray()}
        self._open = [out_r, err_r]
        self._out, self._err = out_r, err_r

    def _pump(self, timeout: float | None) -> None:
        """Reads what is ready (output, the exit status) for up to ``timeout`` seconds."""
        watch = self._open + ([self._socket] if self.returncode is None else [])
        if not watch:
            return
        readable, _, _ = select.select(watch, [], [], timeout)
        for fd in readable:
            if fd is self._socket:
                message = self._socket.recv(4096)
                self.returncode = json.loads(message)["returncode"] if message else -signal.SIGKILL
                self._socket.close()
            else:
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    self._pipes[fd] += chunk
                else:
                    self._open.remove(fd)
                    os.close(fd)

    def poll(self) -> int | None:
        while self.returncode is None:
            readable, _, _ = select.select([self._socket], [], [], 0)
            if not readable:
                break
            self._pump(0)
        return self.returncode

    def _until(self, done, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args.get("script", "worker"), timeout)
            self._pump(left)

    def wait(self, timeout: float | None = None) -> int:
        self._until(lambda: self.returncode is not None, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._until(lambda: self.returncode is not None and not self._open, timeout)
        return (self._pipes[self._out].decode(errors="replace"),
                self._pipes[self._err].decode(errors="replace"))

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def start_worker(args: list[str], env: dict[str, str], cwd: str = ROOT):
    """``python -m tests.multiprocess_worker ARGS`` with ``env``: warm unless told otherwise."""
    if os.environ.get("SCE_TEST_COLD_START") == "1":
        return subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", *args], cwd=cwd,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return WarmProcess({"kind": "worker", "args": list(args), "cwd": cwd}, env)


def start_script(script: str, args: list[str], env: dict[str, str] | None = None, cwd: str = ROOT):
    """``python SCRIPT ARGS`` started (output captured as text): warm unless told otherwise."""
    env = dict(os.environ if env is None else env)
    if os.environ.get("SCE_TEST_COLD_START") == "1":
        return subprocess.Popen([sys.executable, script, *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return WarmProcess({"kind": "script", "script": script, "args": list(args), "cwd": cwd}, env)


def run_script(script: str, args: list[str], env: dict[str, str] | None = None, cwd: str = ROOT,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` to the end, like :func:`subprocess.run` with captured text output."""
    proc = start_script(script, args, env, cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess([sys.executable, script, *args], proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
