"""`edge doctor` on a network printer it cannot reach says where it looked and why, in the technician's words: a name
that does not resolve, a port nothing listens on, an address where nothing answers. Before, each was only
`FAIL printer kitchen offline`, and the reason was in the agent's log alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.ports import free_port
from tests.config.box import NoSuchNameDns, unshare_permitted, write_box_config
from tests.helpers import edge_blocking

pytestmark = pytest.mark.slow(seconds=6)


def _kitchen(host: str, port: int) -> dict[str, object]:
    return {"kitchen": {"type": "network", "host": host, "port": port, "connect_timeout": 1, "status_timeout": 0.5}}


def _printer_line(done: subprocess.CompletedProcess[str]) -> str:
    [line] = [line for line in done.stdout.splitlines() if "printer kitchen" in line]
    return line


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose listener takes no more connections (its backlog is full): a connect gets no answer, as
    from an address where no printer is switched on."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    yield port
    for sock in [*fillers, server]:
        sock.close()


def test_a_printer_port_nothing_listens_on_is_named_with_what_to_check(tmp_path: Path) -> None:
    port = free_port()
    config = write_box_config(tmp_path, printers=_kitchen("127.0.0.1", port))
    done = edge_blocking("doctor", "--config", str(config), timeout=60)
    assert done.returncode == 1, done.stderr
    line = _printer_line(done)
    assert line.startswith("FAIL") and f"offline: 127.0.0.1:{port} refuses connections" in line, line
    assert "wrong port (printers.kitchen.port), or not a network printer" in line, line


def test_a_printer_address_where_nothing_answers_is_named_with_what_to_check(tmp_path: Path, silent_port: int) -> None:
    config = write_box_config(tmp_path, printers=_kitchen("127.0.0.1", silent_port))
    done = edge_blocking("doctor", "--config", str(config), timeout=60)
    assert done.returncode == 1, done.stderr
    line = _printer_line(done)
    assert f"offline: no answer from 127.0.0.1:{silent_port} in 1s" in line, line
    assert "the printer is off, or printers.kitchen.host is the wrong address" in line, line


@pytest.mark.skipif(not unshare_permitted(), reason="needs `unshare -m` (root) to give doctor its own resolv.conf")
def test_a_printer_name_that_does_not_resolve_is_named_with_the_setting(tmp_path: Path) -> None:
    dns = NoSuchNameDns(tmp_path)
    config = write_box_config(tmp_path, printers=_kitchen("drucker-kueche.invalid", 9100))
    try:
        done = subprocess.run(
            [*dns.wrap(), sys.executable, "-m", "edge", "doctor", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        dns.close()
    assert done.returncode == 1, done.stderr
    line = _printer_line(done)
    assert "offline: drucker-kueche.invalid:9100: cannot resolve drucker-kueche.invalid: no such name" in line, line
    assert line.endswith("check printers.kitchen.host"), line


@pytest.mark.parametrize("command", [("config", "check"), ("doctor",)])
def test_an_impossible_ipv4_printer_address_stops_the_check_naming_the_key(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = write_box_config(tmp_path, printers=_kitchen("192.168.1.300", 9100))
    done = edge_blocking(*command, "--config", str(config), timeout=60)
    assert done.returncode == 2, done.stdout
    refused = "edge: config printers.kitchen.host: 192.168.1.300 is not an IPv4"
    assert done.stderr.strip().startswith(refused), done.stderr
