"""Online backups with SQLite's backup API (consistent while the agent writes), pruning, and an offline restore."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import structlog

from edge.config import Settings
from edge.errors import StoreError
from edge.ops.lock import DataDirLock
from edge.store import migrations

log = structlog.get_logger()

_PREFIX = "edge-"
_PAGES_PER_STEP = 256  # copy in steps so the agent's writer is never locked out for long


def backup_dir(settings: Settings) -> Path:
    return settings.backup.dir or settings.agent.data_dir / "backups"


def _copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            # Through SQLite, not a file copy: consistent while the agent writes, and a WAL target stays consistent too.
            src.backup(dst, pages=_PAGES_PER_STEP)
        finally:
            dst.close()
    finally:
        src.close()


def _check(path: Path) -> int:
    """The schema version of a database file after a quick_check; StoreError if it is not a healthy database."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"{path}: not a readable SQLite database: {err}") from err
    if result != "ok":
        raise StoreError(f"{path}: integrity check failed: {result}")
    return int(version)


def _backup(db_path: Path, directory: Path, keep: int, label: str) -> Path:
    if not db_path.exists():
        raise StoreError(f"database {db_path} does not exist; nothing to back up")
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    stamp = (
        time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    )  # sortable, unique per ms
    target = directory / f"{_PREFIX}{stamp}{label}.db"
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))  # an unwritable folder fails here, by name
    try:
        _copy(db_path, partial)
    except sqlite3.Error as err:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup of {db_path} into {partial}: {err}") from err
    _check(partial)
    partial.rename(target)  # a backup file either exists whole or not at all
    for old in sorted(directory.glob(f"{_PREFIX}*.db"), reverse=True)[keep:]:
        old.unlink()
    return target


async def backup_database(settings: Settings, *, label: str = "") -> Path:
    """Writes data_dir/backups/edge-<UTC time><label>.db and keeps the newest ``backup.keep`` files."""
    started = time.monotonic()
    target = await asyncio.to_thread(_backup, settings.agent.db_path, backup_dir(settings), settings.backup.keep, label)
    log.info(
        "backup_written", path=str(target), bytes=target.stat().st_size, seconds=round(time.monotonic() - started, 3)
    )
    return target


def _restore(settings: Settings, source: Path) -> Path | None:
    version = _check(source)
    latest = migrations.latest_version(migrations.load_migrations())
    if version > latest:
        raise StoreError(
            f"{source}: schema version {version} is newer than this agent knows ({latest}); upgrade the agent first"
        )
    lock = DataDirLock.acquire(settings.agent.data_dir, purpose="edge restore")  # refuses while the agent runs
    try:
        db_path = settings.agent.db_path
        safety = (
            _backup(db_path, backup_dir(settings), settings.backup.keep + 1, "-before-restore")
            if db_path.exists()
            else None
        )
        _copy(source, db_path)
    finally:
        lock.release()
    return safety


async def restore_database(settings: Settings, source: Path) -> Path | None:
    """Replaces the database with a backup while the agent is stopped; returns the safety copy of what was there."""
    safety = await asyncio.to_thread(_restore, settings, source)
    log.info("backup_restored", source=str(source), db=str(settings.agent.db_path), safety_copy=str(safety))
    return safety
