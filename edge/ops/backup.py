"""Online backups with SQLite's backup API (consistent while the agent writes), pruning, and an offline restore."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import pwd
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.durable import sync_to_disk
from edge.errors import StoreError, StoreUnreadableError
from edge.mounts import read_only_advice, sandboxed
from edge.ops.lock import DataDirLock
from edge.store import migrations
from edge.store.db import read_only
from edge.store.files import (
    check_file,
    copy_database,
    leave_wal,
    mails_settled,
    mark_unsettled,
    maybe_printed,
    prepare_restored_file,
    printed_until_mark,
    remove_restore_leftover,
    restoring_path,
    revisions_taken,
    waiting_jobs,
)

log = structlog.get_logger()
T = TypeVar("T")

_PREFIX = "edge-"
# edge-<UTC time>-<n><label>.db: n counts the backups taken in the folder. The time is the box's clock, which can be
# years ahead for nights (a failing RTC) and right again after: n, not the time, says which backup came last.
_NAME = re.compile(rf"{_PREFIX}\d{{8}}T\d{{9}}Z(?:-(\d+))?(?!\d)")
_MB = 2**20
# A backup dated further ahead of the clock than this was taken while the clock was wrong: its age cannot be told.
BACKUP_AHEAD_SKEW_S = 600.0
_PARTIAL_STALE_S = 3600.0  # a backup is written in one step, in seconds or minutes: a partial this old is dead


def backup_dir(settings: Settings) -> Path:
    return settings.backup.dir or settings.agent.data_dir / "backups"


def restore_advice(settings: Settings) -> str:
    """What to do about a damaged database: restore the newest backup, named, or where none was found."""
    directory = backup_dir(settings)
    newest = _newest(directory)
    if newest is None:
        return f"no backup found in {directory}: see 'A damaged database' in docs/operations.md"
    return f"restore the newest backup: edge restore {newest}"


@dataclasses.dataclass(frozen=True)
class BackupFile:
    """What a database file says about itself, after a quick_check."""

    version: int  # schema version (PRAGMA user_version)
    store_id: str | None  # the store it belongs to; None if it never recorded one


@dataclasses.dataclass(frozen=True)
class Restored:
    safety: Path | None  # the database the restore replaced, kept as a backup; None if there was none
    moved_from: str | None  # with --force: the store the backup belonged to ("" if unknown); None for a plain restore
    lacking: int = 0  # orders the replaced database had taken that the backup does not hold
    replaced_none: bool = False  # no database was there (a new box): what the one before took since is unknown
    backup_until: float | None = None  # the backup's newest order (or may-have-printed mark), the old box's clock
    at: float = 0.0  # when it was restored, this box's clock


def _check(path: Path) -> BackupFile:
    """StoreError if ``path`` is not a healthy database."""
    try:
        check = check_file(path)
    except StoreUnreadableError:
        raise  # its own words: what to do, not a damaged file
    except StoreError as err:
        raise StoreError(f"{path}: not a readable SQLite database: {err}") from err
    if not check.sound:
        raise StoreError(f"{path}: integrity check failed: {check.problems[0]}")
    if check.version == 0:  # SQLite reads an empty file as an empty database; the agent's schema starts at 1
        raise StoreError(f"{path}: holds no edge agent database (an empty file, or another program's): not a backup")
    return BackupFile(version=check.version, store_id=check.store_id)


def _make_room(db_path: Path, directory: Path, reserve_mb: int, spare: Path | None, writes_log_back: bool) -> None:
    """A backup must not take the agent's room: on the database's own disk (an SD card) the copy and the free space
    the agent keeps (``reserve_mb``, alerts.disk_free_min_mb) must both fit, or the card runs below it (a disk alert
    at night) or full while the copy is written (orders refused). So must, on the database's disk, the write-back of
    its log when the backup's connection to it closes last (``writes_log_back``: no agent runs, and a kill or a
    power cut left the log). The oldest backups make room first, never the newest nor ``spare`` (the backup a restore
    puts in place); when even that is not enough, nothing is removed and StoreError says so."""
    size = _files_size(db_path)  # the copy is at most the file and its -wal
    back = _write_back(db_path) if writes_log_back else _WriteBack(0, "")
    reserve = reserve_mb * _MB
    kept = f"the {reserve_mb} MB the agent keeps free (alerts.disk_free_min_mb)"
    same_disk = os.stat(directory).st_dev == os.stat(db_path.parent).st_dev
    if back.size and not same_disk and (data_free := shutil.disk_usage(db_path.parent).free) < back.size + reserve:
        raise StoreError(
            f"not enough space for a backup of {db_path}: {back.words} and {kept} on {db_path.parent}: "
            f"{(back.size + reserve) / _MB:.1f} MB in all; {data_free / _MB:.1f} MB are free; nothing written"
        )
    need = size + (back.size + reserve if same_disk else 0)
    free = shutil.disk_usage(directory).free
    if free >= need:
        return
    older = _may_make_way(directory, spare)
    if free + sum(older.values()) < need:
        also = f"{', ' + back.words if back.size else ''} and {kept}" if same_disk else ""
        held = f" and older backups hold {sum(older.values()) / _MB:.1f} MB" if older else ""
        raise StoreError(
            f"not enough space for a backup in {directory}: it needs {size / _MB:.1f} MB for the copy{also}: "
            f"{need / _MB:.1f} MB in all; {free / _MB:.1f} MB are free{held}; nothing written"
        )
    _drop_for_room(older, free, need)


@dataclasses.dataclass(frozen=True)
class _WriteBack:
    """A database's write-ahead log left beside it by a kill or a power cut: SQLite writes it back into the database
    when the last connection to it closes (a backup's, a restore's), and the file grows by up to the log's size, on
    its disk, while the log is still there."""

    size: int  # bytes; 0: no log
    words: str  # what it takes, for a refusal; "" when no log


def _write_back(db_path: Path) -> _WriteBack:
    wal = db_path.with_name(db_path.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    words = f"writing the log {wal.name} back into {db_path.name} up to {size / _MB:.1f} MB" if size else ""
    return _WriteBack(size, words)


def _may_make_way(directory: Path, spare: Path | None) -> dict[Path, int]:
    """The backups in ``directory`` that may be dropped for room, oldest first, with their sizes: never the newest,
    nor ``spare``."""
    if not directory.exists():
        return {}
    return {p: p.stat().st_size for p in _oldest_first(directory)[:-1] if spare is None or not p.samefile(spare)}


def _drop_for_room(older: dict[Path, int], free: int, need: int) -> None:
    """Drops the first of ``older`` until ``need`` bytes fit in ``free`` and the room they held."""
    for old, old_size in older.items():
        if free >= need:
            break
        free += old_size
        old.unlink()
        log.warning("backup_dropped_for_room", path=str(old), free_mb=round(free / _MB, 1))


def _backup(
    db_path: Path,
    directory: Path,
    keep: int | None,
    label: str,
    reserve_mb: int,
    *,
    writes_log_back: bool,
    spare: Path | None = None,
) -> Path:
    """The backup written; ``keep`` None: the caller rotates once its work is done (a restore); ``writes_log_back``:
    no agent holds the database open, so closing it writes back a log left beside it (see _make_room)."""
    if not db_path.exists():
        raise StoreError(f"database {db_path} does not exist; nothing to back up")
    _check_writable(directory)  # a stick mounted read-only, or root's: one line saying so, before anything is dropped
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _make_room(db_path, directory, reserve_mb, spare, writes_log_back)
        taken = _oldest_first(directory)
        target = directory / f"{_PREFIX}{_stamp()}-{_number(taken[-1]) + 1 if taken else 1}{label}.db"
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
    except OSError as err:  # what the check could not foresee (a stick unplugged, remounted meanwhile)
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise StoreError(unwritable_words(directory, err.errno) + "; nothing written") from err
    try:
        try:
            copy_database(db_path, partial, standalone=True)
        except StoreError as err:
            raise StoreError(f"backup of {db_path} into {partial}: {err}") from err
        _check(partial)
        sync_to_disk(partial)  # a backup reported written survives a power cut
    except StoreError:
        for left in (partial, partial.with_name(partial.name + "-journal")):  # a card that filled leaves its journal
            left.unlink(missing_ok=True)
        raise
    partial.rename(target)  # a backup file either exists whole or not at all
    sync_to_disk(directory)
    if keep is not None:
        _rotate(directory, keep)
    _remove_leftovers(directory)
    return target


def _rotate(directory: Path, keep: int, spare: Path | None = None) -> None:
    """Keeps the ``keep`` backups taken last, and ``spare`` (the one a restore was given)."""
    for old in _oldest_first(directory)[:-keep]:
        if spare is None or not old.samefile(spare):
            old.unlink()


def _oldest_first(directory: Path) -> list[Path]:
    """The backups in ``directory`` in the order they were taken: by their number; those of versions that wrote none
    (and a file put there by hand) before them, by name."""
    return sorted(directory.glob(f"{_PREFIX}*.db"), key=lambda path: (_number(path), path.name))


def _number(path: Path) -> int:
    found = _NAME.match(path.name)
    return int(found[1]) if found and found[1] else 0


def _stamp() -> str:
    """Now, sortable and unique per ms."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"


