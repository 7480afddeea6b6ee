"""A data or backup directory the systemd unit's sandbox does not let the agent write (ProtectSystem=strict: only
its ReadWritePaths, /var/lib/edge, are writable; systemd.exec(5)) is not a failing SD card. The unit's read-only view
is made here as systemd makes it: a read-only bind mount in the process's own mount namespace, over a file system that
is itself writable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from tests.helpers import TOKEN, edge_blocking


def sandboxed(read_only: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGV` with ``read_only`` bind-mounted read-only in a mount namespace of its own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to make the unit's read-only view")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97; shift; exec "$@"'  # 97: no mount here
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(read_only), sys.executable, "-m", "edge", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 97:
        pytest.skip("mount not allowed here")
    return done


def config(tmp_path: Path, printers: dict[str, SimPrinter], data: Path, backups: Path | None = None) -> Path:
    return write_config(
        tmp_path / "edge.toml",
        data_dir=data,
        api_port=9,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        extra=f'[backup]\ndir = "{backups}"\n' if backups else "",
    )


def test_a_data_directory_outside_the_units_writable_paths_is_told_as_that_not_as_a_failing_card(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`agent.data_dir = "/srv/edge"`, made and chowned as the docs said: every check by hand passed, and under the
    unit the agent stopped (exit 2, not restarted) saying the SD card was failing, to reboot or replace it (the
    upgrade79 probe, S2). It says the directory is outside what the service may write, and how to add it."""
    data = tmp_path / "srv-edge"
    data.mkdir()
    started = sandboxed(data, "run", "--config", str(config(tmp_path, printers, data)))
    assert started.returncode == 2, started.stderr
    [line] = [line for line in started.stderr.splitlines() if str(data) in line]
    assert "ReadWritePaths" in line and "systemctl edit edge-agent" in line, line
    assert "SD card" not in line and "reboot" not in line, line


def test_a_backup_directory_outside_the_units_writable_paths_is_told_as_that(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`backup.dir` on a stick chowned as the docs said: the nightly backup under its unit said "remount it
    read-write", which was never the trouble (the upgrade79 probe, S2)."""
    data, stick = tmp_path / "data", tmp_path / "usb"
    data.mkdir()
    stick.mkdir()
    written = config(tmp_path, printers, data, stick)
    assert edge_blocking("migrate", "--config", str(written)).returncode == 0  # outside the unit: a database
    backed_up = sandboxed(stick, "backup", "--config", str(written))
    assert backed_up.returncode == 1, backed_up.stderr
    assert "ReadWritePaths" in backed_up.stderr and "remount" not in backed_up.stderr, backed_up.stderr
