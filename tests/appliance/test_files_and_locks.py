"""Files and locks under the data directory: the agent.lock file, `edge migrate` under a running agent."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.app import Agent
from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from edge.store import migrations
from tests.conftest import TOKEN


def cli_config(path: Path, data_dir: Path, printers: dict[str, SimPrinter], port: int = 9) -> Path:
    """A config file for `edge …` run as a real process on the same data directory."""
    return write_config(
        path, data_dir=data_dir, api_port=port, token=TOKEN, printers={n: p.port for n, p in printers.items()}
    )


async def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS` as a child process (the way a technician or a script runs it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def schema_version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_restore_never_follows_a_symlinked_lock_file(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """If agent.lock is a symlink (the agent's user can make one in its own data directory), `edge restore` refuses
    with one line naming it, and the file it points at keeps its content: the lock is never opened through a link."""
    agent = await make_agent()
    backup = tmp_path / "backup.db"
    with sqlite3.connect(agent.settings.agent.db_path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    await agent.stop()
    data_dir = agent.settings.agent.data_dir
    victim = tmp_path / "passwd-like"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (data_dir / "agent.lock").unlink()
    (data_dir / "agent.lock").symlink_to(victim)
    config = cli_config(tmp_path / "edge.toml", data_dir, printers)
    restored = await edge("restore", str(backup), "--config", str(config))
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert "agent.lock" in restored.stderr and "symlink" in restored.stderr
    assert len(restored.stderr.strip().splitlines()) == 1, restored.stderr


async def test_lock_file_is_never_truncated(tmp_path: Path, make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """Taking and dropping the lock overwrites only its own holder line and truncates nothing, so even a lock file
    that is a hard link to another file could only ever have its first line overwritten, never be emptied."""
    agent = await make_agent()
    lock = agent.settings.agent.data_dir / "agent.lock"
    assert f"agent pid {os.getpid()}" in lock.read_text()
    await agent.stop()
    tail = "\n" + "keep me\n" * 50
    lock.write_text(lock.read_text() + tail)
    again = await make_agent()
    await again.stop()
    assert lock.read_text().endswith(tail)


async def test_migrate_refuses_under_a_running_agent(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """`edge migrate --to N` while the agent runs is refused with one line naming the agent; the schema stays."""
    agent = await make_agent()
    db = agent.settings.agent.db_path
    latest = migrations.latest_version(migrations.load_migrations())
    config = cli_config(tmp_path / "edge.toml", agent.settings.agent.data_dir, printers)
    down = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"agent pid {os.getpid()}" in down.stderr and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert schema_version(db) == latest
    await agent.stop()
    down = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert schema_version(db) == latest - 1