def _remove_leftovers(directory: Path) -> None:
    """A copy cut short by a power cut or a kill (as large as the database, on an SD card) once nobody can be writing
    it any more, the -wal and -shm files earlier versions left beside each backup when they checked it, and the
    rollback journal of a copy the card filled under."""
    stale_before = time.time() - _PARTIAL_STALE_S
    for left in directory.glob(f"{_PREFIX}*.partial*"):
        partial = left.with_name(left.name.removesuffix("-wal").removesuffix("-shm").removesuffix("-journal"))
        with contextlib.suppress(FileNotFoundError):
            if (left != partial and not partial.exists()) or (left == partial and left.stat().st_mtime < stale_before):
                left.unlink()
                log.info("backup_leftover_removed", path=str(left))


async def backup_database(settings: Settings, *, label: str = "") -> Path:
    """Writes data_dir/backups/edge-<UTC time>-<n><label>.db and keeps the ``backup.keep`` taken last."""
    started = time.monotonic()
    # A running agent keeps its connection open, so the backup's closes without writing the log back. In a thread,
    # as the backup is: trying the lock opens a file, and async code never blocks its loop.
    agent_runs = await asyncio.to_thread(DataDirLock.held, settings.agent.data_dir)
    target = await asyncio.to_thread(
        _backup,
        settings.agent.db_path,
        backup_dir(settings),
        settings.backup.keep,
        label,
        settings.alerts.disk_free_min_mb,
        writes_log_back=not agent_runs,
    )
    log.info(
        "backup_written", path=str(target), bytes=target.stat().st_size, seconds=round(time.monotonic() - started, 3)
    )
    return target


