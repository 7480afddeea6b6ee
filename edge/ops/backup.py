"""Online backups with SQLite's backup API (consistent while the agent writes), pruning, and an offline restore."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import structlog

from edge.config import Settings
from edge.errors import StoreError
from edge.ops.lock import DataDirLock
from edge.store import migrations
from edge.store.db import sync_to_disk
from edge.store.files import check_file, copy_database, move_file_to_store

log = structlog.get_logger()

_PREFIX = "edge-"


def backup_dir(settings: Settings) -> Path:
    return settings.backup.dir or settings.agent.data_dir / "backups"


@dataclasses.dataclass(frozen=True)
class BackupFile:
    """What a database file says about itself, after a quick_check."""

    version: int  # schema version (PRAGMA user_version)
    store_id: str | None  # the store it belongs to; None if it never recorded one


@dataclasses.dataclass(frozen=True)
class Restored:
    safety: Path | None  # the database the restore replaced, kept as a backup; None if there was none
    moved_from: str | None  # with --force: the store the backup belonged to ("" if unknown); None for a plain restore


def _check(path: Path) -> BackupFile:
    """StoreError if ``path`` is not a healthy database."""
    try:
        check = check_file(path)
    except StoreError as err:
        raise StoreError(f"{path}: not a readable SQLite database: {err}") from err
    if not check.sound:
        raise StoreError(f"{path}: integrity check failed: {check.problems[0]}")
    return BackupFile(version=check.version, store_id=check.store_id)


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
        try:
            copy_database(db_path, partial)
        except StoreError as err:
            raise StoreError(f"backup of {db_path} into {partial}: {err}") from err
        _check(partial)
        sync_to_disk(partial)  # a backup reported written survives a power cut
    except StoreError:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)  # a backup file either exists whole or not at all
    sync_to_disk(directory)
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


def _restore(settings: Settings, source: Path, force: bool) -> Restored:
    backup = _check(source)
    latest = migrations.latest_version(migrations.load_migrations())
    if backup.version > latest:
        raise StoreError(
            f"{source}: schema version {backup.version} is newer than this agent knows ({latest}); "
            "upgrade the agent first"
        )
    store_id = settings.agent.store_id
    # Another store's cursor would skip this store's orders at central, so only a proven match goes in unasked.
    if backup.store_id != store_id and not force:
        whose = (
            f"is a backup of store {backup.store_id!r}, this box is store {store_id!r}"
            if backup.store_id
            else "records no store (taken before the agent recorded it)"
        )
        raise StoreError(
            f"{source} {whose}: not restored; to move it here as store {store_id!r} on purpose, add --force "
            "(the recovery cursor then starts over)"
        )
    lock = DataDirLock.acquire(settings.agent.data_dir, purpose="edge restore")  # refuses while the agent runs
    try:
        db_path = settings.agent.db_path
        safety = (
            _backup(db_path, backup_dir(settings), settings.backup.keep + 1, "-before-restore")
            if db_path.exists()
            else None
        )
        copy_database(source, db_path)
        moved = backup.store_id != store_id
        if moved:
            move_file_to_store(db_path, store_id, now=time.time())
    finally:
        lock.release()
    return Restored(safety=safety, moved_from=(backup.store_id or "") if moved else None)


async def restore_database(settings: Settings, source: Path, *, force: bool = False) -> Restored:
    """Replaces the database with a backup of this store while the agent is stopped; ``force`` takes another store's
    (or an unknown one's) and resets its recovery cursor. Keeps what was there as a safety copy."""
    restored = await asyncio.to_thread(_restore, settings, source, force)
    log.info(
        "backup_restored",
        source=str(source),
        db=str(settings.agent.db_path),
        safety_copy=str(restored.safety),
        moved_from=restored.moved_from,
    )
    return restored
