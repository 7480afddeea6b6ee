"""Another program's write lock on the database: a technician's `sqlite3 edge.db` left in `BEGIN IMMEDIATE`. SQLite
only says "database is locked"; the kernel's lock table (/proc/locks) says which process holds it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger()

# How long one try at the start waits for the lock before it says so again (systemd hears of it each time).
_TRY_S = 1.0


def held_open(path: Path, holders: list[str] | None = None) -> str:
    """What a person reads of another program's write lock on ``path`` (``holders``: who, as ``writers`` names them)."""
    named = ", ".join(holders or [])
    by = f" (held by {named})" if named else ""
    return f"another program holds the database ({path.name}) open for writing{by} — a technician's sqlite3?"


def locked(err: BaseException) -> bool:
    """Whether ``err`` is SQLite's SQLITE_BUSY: another connection holds the lock it waited for."""
    code = getattr(err, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_BUSY) or "database is locked" in str(err)


def writers(path: Path) -> list[str]:
    """The other processes holding a write lock on ``path`` or its -shm file ("pid 123 (sqlite3)"), from the kernel's
    lock table: in WAL mode SQLite's writer locks a byte of the -shm file, under locking_mode=EXCLUSIVE the file
    itself. Empty where /proc/locks cannot be read."""
    files = set()
    for name in (path, path.with_name(f"{path.name}-shm")):
        try:
            info = os.stat(name)
        except OSError:
            continue
        files.add(f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}")
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    pids = set()
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a process waiting for the lock, not holding it
            continue
        if len(fields) >= 6 and fields[3] == "WRITE" and fields[5] in files and fields[4] != str(os.getpid()):
            pids.add(fields[4])
    return [f"pid {pid} ({_command(pid)})" for pid in sorted(pids) if pid != "-1"]


def _command(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"


def holder_note(path: Path) -> str | None:
    """held_open's words with the holders named, when the kernel shows another process holding a write lock on
    ``path``; None when none does (the agent's own writes are not counted)."""
    found = writers(path)
    return held_open(path, found) if found else None


def _try_write_lock(path: Path) -> bool:
    """Whether a write lock on ``path`` can be had within _TRY_S (it is let go at once). Any error but the lock is
    the agent's open's to report: True."""
    try:
        conn = sqlite3.connect(path, timeout=_TRY_S, isolation_level=None)
    except sqlite3.Error:
        return True
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as err:
        return not locked(err)
    finally:
        conn.close()
    return True


async def wait_for_other_writers(path: Path, waiting: Callable[[str], None]) -> None:
    """At the agent's start: waits while another program holds a write lock on ``path``, which would fail the start's
    first writes after SQLite's busy timeout (5 s), and systemd's restarts with them (five in 40 s, then none).
    Logs once who holds it; ``waiting`` hears what to tell systemd at each try."""
    if not await asyncio.to_thread(path.exists):
        return
    said = False
    while not await asyncio.to_thread(_try_write_lock, path):
        found = await asyncio.to_thread(writers, path)
        if not said:
            said = True
            log.warning(
                "database_locked_by_another_program",
                db=str(path),
                held_by=", ".join(found) or "a process /proc/locks does not show",
                hint="the agent starts once it lets go: end that program's transaction (COMMIT or ROLLBACK in"
                " sqlite3) or quit it",
            )
        waiting(f"waiting for the database: {held_open(path)}")
