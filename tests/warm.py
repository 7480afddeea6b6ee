"""The real agent started the way a fork server starts it: for the tests, the agent's processes without their import.

Every `python -m edge ...` a test starts imported the same ~300 modules again: about 0.4 s of CPU each, some 250 times
a run, a sixth of the suite's CPU on two cores. Here one process per test worker (the warm process) imports the agent's
modules once and, for each start, forks; the child takes the test's command line, environment, working directory and
standard streams and runs the agent's own entry point, as `python -m edge` does (``edge/__main__.py``): the same code
from config to exit status, in a process the test signals, kills and waits for by its pid. (Android's zygote, Python's
multiprocessing "forkserver" start method.)

What a fork cannot give, these starts leave to a real exec (``Starter.takes``): an environment that changes how Python
itself starts (``PYTHON*``: the import log some tests read), a preloaded library (``LD_*``: the storage shim) or
another temporary folder; and callers that wrap the command (``unshare``) or measure a start exec anyway. Modules the
agent imports lazily (python-escpos, jinja2, Pillow, paho) are not imported here: each child imports them as a real
start does, after setting up python-escpos' cache folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from edge.sim.process import end_with_parent

_MAIN = str(Path(__file__).parents[1] / "edge" / "__main__.py")  # sys.argv[0] of `python -m edge`
# Environment that changes the interpreter's own start, its imports or the temporary folder: only an exec honours it.
_EXEC_ONLY = ("PYTHON", "LD_", "TMPDIR")


def _die_with_parent() -> None:
    if (end := end_with_parent()) is not None:
        end()


# ---- the warm process ------------------------------------------------------------------------------------------------


def _serve(listener: socket.socket) -> dict[str, Any]:
    """Forks a child per request; returns only in a child, with its request. The parent answers each request with the
    child's pid, then with its wait status once it has ended."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection its starter waits on
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is wake_r:
                os.read(wake_r, 512)
                _reap(waiting)
                continue
            conn, _ = listener.accept()
            fds: list[int] = []
            try:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(data)
                pid = os.fork()
            except (OSError, ValueError):  # a request that could not be read: its starter sees the connection end
                pid = -1
            if pid == 0:
                selector.close()
                listener.close()
                conn.close()
                for child_conn in waiting.values():
                    child_conn.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                for fd in set(fds):
                    if fd > 2:
                        os.close(fd)
                return dict(request)
            for fd in fds:
                os.close(fd)
            if pid < 0:
                conn.close()
                continue
            with contextlib.suppress(OSError):
                conn.sendall(f"{pid}\n".encode())
            waiting[pid] = conn


def _reap(waiting: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _become(request: Mapping[str, Any]) -> None:
    """The child turns into the process the test asked for, as an exec would have left it."""
    _die_with_parent()  # the warm process ends with the test worker (SIGTERM): so do the agents it started
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if (nofile := request.get("nofile")) is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    random.seed()  # not the warm process' sequence, the same in every child
    tempfile.tempdir = None
    sys.argv = [_MAIN, *request["argv"]]


def main() -> None:
    _die_with_parent()
    import edge.app  # what `edge run` imports before READY; the lazy parts stay lazy
    import edge.cli

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sys.argv[1])
    listener.listen(64)
    request = _serve(listener)
    _become(request)
    raise SystemExit(edge.cli.main(request["argv"]))


# ---- the test side ---------------------------------------------------------------------------------------------------


