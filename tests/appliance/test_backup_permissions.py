"""`sudo edge backup` and `sudo edge restore` act as the agent's user (the data directory's owner): a file or a folder
that user cannot read or write is named in one line that says what to do, never called a damaged backup and never
a raw `[Errno …]`.

These run the real CLI as root, as a technician's `sudo` does: it drops to the agent's user (a real system user made
with useradd, tests/appliance/conftest.py) before it touches a file, so the kernel refuses it as it would on a box."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.printer import SimPrinter
from tests.appliance.conftest import SystemUser
from tests.helpers import agent_process, edge, edge_backup, small_disk


def _box(base: Path, user: SystemUser, printers: dict[str, SimPrinter], extra: str = "") -> Path:
    """A config in ``base`` whose data directory belongs to ``user``; the config too, as install.sh leaves it (one the
    agent's user cannot read is refused)."""
    data = base / "data"
    data.mkdir()
    os.chown(data, user.uid, user.gid)
    config = agent_process(base, printers, extra=extra).config
    os.chown(config, user.uid, user.gid)
    return config


async def test_restore_of_a_file_the_agents_user_cannot_read_says_so_not_damaged(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """The technician copies last night's backup as root (mode 0600, root's) and runs `sudo edge restore` on it. The
    command, now the agent's user, cannot open it: one line naming the file, the user and what to do, exit 1, nothing
    written. Made readable, the same file restores. Before: "…: not a readable SQLite database: unable to open
    database file", as if the backup were damaged."""
    config = _box(system_user.home, system_user, printers)
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    backup = await edge_backup(config)
    copy = system_user.home / "copy.db"
    shutil.copy(backup, copy)
    os.chown(copy, 0, 0)
    copy.chmod(0o600)
    data = system_user.home / "data"
    before = sorted(p.name for p in data.iterdir())

    refused = await edge("restore", str(copy), "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = [line for line in refused.stderr.splitlines() if not line.startswith("edge: running as")]
    assert said == [
        f"edge: cannot read {copy} as user {system_user.name}: copy it somewhere that user can read, "
        f"or chmod a+r {copy}"
    ], refused.stderr
    assert sorted(p.name for p in data.iterdir()) == before

    copy.chmod(0o644)
    restored = await edge("restore", str(copy), "--config", str(config))
    assert restored.returncode == 0, restored.stderr


async def test_backup_into_a_folder_root_owns_names_the_user_and_the_chown(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """`backup.dir` on a USB stick root mounted (its root folder root's, 0755): `sudo edge backup`, as the agent's
    user, cannot make its folder there. One line: the directory, the user, the chown; exit 1. Before: `[Errno 13]
    Permission denied: '/…/stick/edge'`."""
    stick = system_user.home / "stick"
    stick.mkdir(mode=0o755)
    config = _box(system_user.home, system_user, printers, extra=f'[backup]\ndir = "{stick / "edge"}"\n')
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    refused = await edge("backup", "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = [line for line in refused.stderr.splitlines() if not line.startswith("edge: running as")]
    assert said == [
        f"edge: the backup directory {stick / 'edge'} is not writable by user {system_user.name}: chown "
        f"{system_user.name}: {stick}, or set backup.dir elsewhere; nothing written"
    ], refused.stderr
    assert list(stick.iterdir()) == []


@pytest.fixture
def read_only_stick(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system with an `edge` folder, mounted read-only, as a USB stick write-protected."""
    with small_disk(tmp_path / "stick", 4) as stick:
        (stick / "edge").mkdir()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(stick)], capture_output=True, timeout=10)
        assert remount.returncode == 0, remount.stderr
        yield stick


async def test_backup_onto_a_read_only_stick_says_it_is_read_only(
    tmp_path: Path, read_only_stick: Path, printers: dict[str, SimPrinter]
) -> None:
    """`edge backup` with `backup.dir` on a stick mounted read-only: one line saying so and what to do, exit 1.
    Before: `[Errno 30] Read-only file system: '/…/edge-<time>.partial'`."""
    target = read_only_stick / "edge"
    config = agent_process(tmp_path, printers, extra=f'[backup]\ndir = "{target}"\n').config
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    refused = await edge("backup", "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        f"edge: the backup directory {target} is read-only (its file system is mounted read-only): remount it "
        "read-write, or set backup.dir elsewhere; nothing written"
    ], refused.stderr
    assert await asyncio.to_thread(lambda: list(target.iterdir())) == []