def newest_backup_at(settings: Settings) -> float | None:
    """When the newest backup in the backup directory was written (its file's time, our wall clock); None if there
    is none, or the directory cannot be read."""
    newest = _newest(backup_dir(settings))
    try:
        return None if newest is None else newest.stat().st_mtime
    except OSError:
        return None


def _newest(directory: Path) -> Path | None:
    """The backup taken last in ``directory``; None if none, or it cannot be read."""
    try:
        taken = _oldest_first(directory)
    except OSError:
        return None
    return taken[-1] if taken else None


def _restore(settings: Settings, source: Path, force: bool, clock: Clock) -> Restored:
    if source.is_dir():  # SQLite would say "disk I/O error", which reads like a damaged card
        newest = _newest(source)
        given = f"give the newest backup there: edge restore {newest}" if newest else f"no {_PREFIX}*.db backup in it"
        raise StoreError(f"{source} is a folder, not a backup file: {given}; nothing written")
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
        moved = backup.store_id != store_id
        remove_restore_leftover(db_path)  # a killed restore's copy: its room is this one's
        replaced_none = not db_path.exists()
        _room_for_restore(settings, source)  # before anything is written: a refusal leaves the card as it was
        restoring, lacking = _prepared_copy(settings, source, moved, clock)
        try:  # whatever stops the restore from here on, the copy (as large as the database) goes
            safety = _keep_sound(settings, source) if db_path.exists() else None
            if safety is None:
                safety = _rename_in_place(settings, restoring)
            else:
                _put_in_place(db_path, restoring, safety)
                # Only now: a restore that fails removes its backup of the database and must not have dropped another.
                # Counted in backup.keep, that backup leaves the folder at most one over it: the one restored.
                _rotate(backup_dir(settings), settings.backup.keep, source)
        finally:
            restoring.unlink(missing_ok=True)
    finally:
        lock.release()
    return Restored(
        safety=safety,
        moved_from=(backup.store_id or "") if moved else None,
        lacking=lacking,
        replaced_none=replaced_none,
        backup_until=_until_of_backup(source),
        at=time.time(),
    )