class WarmChild:
    """What a test holds of an agent the warm process started: asyncio.subprocess.Process' pid, returncode (set when
    the child has ended, as asyncio's child watcher does), send_signal, kill, terminate and wait."""

    def __init__(self, pid: int, status: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = asyncio.ensure_future(self._read_status(status, writer))

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    async def _read_status(self, status: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        try:
            line = await status.readline()
        finally:
            writer.close()
        if not line:
            raise RuntimeError(f"the warm process ended before agent {self.pid}")
        self.returncode = int(line)
        return self.returncode


class Starter:
    """Starts `python -m edge ARGS` children from one warm process, started with it and stopped by ``close``."""

    def __init__(self, folder: Path) -> None:
        """To be made on the thread that stays (the test worker's main thread): the warm process ends when the thread
        that started it does (PR_SET_PDEATHSIG), so it must not be a thread pool's."""
        self.socket = folder / "warm.sock"
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.warm", str(self.socket)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[1],
            preexec_fn=_die_with_parent,
        )
        assert self._server.stdout is not None
        if self._server.stdout.readline() != b"ready\n":
            raise RuntimeError(f"the warm process did not start ({self._server.wait()})")

    @staticmethod
    def takes(env: Mapping[str, str] | None) -> bool:
        """Whether a fork gives what ``env`` (the variables added to the test's environment) asks for."""
        return not env or not any(name.startswith(_EXEC_ONLY) for name in env)

    async def spawn(
        self, argv: Sequence[str], *, output: IO[Any], env: Mapping[str, str], nofile: int | None
    ) -> WarmChild | None:
        """``argv`` after `python -m edge`, stdout and stderr to ``output``; ``env``: added to the test's current
        environment (os.environ as it is now, with what the test set). None when ``env`` needs an exec."""
        if not self.takes(env):
            return None
        conn = await asyncio.to_thread(self._send, argv, [output.fileno()] * 2, env, None, nofile)
        conn.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        line = await reader.readline()
        if not line:
            writer.close()
            raise RuntimeError("the warm process did not start the agent")
        return WarmChild(int(line), reader, writer)

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path | None, timeout: float
    ) -> subprocess.CompletedProcess[str] | None:
        """`python -m edge ARGS` to its end, as subprocess.run(capture_output=True, text=True) (blocking: a coroutine
        runs it in a thread); past ``timeout`` seconds the child is killed and TimeoutError raised. None when ``env``
        needs an exec."""
        if not self.takes(env):
            return None
        pipes = [os.pipe() for _ in range(2)]
        try:
            conn = self._send(argv, [w for _, w in pipes], env, cwd, None)
        finally:
            for _, w in pipes:
                os.close(w)
        deadline = time.monotonic() + timeout
        output = {r: bytearray() for r, _ in pipes}
        try:
            with conn, conn.makefile("rb") as answers, selectors.DefaultSelector() as selector:
                pid = int(answers.readline() or "0")
                for r in output:
                    selector.register(r, selectors.EVENT_READ)
                while pid and selector.get_map():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        raise TimeoutError(f"edge {' '.join(argv)} still ran after {timeout:g} s")
                    for key, _ in selector.select(left):
                        if chunk := os.read(key.fd, 65536):
                            output[key.fd] += chunk
                        else:
                            selector.unregister(key.fd)
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                status = answers.readline()
        finally:
            for r, _ in pipes:
                os.close(r)
        if not pid or not status:
            raise RuntimeError(f"the warm process did not run edge {' '.join(argv)} to its end")
        out, err = (bytes(output[r]).decode() for r, _ in pipes)
        return subprocess.CompletedProcess(argv, int(status), out, err)

    def _send(
        self,
        argv: Sequence[str],
        outs: list[int],
        env: Mapping[str, str] | None,
        cwd: Path | None,
        nofile: int | None,
    ) -> socket.socket:
        """Asks the warm process for a child; returns the (blocking) connection its pid and exit status come on."""
        request = {
            "argv": list(argv),
            "env": {**os.environ, **(env or {})},
            "cwd": str(cwd or os.getcwd()),
            "nofile": nofile,
        }
        stdin = os.open(os.devnull, os.O_RDONLY)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self.socket))
            socket.send_fds(conn, [json.dumps(request).encode()], [stdin, *outs])
        except OSError:
            conn.close()
            raise
        finally:
            os.close(stdin)
        return conn

    def close(self) -> None:
        self._server.terminate()
        self._server.wait(10)


if __name__ == "__main__":
    main()
