"""api.host that cannot be listened on: an impossible IPv4 address, a name that does not resolve, an address of
another box. Each is one line naming api.host and exit 2 (a config error: systemd does not restart the agent in a
loop, RestartPreventExitStatus=2), not a raw `[Errno -2] Name or service not known` and exit 1 (restarted every 2 s)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.box import NoSuchNameDns, unshare_permitted, write_box_config
from tests.helpers import edge_blocking


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    """What the command ends with (`edge run` writes its log lines before it)."""
    return done.stderr.strip().splitlines()[-1]


def test_an_impossible_ipv4_api_host_is_refused_by_the_check_and_the_start(tmp_path: Path) -> None:
    """192.168.1.300 is no address (300 > 255); glibc takes it for a name and asks DNS. The check refuses it, and so
    the start."""
    config = write_box_config(tmp_path, api={"host": "192.168.1.300"})
    for command in (("config", "check"), ("run",)):
        done = edge_blocking(*command, "--config", str(config), timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        line = _last_line(done)
        assert command == ("run",) or done.stderr.count("\n") == 1, done.stderr
        assert "api.host" in line and "192.168.1.300" in line and "0-255" in line, line


def test_an_api_host_that_is_not_an_address_of_this_box_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    """192.0.2.1 (a documentation address) is a valid address, but not this box's: the bind fails (EADDRNOTAVAIL)."""
    config = write_box_config(tmp_path, api={"host": "192.0.2.1"})
    done = edge_blocking("run", "--config", str(config), timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = _last_line(done)
    assert line.startswith("edge: config api.host: 192.0.2.1 is not an address of this box"), line


@pytest.mark.skipif(not unshare_permitted(), reason="needs `unshare -m` (root) to give the agent its own resolv.conf")
def test_an_api_host_that_does_not_resolve_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    """edge-box.invalid, looked up at a loopback DNS server that knows no name. The check does not look names up (a
    box without internet would wait on DNS, and a check must not pass or fail by the network of the moment); the
    start's lookup is the agent's own bind."""
    dns = NoSuchNameDns(tmp_path)
    config = write_box_config(tmp_path, api={"host": "edge-box.invalid"})
    try:
        done = subprocess.run(
            [*dns.wrap(), sys.executable, "-m", "edge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        dns.close()
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = _last_line(done)
    assert line.startswith("edge: config api.host: cannot resolve edge-box.invalid: no such name"), line


def test_an_api_port_another_program_holds_names_the_port_and_keeps_exit_1(tmp_path: Path) -> None:
    """Another program listens on api.port (an old agent still stopping, the till's own service): the start ends with
    one line naming api.port, the port and how to find who holds it, exit 1 so systemd tries again (it may be gone in a
    moment). Before (the upgrade73 probe): `edge: [Errno 98] Address already in use`, naming no setting."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        config = write_box_config(tmp_path, api={"host": "127.0.0.1", "port": port})
        done = edge_blocking("run", "--config", str(config), timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1, (done.stdout, done.stderr)
    line = _last_line(done)
    assert line.startswith(f"edge: api.port {port} on 127.0.0.1 is in use by another program"), line
    assert f"ss -ltnp 'sport = :{port}'" in line, line
