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


# One socket per port handed out, bound and never listening, kept for the life of the process that asked.
_RESERVED: list[socket.socket] = []


def free_port() -> int:
    """A loopback port nothing uses now, for a server started later that may stop and start on it again. Picked at
    random below the ephemeral range (a port there may go to any outgoing connection or port-0 bind while the server
    is down) and kept reserved: a socket of this process stays bound to it, with SO_REUSEADDR set after the bind, so
    a server that sets it too (the agent, the simulators, Mosquitto) can listen on the port, and another free_port(),
    whose probe does not set it, never picks it, also while the server is down. Before, only a port in use at the
    time was passed over: another test worker picked one whose agent was between a kill and its restart, and that
    test's orders went to the other agent (two tests, one port, both failed)."""
    low, _ = ephemeral_range()
    if low - _LOWEST < 1000:  # an unusual range leaves no room below it: the kernel's choice, as before
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    for _ in range(100):
        port = random.randrange(_LOWEST, low)
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.close()
            continue  # in use, or reserved by another worker
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _RESERVED.append(probe)
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
