"""systemd: the notify protocol over real datagram sockets, and unit files that pass systemd-analyze verify."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from edge.app import Agent
from edge.config import Settings
from edge.ops.measure import measure_startup
from edge.systemd import Notifier
from tests.helpers import TOKEN, receive
from tests.helpers import notify_socket as notify_socket_of

UNITS = Path(__file__).parents[2] / "systemd"


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """NOTIFY_SOCKET on a socket of the test's, with a 0.4 s watchdog."""
    with notify_socket_of(monkeypatch, watchdog_usec="400000") as sock:
        yield sock


async def test_agent_sends_ready_status_watchdog_and_stopping(
    notify_socket: socket.socket, make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """READY=1 with a STATUS line comes once the API listens; WATCHDOG=1 follows from the loop at half WatchdogSec;
    STOPPING=1 on stop."""
    agent = await make_agent()
    try:
        first = await receive(notify_socket, "READY=1")
        assert "READY=1" in first[0].split("\n")
        assert re.search(r"STATUS=\d of 2 printers online.*, 0 queued, 0 dead", first[0]), first[0]
        pings = await receive(notify_socket, "WATCHDOG=1", timeout=5)
        pings += await receive(notify_socket, "WATCHDOG=1", timeout=5)
        assert sum("WATCHDOG=1" in m for m in pings) >= 2
    finally:
        await agent.stop()
    assert any("STOPPING=1" in m for m in await receive(notify_socket, "STOPPING=1"))


def test_notifier_is_silent_without_systemd() -> None:
    """Without NOTIFY_SOCKET nothing is sent and nothing fails; a watchdog for another PID is ignored."""
    assert Notifier({}).notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"}).watchdog_s == 1.0


def test_real_process_notifies_a_path_socket(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    """The agent as a subprocess, as systemd starts it: READY=1 over a filesystem socket, exits 0 after STOPPING=1 on
    SIGTERM."""
    settings = make_settings()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "test-store"\ndata_dir = "{tmp_path / "data"}"\nlog_format = "json"\n'
        f'[api]\nport = 0\ntoken = "{TOKEN}"\n'
        + "".join(
            f'[printers.{n}]\ntype = "network"\nhost = "127.0.0.1"\nport = {p.port}\n'
            for n, p in settings.printers.items()
        )
    )
    result = measure_startup(config, idle_s=0.5, timeout_s=30)
    assert result.exit_code == 0
    assert result.ready_s < 30
    assert result.idle_rss_kib > 1000
    assert any("READY=1" in m for m in result.messages)
    assert "STOPPING=1" in result.messages[-1]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: apt-get install -y systemd"
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every unit and timer passes `systemd-analyze verify` without a single warning (ExecStart pointed at this venv's
    edge)."""
    edge = Path(sys.executable).parent / "edge"
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/edge-agent/current/bin/edge", str(edge)))
    names = sorted(str(p) for p in tmp_path.iterdir())
    assert len(names) == 5
    result = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def test_agent_unit_settings() -> None:
    """The agent unit is Type=notify with a watchdog, restarts on failure, stops after the 30 s drain, and runs
    hardened."""
    text = (UNITS / "edge-agent.service").read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure"
    assert int(settings["TimeoutStopSec"]) > 30
    assert int(settings["WatchdogSec"]) > 0
    assert settings["ProtectSystem"] == "strict" and settings["ReadWritePaths"] == "/var/lib/edge"
    assert settings["SupplementaryGroups"] == "lp dialout"
    assert settings["NoNewPrivileges"] == "yes"


def test_the_runtime_state_the_agent_and_its_health_check_keep_outlives_each_run() -> None:
    """Both keep what they mailed while the data directory refuses writes (a full or read-only card) in the runtime
    directory, so the next run of this boot does not mail it again: the agent its storage alert, the health check its
    agent-down alert. With PrivateTmp each run gets a /tmp of its own, removed when it stops: without a preserved
    RuntimeDirectory (RUNTIME_DIRECTORY) that state was gone at every run, and the mail went again."""
    for name in ("edge-agent.service", "edge-health-check.service"):
        text = (UNITS / name).read_text()
        settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        assert settings["PrivateTmp"] == "yes"
        assert settings.get("RuntimeDirectory") == "edge", name
        assert settings.get("RuntimeDirectoryPreserve") == "yes", name  # a oneshot stops after each run