def _files_size(path: Path) -> int:
    """A database file and its -wal, in bytes: what a copy of it takes at most."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists (where it would be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def user_name() -> str:
    """Who this process is (an `edge` command run as root has become the agent's user)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def unwritable_words(directory: Path, err_no: int | None = None) -> str:
    """Why the backup directory cannot be written, and what to do, in one line: read-only (a stick mounted so) or
    not the agent's user's to write (a stick mounted by root)."""
    if err_no == errno.EROFS or (err_no is None and read_only(_existing(directory))):
        if sandboxed(_existing(directory)):
            return f"the backup directory {directory}: {read_only_advice(directory, unit='edge-backup')}"
        return (
            f"the backup directory {directory} is read-only (its file system is mounted read-only): remount it "
            "read-write, or set backup.dir elsewhere"
        )
    user = user_name()
    return (
        f"the backup directory {directory} is not writable by user {user}: chown {user}: {_existing(directory)}, "
        "or set backup.dir elsewhere"
    )


def _check_writable(directory: Path) -> None:
    """StoreError in one line (unwritable_words) if this process cannot write ``directory`` (or make it)."""
    if not os.access(_existing(directory), os.W_OK | os.X_OK):
        raise StoreError(unwritable_words(directory) + "; nothing written")


def _room_for_restore(settings: Settings, source: Path) -> None:
    """StoreError, before anything is written, if the restore of ``source`` cannot finish: the backup's copy beside
    the database and the backup of the database it replaces (in the backup directory, which must be writable) must
    both fit, with the room the agent keeps free on the database's disk (alerts.disk_free_min_mb), and so must the
    write-back of a sound database's log (left by a kill or a power cut) before it is replaced: the database file
    grows by up to the log's size while the log is still there. The older backups count as room, never the newest
    nor ``source``. On the database's disk those needed go now: the copy, written first, takes the room they free.
    A damaged database is not copied but kept aside (a second name for it on the same disk), its log with it."""
    db_path = settings.agent.db_path
    directory = backup_dir(settings)
    reserve = settings.alerts.disk_free_min_mb * _MB
    copy = _files_size(source)
    data_free = shutil.disk_usage(db_path.parent).free
    mb = _MB

    def refuse(need: str, needed: int, free: int, older: int = 0) -> None:
        held = f" and older backups hold {older / mb:.1f} MB" if older else ""
        raise StoreError(
            f"not enough space to restore {source}: {need}, and the agent keeps {reserve // mb} MB free on "
            f"{db_path.parent} (alerts.disk_free_min_mb): {(needed + reserve) / mb:.1f} MB in all; "
            f"{free / mb:.1f} MB are free{held}; nothing written"
        )

    copy_words = f"its copy beside the database takes {copy / mb:.1f} MB"
    if not db_path.exists():
        if data_free < copy + reserve:
            refuse(copy_words, copy, data_free)
        return
    _check_writable(directory)
    same_disk = os.stat(_existing(directory)).st_dev == os.stat(db_path.parent).st_dev
    safety = _files_size(db_path)
    back = _write_back(db_path)
    log_size = back.size
    log_words = f", {back.words}" if log_size else ""
    may_go = _may_make_way(directory, source)
    older = sum(may_go.values())
    safety_words = f"{copy_words}, a backup of the database it replaces {safety / mb:.1f} MB in {directory}{log_words}"
    if same_disk:
        if data_free + older >= copy + safety + log_size + reserve:
            _drop_for_room(may_go, data_free, copy + safety + log_size + reserve)
            return
        if not _sound(db_path) and data_free >= copy + reserve:
            return  # damaged: kept aside under a second name, which takes no room
        refuse(safety_words, copy + safety + log_size, data_free, older)
    write_back = log_size if log_size and _sound(db_path) else 0  # a damaged database's log goes aside with it
    if data_free < copy + write_back + reserve:
        refuse(copy_words + (log_words if write_back else ""), copy + write_back, data_free)
    backup_free = shutil.disk_usage(_existing(directory)).free
    if backup_free >= safety or (backup_free + older >= safety and _sound(db_path)):
        return  # a damaged database is copied aside as it is: no older backup is dropped for it
    raise StoreError(
        f"not enough space to restore {source}: a backup of the database it replaces takes {safety / mb:.1f} MB "
        f"in {directory}, {backup_free / mb:.1f} MB are free there and older backups hold {older / mb:.1f} MB; "
        "nothing written"
    )


def _printed_until(db_path: Path, clock: Clock) -> tuple[float | None, bool]:
    """Until when orders the database a restore replaces took may be on paper: the arrival of its newest order (what
    came after it, a failed upgrade's migration or the damage, took none); for a damaged file that cannot say, its
    last change; None if it took none. Now if there is none (a new card: the lost one's last moment is unknown), or
    its mark is not on central's clock yet (a new box's first start before the line was up): then True, the box's
    clock may be wrong (no battery: the image's date until NTP), and the mark is put on central's as soon as central
    answers (the replace81 probe, F1 and F2: a month behind, what the dead box printed after the backup printed
    again unmarked; a day ahead, it and a day of recovery's orders were history, never printed)."""
    if not db_path.exists() or _of_replaced(db_path, mark_unsettled, False):
        return float(clock.wall() // 1), True  # from the start of its second, as a first start
    try:
        return printed_until_mark(db_path), False
    except StoreError:
        return max(p.stat().st_mtime for p in (db_path, db_path.with_name(db_path.name + "-wal")) if p.exists()), False


def _until_of_backup(source: Path) -> float | None:
    """The backup's newest order (or its may-have-printed mark), for what the restore says; None if it cannot say."""
    try:
        return printed_until_mark(source)
    except StoreError:
        return None


def _prepared_copy(settings: Settings, source: Path, moved: bool, clock: Clock) -> tuple[Path, int]:
    """The backup copied whole beside the database, made this store's (``moved``) and told what the database it
    replaces may have printed and had taken, on disk: what goes in place, in one step; and how many orders the replaced
    database had taken that the backup lacks."""
    db_path = settings.agent.db_path
    restoring = restoring_path(db_path)
    remove_restore_leftover(db_path)
    try:
        copy_database(source, restoring)
        waiting = waiting_jobs(restoring)
        printed_since = _printed_since(db_path, waiting)
        printed_until, unsettled = _printed_until(db_path, clock)
        lacking = prepare_restored_file(
            restoring,
            may_have_printed_until=printed_until,
            printed_since=printed_since,
            not_out=sorted(set(waiting) - set(printed_since)),
            # Of a damaged database that cannot say, none: its senders' resends then print as originals (recovery's
            # as COPY up to the mark), and its waiting mails may go again.
            acked=_of_replaced(db_path, revisions_taken, set()),
            settled_mails=_of_replaced(db_path, mails_settled, []),
            store_id=settings.agent.store_id if moved else None,
            now=clock.wall(),
            unsettled=(clock.boot(), clock.mono()) if unsettled else None,
        )
        sync_to_disk(restoring)
    except BaseException:
        restoring.unlink(missing_ok=True)
        raise
    return restoring, lacking


def _of_replaced(db_path: Path, read: Callable[[Path], T], nothing: T) -> T:
    """What ``read`` finds in the database a restore replaces; ``nothing`` if there is none or it cannot say (damaged,
    or too old a schema for what is read)."""
    if not db_path.exists():
        return nothing
    try:
        return read(db_path)
    except StoreError as err:
        log.warning("restore_replaced_database_unreadable", read=read.__name__, error=str(err))
        return nothing


def _printed_since(db_path: Path, waiting: list[str]) -> list[str]:
    """Of the jobs the backup has waiting, those the database it replaces may have printed since: all of them if it
    cannot say (damaged, or none: a new card)."""
    if not waiting or not db_path.exists():
        return waiting
    try:
        return maybe_printed(db_path, waiting)
    except StoreError:
        return waiting


def _keep_sound(settings: Settings, source: Path) -> Path | None:
    """A checked backup of the database a restore of ``source`` replaces (``source`` is never dropped for it); None if
    it is damaged (which is why it is replaced): it cannot be copied through SQLite."""
    try:
        return _backup(
            settings.agent.db_path,
            backup_dir(settings),
            None,
            "-before-restore",
            settings.alerts.disk_free_min_mb,
            writes_log_back=True,  # the restore holds the data directory: no agent runs
            spare=source,
        )
    except StoreError:
        if _sound(settings.agent.db_path):
            raise  # not the file's fault (no room, an unwritable folder): its own words
    return None


def _put_in_place(db_path: Path, restoring: Path, safety: Path) -> None:
    """The prepared copy renamed over the sound database it replaces, in one step: killed before it, the database
    stays as it was. Not copied into it through SQLite, which first writes the whole backup into the database's
    write-ahead log: its size again on the card (before stop 68 the card filled so). A failure before the rename
    removes ``safety``, the backup just taken of the database, so that a retry finds the room this one found."""
    try:
        leave_wal(db_path)  # a log left beside it would be replayed into the copy renamed over it, and damage it
        shutil.copymode(db_path, restoring)
    except BaseException:
        safety.unlink(missing_ok=True)
        raise
    restoring.replace(db_path)
    sync_to_disk(db_path.parent)


def _rename_in_place(settings: Settings, restoring: Path) -> Path | None:
    """The prepared copy renamed over the damaged (or missing) database, so that a restore killed half way leaves the
    damaged file for the next try, never no database: the next start would make an empty one, and its recovery would
    bring back orders that printed before as new tickets. The damaged file is kept aside as it is, under a name no
    backup rotation or advice takes, in place of the one an earlier restore kept so (as large as a database, on an SD
    card: only the last is worth a look); its path, or None if there was none."""
    db_path = settings.agent.db_path
    aside = None
    if db_path.exists():
        directory = backup_dir(settings)
        directory.mkdir(parents=True, exist_ok=True)
        aside = directory / f"damaged-{_stamp()}.db"
        try:
            os.link(db_path, aside)
        except OSError:  # backup.dir on another disk
            shutil.copy2(db_path, aside)
        # Its log goes too: replayed into the backup put in its place, it would damage that as well.
        for suffix in ("-wal", "-shm"):
            part = db_path.with_name(db_path.name + suffix)
            if part.exists():
                shutil.move(part, aside.with_name(aside.name + suffix))
        for older in directory.glob("damaged-*.db*"):
            if not older.name.startswith(aside.name):
                older.unlink()
        sync_to_disk(directory)
        log.warning("damaged_database_moved_aside", path=str(aside))
    restoring.replace(db_path)
    sync_to_disk(db_path.parent)
    return aside


def _sound(path: Path) -> bool:
    try:
        return check_file(path).sound
    except StoreError:
        return False


async def restore_database(
    settings: Settings, source: Path, *, force: bool = False, clock: Clock = SYSTEM_CLOCK
) -> Restored:
    """Replaces the database with a backup of this store while the agent is stopped; ``force`` takes another store's
    (or an unknown one's) and resets its recovery cursor. Keeps what was there as a safety copy. ``clock``: the box's
    (a test's, stepped)."""
    restored = await asyncio.to_thread(_restore, settings, source, force, clock)
    log.info(
        "backup_restored",
        source=str(source),
        db=str(settings.agent.db_path),
        safety_copy=str(restored.safety),
        moved_from=restored.moved_from,
    )
    return restored
