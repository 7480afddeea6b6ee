"""Ports for the simulators and agents the tests start: never one the kernel may hand to someone else meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys

from edge.sim.ports import PortHold, ephemeral_range, free_port


def test_free_port_is_below_the_ephemeral_range_and_free() -> None:
    """An agent or broker restarted on its port must find it free: a port in the kernel's ephemeral range is handed
    to every outgoing connection and every bind to port 0 (another worker's simulator) while the server is down."""
    low, _ = ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert all(1024 <= port < low for port in ports), sorted(ports)
    assert len(ports) > 40  # spread out: two workers asking at once rarely get the same one
    for port in list(ports)[:5]:
        with socket.socket() as server:  # as the agent and the simulators bind
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen(1)


def probe_elsewhere(port: int) -> str:
    """What another test worker's free_port() finds when it tries ``port``: a process of its own."""
    code = (
        "import socket\n"
        f"try:\n    socket.socket().bind(('127.0.0.1', {port}))\n    print('free')\n"
        "except OSError:\n    print('taken')"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()


def test_a_port_handed_out_is_never_handed_out_again_while_its_server_is_down() -> None:
    """A port stays its asker's for the life of the process: another worker's free_port() passes it over while its
    server listens and while it is down (an agent killed and not yet restarted); the server listens on it again.
    Before, a port was passed over only while in use: two tests that restart their agents got the same one, and one
    test's orders went to the other's agent."""
    port = free_port()
    assert probe_elsewhere(port) == "taken"
    for _ in range(2):
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen(1)
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
            assert probe_elsewhere(port) == "taken"
        assert probe_elsewhere(port) == "taken"  # down: still not anyone else's


def test_a_held_port_refuses_connections_and_cannot_be_taken_until_released() -> None:
    port = free_port()
    hold = PortHold()
    hold.hold("127.0.0.1", port)
    try:
        with socket.socket() as client, socket.socket() as other:
            assert client.connect_ex(("127.0.0.1", port)) != 0  # refused
            try:
                other.bind(("127.0.0.1", port))
                raise AssertionError("the held port was taken")
            except OSError:
                pass
        with socket.socket() as server:  # the owner binds its listener beside the hold, then releases it
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen(1)
            hold.release()
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
    finally:
        hold.release()
