"""Loopback ports for what the tests, the demo and the benchmark start: servers that stop and start again on their
port (an agent killed and restarted, a broker restarted, a printer switched off, a central line cut) must find it free,
with the test workers binding and connecting meanwhile."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 20000  # below the usual ephemeral range (32768-60999) and above the well-known services


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out for port-0 binds and outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback port nothing uses now, for a server started later that may stop and start on it again. Picked at
    random below the ephemeral range: a port there may go to any outgoing connection or port-0 bind (another test's
    simulator) while the server is down, and then it cannot start again; here only another free_port() could pick it,
    one in thousands."""
    low, _ = ephemeral_range()
    if low - _LOWEST < 1000:  # an unusual range leaves no room below it: the kernel's choice, as before
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    for _ in range(100):
        port = random.randrange(_LOWEST, low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (maybe another worker's agent)
            return port
    raise OSError(f"no free loopback port between {_LOWEST} and {low} after 100 tries")


class PortHold:
    """The port of a server that is down for a while (a printer switched off, a line cut), kept: a socket bound to it
    (SO_REUSEADDR), not listening, so connections are refused as they would be, and no other socket gets the port
    meanwhile (a port let go could go to another test's simulator, which would then answer this agent). The server
    binds its listener again beside it (both SO_REUSEADDR, this one never listening), then releases it."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def hold(self, host: str, port: int) -> None:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            self._sock = sock

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
