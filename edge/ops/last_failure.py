"""Why the agent's last start failed, kept for the health check: it runs outside the agent, finds its port closed, and
tells the manager what the agent itself said (a damaged database and the backup to restore, a config error after an
upgrade) instead of only "cannot connect"."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edge.durable import write_durably

_FILE = "start-failure"


def forget(data_dir: Path) -> None:
    """At each start: what an earlier start said no longer holds."""
    with contextlib.suppress(OSError):
        (data_dir / _FILE).unlink(missing_ok=True)


def record(data_dir: Path, line: str) -> None:
    """Best effort (the failure may be the data directory itself): written whole or not at all, and fsynced (a power
    cut left a note renamed into place unsynced empty, and the health check's mail said only "did not answer")."""
    with contextlib.suppress(OSError):
        write_durably(data_dir / _FILE, (line + "\n").encode("utf-8"))


def read(data_dir: Path) -> str | None:
    try:
        return (data_dir / _FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
