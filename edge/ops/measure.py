"""Measures a real agent process the way systemd sees it: time to READY=1, idle memory (RSS), clean stop."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class StartupMeasurement:
    ready_s: float  # process spawned -> READY=1 received (database open, API listening)
    idle_rss_kib: int  # VmRSS after idling ``idle_s`` seconds past READY
    stop_s: float  # SIGTERM -> process exited
    exit_code: int
    messages: tuple[str, ...]  # every sd_notify datagram received, in order


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def measure_startup(
    config: Path, *, idle_s: float = 3.0, timeout_s: float = 60.0, env: Mapping[str, str] | None = None
) -> StartupMeasurement:
    """Runs ``python -m edge run --config CONFIG`` with NOTIFY_SOCKET on a datagram socket of our own, as systemd would.

    Blocking on purpose (a benchmark helper, not agent code). Raises TimeoutError if READY=1 does not come.
    """
    with tempfile.TemporaryDirectory(prefix="edge-notify-") as tmp:
        address = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        messages: list[str] = []

        def receive_until(wanted: str, deadline: float) -> None:
            while not any(wanted in m.split("\n") for m in messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {wanted} from the agent within {timeout_s:g}s; got {messages}")
                sock.settimeout(left)
                try:
                    messages.append(sock.recv(4096).decode())
                except TimeoutError:
                    continue

        child_env = {**os.environ, **(env or {}), "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000"}
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            receive_until("READY=1", started + timeout_s)
            ready_s = time.monotonic() - started
            time.sleep(idle_s)
            rss = _rss_kib(process.pid)
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            receive_until("STOPPING=1", stopping + timeout_s)
            code = process.wait(timeout=timeout_s)
            stop_s = time.monotonic() - stopping
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            sock.close()
    return StartupMeasurement(
        ready_s=ready_s, idle_rss_kib=rss, stop_s=stop_s, exit_code=code, messages=tuple(messages)
    )
