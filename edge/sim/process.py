"""The real agent as a child process on loopback, with network printers: for the crash test and the benchmark."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import aiohttp

_CONFIG = """
[agent]
store_id = "{store_id}"
data_dir = "{data_dir}"
log_format = "json"
log_level = "{log_level}"

[api]
port = {api_port}
token = "{token}"

[stations]
kitchen = "{kitchen}"
bar = "{kitchen}"

[receipts]
printer = "front"

[spool]
retry_base_s = 0.05
retry_max_s = 0.5
"""

_PRINTER = """
[printers.{name}]
type = "network"
host = "127.0.0.1"
port = {port}
status_timeout = 0.5
"""


def write_config(
    path: Path,
    *,
    data_dir: Path,
    api_port: int,
    token: str,
    printers: dict[str, int],
    store_id: str = "sim-store",
    log_level: str = "warning",
    extra: str = "",
    kitchen: str = "kitchen",
) -> Path:
    """A config with ``printers`` (name -> loopback port; must include ``kitchen``, the printer of the kitchen and bar
    stations, and front, the receipt printer) and ``extra`` TOML tables.

    Mode 0600: it holds the token.
    """
    text = _CONFIG.format(
        store_id=store_id, data_dir=data_dir, log_level=log_level, api_port=api_port, token=token, kitchen=kitchen
    )
    text += "".join(_PRINTER.format(name=name, port=port) for name, port in printers.items()) + extra
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file was already there with a wider mode
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


_PR_SET_PDEATHSIG = 1  # prctl(2)


@functools.cache
def end_with_parent() -> Callable[[], None] | None:
    """For the child: SIGTERM when the process that started it dies, even by SIGKILL (a benchmark run or a test worker
    killed at its timeout), instead of an orphan agent polling printers and holding a port. Linux only; libc is
    loaded here, once and before any fork, so the child only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child(Protocol):
    """What AgentProcess uses of its process: asyncio.subprocess.Process' part."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...

    async def wait(self) -> int: ...


class Starter(Protocol):
    """Another way to start `python -m edge ARGS` (the test suite's fork server, tests/warm.py)."""

    async def spawn(
        self, argv: Sequence[str], *, output: IO[Any], env: Mapping[str, str], nofile: int | None
    ) -> Child | None:
        """The process, with ``env`` added to the environment and stdout and stderr to ``output``; None when it cannot
        start it as an exec would (the caller execs)."""
        ...


class AgentProcess:
    """``python -m edge run`` with its output appended to ``log``; start() returns once /ready answers 200."""

    # None: each start execs Python (the benchmark, which measures starts). The test suite sets its fork server.
    starter: ClassVar[Starter | None] = None

    def __init__(
        self,
        config: Path,
        port: int,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        nofile: int | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """``env``: extra environment for the child (the benchmark's storage shim); ``nofile``: RLIMIT_NOFILE (soft and
        hard) for the child, e.g. to reach the fd limit quickly; ``wrap``: a command the agent's command line is
        appended to (e.g. ``unshare -m ... sh -c '...; exec "$@"' sh``, its own resolv.conf)."""
        self.config, self.port, self.log = config, port, log
        self.added_env = dict(env or {})
        self.nofile = nofile
        self.wrap = tuple(wrap)
        self.proc: Child | None = None

    async def start(self, timeout: float = 15.0, *, until: str = "/ready") -> None:  # noqa: ASYNC109 (tests' and bench helper)
        """Returns once ``until`` answers 200 (``/health``: the agent is up, whether or not it is ready)."""
        started = time.monotonic()
        argv = ("run", "--config", str(self.config))
        with self.log.open("ab") as out:
            self.proc = None
            if self.starter is not None and not self.wrap:
                self.proc = await self.starter.spawn(argv, output=out, env=self.added_env, nofile=self.nofile)
            if self.proc is None:
                limit = [] if self.nofile is None else ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"]
                self.proc = await asyncio.create_subprocess_exec(
                    *self.wrap,
                    *limit,
                    sys.executable,
                    "-m",
                    "edge",
                    *argv,
                    stdout=out,
                    stderr=out,
                    env={**os.environ, **self.added_env} if self.added_env else None,
                    preexec_fn=end_with_parent(),
                )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() - started < timeout:
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}{until}") as response:
                        if response.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"agent exited with {self.proc.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                    )
                await asyncio.sleep(0.01)
        raise TimeoutError(f"agent not ready after {timeout:g}s")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 35.0) -> int:  # noqa: ASYNC109 (tests' and bench helper)
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=timeout)

    async def close(self) -> None:
        """Make sure the process is gone, whatever state it is in."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                await self.terminate(timeout=10)
            except TimeoutError:
                await self.kill()
