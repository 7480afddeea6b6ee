"""The SQLite file: one writer connection behind a lock, one reader, pragmas chosen for power-loss safety."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import aiosqlite
import structlog

from edge.clock import wait_real
from edge.durable import sync_to_disk
from edge.errors import SchemaTooNewError, StoreDamagedError, StoreError, StoreFullError, StoreUnavailableError
from edge.events import Event, EventBus
from edge.log import SaidOnce
from edge.mounts import read_only_advice
from edge.store import migrations as migrations_mod
from edge.store.holders import held_open, locked
from edge.store.meta import INCARNATION_KEY, UPSERT_META

log = structlog.get_logger()

T = TypeVar("T")

# WAL + synchronous=FULL: every COMMIT fsyncs the WAL before it returns, so an acknowledged order
# survives a power cut. NORMAL alone would lose the last commits on power loss, but those are exactly
# the ones we have already answered 201 for. The agent's own Database runs NORMAL and fsyncs the WAL itself
# after each COMMIT, off the writer, before any caller hears "done" (see Database._sync): same promise, and the
# next group's writes go on while the fsync runs. Other writers (CLI commands) keep FULL.
_PRAGMAS = (
    # Each commit writes every page it touched whole, to the WAL and again at the checkpoint: 1 KiB pages cut the bytes
    # an order costs the SD card to about a third of 4 KiB ones (bench.py storage). Only a new file takes it; an
    # existing database keeps its page size (changing it means a VACUUM, see docs/printing.md).
    "PRAGMA page_size = 1024",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
    # After a big transaction (a recovery batch) the WAL would otherwise keep its peak size on the small disk.
    "PRAGMA journal_size_limit = 67108864",
)

_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_BUSY,
}


def failure(path: Path, err: sqlite3.Error) -> StoreError:
    """The StoreError for ``err``: StoreDamagedError when SQLite finds the file damaged (a torn write on a card)."""
    code = getattr(err, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)) or "malformed" in str(err):
        return StoreDamagedError(f"database {path} is damaged ({err})")
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(err) or no_room(path, err):
        return StoreFullError(f"database {path}: {full_card(path.parent)}")
    return StoreError(f"database {path}: {err}")


def no_room(path: Path, err: BaseException | None) -> bool:
    """Whether ``err`` is SQLite's "disk I/O error" on a card without room: a database closed cleanly (its -wal and
    -shm removed) cannot make its -shm again there, and SQLite tells that failed write as I/O, not as a full disk."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and card_full(path.parent)


def _no_room_for(path: Path, err: sqlite3.Error) -> bool:
    """Whether SQLite refused ``err``'s write for want of room on the card (SQLITE_FULL, or its I/O error there)."""
    code = getattr(err, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(err) or no_room(path, err)


def card_full(folder: Path) -> bool:
    """Whether the card holding ``folder`` has less room than the agent keeps for a start (ROOM_BYTES)."""
    try:
        return _free_bytes(folder) < ROOM_BYTES
    except OSError:
        return False


def full_card(folder: Path) -> str:
    """What a person reads of a card too full to write on: how full, and what to do."""
    try:
        free = f"{_free_bytes(folder) // 2**20} MB free on {folder}"
    except OSError:
        free = f"no room on {folder}"
    return (
        f"the card is full ({free}): make room on it (old backups, the journal: see 'Disk full' in"
        " docs/operations.md), then try again"
    )


def read_only(path: Path) -> bool:
    """Whether the file system holding ``path`` (which exists) refuses writes. Newer kernels mark ext4's remount after
    an error only as "emergency_ro", not in statvfs: a metadata write (the file's times) asks the file system itself."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
        os.utime(path)
    except OSError as err:
        return err.errno == errno.EROFS
    return False


def unavailable(err: sqlite3.Error) -> bool:
    """Errors that mean 'try again later' (disk full, read-only file, I/O): the sender should retry."""
    code = getattr(err, "sqlite_errorcode", None)
    return (
        (code is not None and code & 0xFF in _UNAVAILABLE_CODES) or "disk is full" in str(err) or "readonly" in str(err)
    )


async def connect_writer(path: Path) -> aiosqlite.Connection:
    """A connection with the durability pragmas set; the caller owns transactions (autocommit mode)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as err:
        raise StoreError(f"database {path}: cannot open: {err}") from err
    try:
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
    except sqlite3.Error as err:
        await conn.close()
        raise failure(path, err) from err
    return conn


async def _connect_reader(path: Path) -> aiosqlite.Connection:
    """The connection reads go through: it never writes, and waits for a writer's lock as the writer does."""
    reader = await aiosqlite.connect(path, isolation_level=None)
    try:
        await reader.execute("PRAGMA busy_timeout = 5000")
        await reader.execute("PRAGMA query_only = ON")
    except BaseException:
        await reader.close()
        raise
    return reader


async def _wait_out(task: asyncio.Future[Any]) -> bool:
    """Wait until ``task`` is done, even if the caller is cancelled meanwhile; True if it was."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def _to_the_end(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile; the cancellation is raised afterwards."""
    task = asyncio.ensure_future(aw)
    if await _wait_out(task):
        if not task.cancelled():
            task.exception()  # retrieved: the caller is being cancelled and will not see it
        raise asyncio.CancelledError
    return task.result()


class DirectCursor:
    """aiosqlite's cursor calls, answered at once by the sqlite3 cursor (see DirectConnection)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class DirectConnection:
    """The writer's own sqlite3 connection behind aiosqlite's calls, for a write body that runs whole on the writer's
    thread (``Database.write``). Each aiosqlite call is a round trip to that thread and back to the loop, up to a GIL
    switch interval each way under load: an order cost ~38 of them. Here each call is answered at once, so a body's
    coroutine never suspends and the thread drives it to its end in one trip."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> DirectCursor:
        return DirectCursor(self._conn.execute(sql, parameters))

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> DirectCursor:
        return DirectCursor(self._conn.executemany(sql, parameters))

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return self._conn.execute(sql, parameters).fetchall()


# What a write body gets: aiosqlite's connection inside ``Database.transaction``, the direct one in ``Database.write``.
Writer: TypeAlias = aiosqlite.Connection | DirectConnection


def _run_whole(conn: sqlite3.Connection, body: Coroutine[Any, Any, T], begin: bool) -> T:
    """On the writer's thread: (BEGIN and) a savepoint, the body driven to its end, the savepoint released; a failing
    body is rolled back to its savepoint (if SQLite ended the whole transaction, the caller sees it)."""
    try:
        if begin:
            conn.execute("BEGIN IMMEDIATE")
        conn.execute("SAVEPOINT w")
        try:
            body.send(None)
        except StopIteration as done:
            conn.execute("RELEASE w")
            return done.value
        except BaseException:
            with suppress(sqlite3.Error):  # no transaction left to roll back into: the caller checks
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
            raise
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
        raise RuntimeError("a write body run on the writer's thread awaited something other than its connection")
    finally:
        body.close()  # not started (BEGIN failed) or suspended: no "never awaited" warning, no dangling frame


def _run_alone(
    conn: sqlite3.Connection, body: Coroutine[Any, Any, T], path: Path, sync_unchanged: bool
) -> tuple[T, _Fsync | None]:
    """On the writer's thread, for a write nobody waits to join: BEGIN, the body, COMMIT and the WAL's fsync in one
    trip; returns the body's result and the fsync's times (None: none, see _synced_if_changed). Nothing is left open
    whatever fails."""
    changes = conn.total_changes
    try:
        result = _run_whole(conn, body, begin=True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):  # the body's or the COMMIT's error is the one worth raising
                conn.rollback()
        raise
    return result, _synced_if_changed(conn, path, changes, sync_unchanged)


@dataclasses.dataclass(frozen=True)
class _Fsync:
    """One fsync of the WAL that succeeded: when it began (monotonic) and how long it took."""

    started: float
    took: float


def _synced_if_changed(conn: sqlite3.Connection, path: Path, changes: int, sync_unchanged: bool) -> _Fsync | None:
    """On the writer's thread, after a COMMIT: the WAL's fsync, and its times; None, without one, when the
    transaction changed no row (``changes``: the connection's total_changes when it began) and nothing before it
    waits for an fsync (``sync_unchanged`` False, see Database._must_sync). StoreUnavailableError if it fails."""
    if conn.total_changes == changes and not sync_unchanged:
        return None
    started = time.monotonic()
    try:
        sync_to_disk(_wal(path), data_only=True)
    except OSError as err:
        raise _sync_failure(path, err) from err
    return _Fsync(started, time.monotonic() - started)


class _GroupFailed(Exception):
    """A closing trip's COMMIT or fsync failed: ``error`` is what every caller in the group is told."""

    def __init__(self, error: sqlite3.Error | StoreUnavailableError) -> None:
        super().__init__(str(error))
        self.error = error


def _run_closing(
    conn: sqlite3.Connection, body: Coroutine[Any, Any, T], path: Path, group_changes: int, sync_unchanged: bool
) -> tuple[T, _Fsync | None]:
    """On the writer's thread, for a write that joins an open group nobody else waits to join: the body, then the
    group's COMMIT and the WAL's fsync in the same trip (as ``_run_alone``, ``group_changes`` the connection's
    total_changes when the group began); returns the body's result and the fsync's times. A failing body rolls
    back to its savepoint only, before the COMMIT: the group goes on as before. A failing COMMIT rolls the whole group
    back; it, or a failing fsync, raises _GroupFailed."""
    result = _run_whole(conn, body, begin=False)
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.rollback()
        raise _GroupFailed(err) from err
    try:
        return result, _synced_if_changed(conn, path, group_changes, sync_unchanged)
    except StoreUnavailableError as err:
        raise _GroupFailed(err) from err


# A write a full or read-only card refused is tried again this often: the store says nothing when it writes again.
STORE_RETRY_S = 1.0
ROOM_BYTES = 2**20  # kept beside the database for a start on a full card: -shm (32 KiB) and the first writes fit
_WAL_AUTOCHECKPOINT = 1000  # pages: SQLite's default (PRAGMA wal_autocheckpoint)
_WAL_FRAME_HEADER = 24  # bytes before each page in the WAL


def _give_room(room: Path) -> bool:
    """Removes the room file; False when there was none to give."""
    try:
        room.unlink()
    except OSError:
        return False
    return True


def _keep_or_give_room(room: Path) -> bool:
    """Keeps the room beside the database, or gives it back (True) when the card has less free than it holds: a card
    that filled while the agent was down still opens a database whose -wal and -shm a kill left behind, and the
    start's first writes, which grow the WAL, need the room as much as a start that could not open it."""
    if _free_bytes(room.parent) < ROOM_BYTES:
        return _give_room(room)  # none kept: made at a later start
    if not (room.exists() and room.stat().st_size == ROOM_BYTES) and _write_room(room) < ROOM_BYTES:
        room.unlink(missing_ok=True)  # a part of it is no room to give back: made at a later start
    return False


def _take_room_back(room: Path) -> int:
    """After a clean close, the room a start gave back (or could not make) is made again of what the close freed
    (SQLite removed the -wal and -shm), up to ROOM_BYTES: a card that fills while the agent is down cannot take that
    too, and the next start gives it back to make those two files again. Returns the bytes kept (0: it was there)."""
    if room.exists():
        return 0
    if not (kept := _write_room(room)):  # nothing freed (or a read-only card): an empty file is no room to give
        with suppress(OSError):
            room.unlink(missing_ok=True)
    return kept


def _write_room(room: Path) -> int:
    """Writes the room file anew, up to ROOM_BYTES, as much as fits; returns how much."""
    kept = 0
    with suppress(OSError), open(room, "wb", buffering=0) as file:
        while kept < ROOM_BYTES:
            kept += file.write(bytes(_ROOM_CHUNK))
    return kept


_ROOM_CHUNK = 64 * 1024


def _free_bytes(folder: Path) -> int:
    free = os.statvfs(folder)
    return free.f_bavail * free.f_frsize


def _room_given(db: Path, why: str) -> None:
    log.warning("card_full_room_given", db=str(db), error=why, freed_mb=ROOM_BYTES / 2**20)


def _wal(path: Path) -> Path:
    return Path(f"{path}-wal")


def _sync_failure(path: Path, err: OSError) -> StoreUnavailableError:
    """Committed but maybe not durable: nobody is told "stored", senders retry."""
    failure = StoreUnavailableError(f"database {path}: cannot sync the write-ahead log: {err}")
    failure.__cause__ = err  # raised or not: Database._fsync_failed tells a removed WAL by it
    return failure


def _file_seen(path: Path) -> tuple[int, int, int, int]:
    """What changes when anything writes the file itself (a checkpoint, a copy over it) or puts another in its place.
    The agent's own writes go to the WAL: this stays as it is between its checkpoints."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _incarnation_in_file(path: Path) -> str | None:
    """The incarnation the file at ``path`` holds now, read through a connection of its own (the agent's may hold the
    old file's pages in memory). Through the WAL: the file alone is no consistent snapshot while a checkpoint a reader
    held back has copied only a part of it. StoreError if unreadable (a copy half written): not a verdict yet."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (INCARNATION_KEY,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from err
    return None if row is None else str(row[0])


def replaced_problem(path: Path) -> str:
    return (
        f"database {path}: {path.name} was replaced while the agent ran: stop the agent and use `edge restore`"
        " (orders taken since that copy are not in it; a resend of one would print a second time)"
    )


# A lingering write (a spool's claim or printed mark) waits at most this long, and never longer than two fsyncs have
# lately taken, for a write that cannot wait (an order) to share its commit: see Database.write.
LINGER_MAX_S = 0.020
LINGER_ONLY_WITHIN_S = 0.5  # ...and only while orders are coming: a write that may not wait ran this recently


@dataclasses.dataclass
class _Group:
    """One open transaction several callers add their writes to; ``done`` resolves when its COMMIT has run (and the
    WAL's fsync, if ``durable``). ``company`` is set when a write that does not linger joins it: a lingering group
    commits then, not later. ``durable`` is cleared only for a group opened by a write that need not survive a power
    cut, and set again by any other write that joins it. ``changes``: the writer's total_changes when it began: a
    group that changed no row syncs nothing of its own (see Database._must_sync)."""

    done: asyncio.Future[None]
    changes: int
    company: threading.Event = dataclasses.field(default_factory=threading.Event)  # waited for in real time: wait_real
    durable: bool = True


class Database:
    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._direct = DirectConnection(writer._conn)  # aiosqlite's own sqlite3 connection, used only on its thread
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._queued = 0  # callers waiting for the write lock (see _writer_turn)
        self._group: _Group | None = None  # the transaction callers are adding their writes to, if one is open
        self._committer: asyncio.Task[None] | None = None
        self._unsynced: list[_Group] = []  # committed, not yet fsynced: their callers still wait
        self._syncer: asyncio.Task[None] | None = None
        # When an fsync of the WAL was last seen failing (monotonic), until one begun after it succeeds: the commits
        # before it may not be durable, so no write is answered before such an fsync, not even one that changed nothing
        # (a sender's retry would be told "duplicate" of an order a power cut takes back).
        self._fsync_failed_at: float | None = None
        # The WAL's fsync found no edge.db-wal: removed by hand while SQLite still writes to it (see _take_over_wal).
        self._wal_removed = False
        self._take_over_failed = SaidOnce("store_wal_take_over_failed", db=str(path))  # each write tries it again
        self._fsync_s = 0.0  # how long the WAL's fsync has taken lately (a moving average): the most worth lingering
        self.durable_writes = 0  # fsyncs that made writes durable: each one proves the card takes writes (see /ready)
        self._eager_at = -LINGER_ONLY_WITHIN_S  # monotonic time of the last write that does not linger
        # Why writes fail right now (disk full, read-only), None while they work; the callback hears each change.
        self.write_problem: str | None = None
        self._damaged = False
        # A write the full card refused: the WAL could not grow, and only a checkpoint lets SQLite start it over.
        self._wal_refused = False
        self._checkpoint_failed = SaidOnce("store_checkpoint_failed", db=str(path))  # each write tries it again
        self._room: Path | None = None  # the agent's: the room beside the database (open_keeping_room)
        self.gave_room_at_open = False  # the start found the card full and gave that room back
        # The agent's: its file's incarnation and how the file looked at the last check (see _check_file).
        self._incarnation: str | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self._replaced = False
        self.on_write_health: Callable[[str | None], None] | None = None
        # A write the card has not finished this long after it began is a stall (None: not watched, as in commands):
        # ``stall`` says so, as the write problem too, until the card finishes a write.
        self.stall_after_s: float | None = None
        self.stall: str | None = None

    @classmethod
    async def open(
        cls, path: Path, *, migrate: bool = True, migrations: list[migrations_mod.Migration] | None = None
    ) -> Database:
        """Open (creating if needed), check the schema is not newer than we know, migrate to latest."""
        migrations = migrations if migrations is not None else migrations_mod.load_migrations()
        writer = await connect_writer(path)
        try:
            if migrate:
                await migrations_mod.migrate(writer, migrations)
            else:
                await migrations_mod.check_not_newer(writer, migrations)
            await writer.execute("PRAGMA synchronous = NORMAL")  # Database._sync makes each commit durable
            reader = await _connect_reader(path)
        except sqlite3.Error as err:
            await writer.close()
            raise failure(path, err) from err
        except BaseException:
            await writer.close()
            raise
        writer.row_factory = reader.row_factory = aiosqlite.Row
        return cls(path, writer, reader)

    @classmethod
    async def open_keeping_room(cls, path: Path) -> Database:
        """The agent's ``open``: it keeps ROOM_BYTES of the card in a file beside the database (``edge.db-room``) and
        gives them back when a start finds the card full. A clean stop lets SQLite remove its -wal and -shm files, and
        a full card cannot make them again: without room the agent could not start, answer 503, nor see the room come
        back (systemd gives up after five starts)."""
        room = path.with_name(f"{path.name}-room")
        try:
            db = await cls.open(path)
        except (StoreDamagedError, SchemaTooNewError):
            raise  # the file's own verdicts, not a full card: the room mends neither, and is kept for one that is
        except StoreError as err:
            # Only a full card needs the room: another program's lock on the file, or a file the agent may not write,
            # is no reason to give it back (a sqlite3 shell in locking_mode=EXCLUSIVE did, on a card with room).
            full = isinstance(err, StoreFullError) or await asyncio.to_thread(card_full, path.parent)
            if not full or not await asyncio.to_thread(_give_room, room):
                raise
            _room_given(path, str(err))
            db = await cls.open(path)
            db.gave_room_at_open = True
        else:
            with suppress(OSError):  # no room for it now: made at a later start, or of what the stop frees
                if await asyncio.to_thread(_keep_or_give_room, room):
                    _room_given(path, "the card is full")
                    db.gave_room_at_open = True
        db._room = room
        await db._watch_file()
        return db

    async def _watch_file(self) -> None:
        """From now on each write first checks that the file is still the one opened (_check_file). A file without an
        incarnation (a new one, or a backup restored) gets one, in a commit that syncs nothing of its own (synchronous
        is NORMAL: the start's first write's fsync carries it, a power cut before it only means another one). One the
        card refuses leaves the file unwatched for this run."""
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", (INCARNATION_KEY,))
        incarnation = secrets.token_hex(8) if row is None else str(row[0])
        if row is None:
            try:
                async with self._write_lock:
                    await self._writer.execute(UPSERT_META, (INCARNATION_KEY, incarnation))
            except sqlite3.Error as err:
                log.warning("store_file_not_watched", db=str(self.path), error=str(err))
                return
        self._seen = await asyncio.to_thread(_file_seen, self.path)
        self._incarnation = incarnation

    async def _check_file(self) -> StoreUnavailableError | None:
        """Before each of the agent's writes: the file at its path is still the one it opened and wrote. A backup put
        back by hand while it runs (`cp` over it: the same inode, older pages; `mv`: another inode) would take its
        writes as its own: the orders taken since are gone, a resend of one is stored anew and prints a second time
        unmarked, and WAL frames written back onto older pages damage the file. Refused for good instead (503, /ready,
        the storage alarm), never written into: `edge restore` is the way. One stat a write; the file itself is read
        only when it changed (the agent's own checkpoints: one per thousand pages or so). Returns the refusal."""
        if self._incarnation is None:
            return None  # a command's, or a file the start could not mark
        if not self._replaced:
            try:
                seen: tuple[int, int, int, int] | None = _file_seen(self.path)
            except OSError:
                seen = None  # removed or moved away: not the file opened either
            if seen == self._seen:
                return None
            assert self._seen is not None
            if seen is not None and seen[:2] == self._seen[:2]:  # the same inode, written: a checkpoint, or a copy
                try:
                    self._replaced = await asyncio.to_thread(_incarnation_in_file, self.path) != self._incarnation
                except StoreError as err:  # a copy half written: no verdict yet, and no write into it
                    return StoreUnavailableError(str(err))
            else:
                self._replaced = True
            if not self._replaced:
                self._seen = seen
                return None
            log.error("store_file_replaced", db=str(self.path), problem=replaced_problem(self.path))
            self.write_problem = None  # it outranks whatever else stands: the one told from now on
        problem = replaced_problem(self.path)
        self._set_write_problem(problem)
        return StoreUnavailableError(problem)

    async def close(self) -> None:
        for task in (self._committer, self._syncer):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()
        if self._room is not None and (kept := await asyncio.to_thread(_take_room_back, self._room)):
            log.warning("card_room_kept_at_stop", db=str(self.path), kept_kb=kept // 1024)

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One caller's write, all-or-nothing, returning once it is durable. Await nothing but this connection inside.

        ``durable=False``: a write a power cut may take back, because what it records is done again harmlessly (the
        outbox's delivered marks: central takes an event sent again as a duplicate, by its key). It returns once it is
        committed (seen by every reader), not synced, and costs no fsync of its own: the next durable write's fsync
        carries it (the WAL is appended in order). Joining a group that is durable, it is as durable as the group.

        Group commit: callers that queue for the writer while a transaction is open add their writes to it, each in its
        own SAVEPOINT, and one COMMIT (one fsync) makes them all durable. A caller whose body fails rolls back to its
        savepoint only: the others' writes stay and commit. Each caller returns only after the COMMIT that carries its
        writes, so a 201 or a ``printing`` mark is never announced before it is on disk. If the COMMIT fails, or SQLite
        itself ends the transaction (disk full, I/O error), every caller in the group gets the error: none is told
        "stored".

        Cancelled or failed at any await, the statement awaited still runs on aiosqlite's thread; the rollback queued
        behind it ends whatever it left open before the lock is let go. A caller cancelled after its body ran may still
        have its writes committed with the group (as a cancellation at COMMIT always could).
        """
        async with self._writer_turn() as refused:
            if refused is not None:
                raise refused
            group = self._group
            try:
                if group is None:
                    changes = self._writer._conn.total_changes
                    await self._writer.execute("BEGIN IMMEDIATE")
                    group = self._group = _Group(asyncio.get_running_loop().create_future(), changes, durable=durable)
                    # Queued behind everyone waiting for the lock now (asyncio.Lock is fair): they join this group.
                    self._committer = asyncio.create_task(self._commit(group), name="store-group-commit")
                group.durable |= durable
                self._eager(group)
                await self._writer.execute("SAVEPOINT w")
                yield self._writer
                await self._writer.execute("RELEASE w")
            except sqlite3.Error as err:
                await self._undo(group, err)
                raise self._store_error(err) from err
            except BaseException as err:
                await self._undo(group, err)
                raise
        await _to_the_end(asyncio.shield(group.done))

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[StoreUnavailableError | None]:
        """The write lock, counting who waits for it: a write nobody waits to join commits on its own (see write).
        Yields why the write must not go into the file (_check_file), None when it may: raised by the caller."""
        self._queued += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._queued -= 1
        try:
            refused = await self._check_file()
            if refused is None and self._wal_refused and self._group is None:
                await self._checkpoint_refused_wal()
            if refused is None and self._wal_removed and self._group is None:
                await self._take_over_wal()
            yield refused
        finally:
            self._write_lock.release()

    async def checkpoint_on_room(self) -> bool:
        """On a full card with nothing retention may delete: the checkpoint a write the card refused left to do
        (_checkpoint_refused_wal), on the room kept beside the database if the file must grow for it. True when the
        WAL was all written back (the next write starts it over). Only for a WAL a reader held, grown past twice what
        SQLite lets it hold before its checkpoint: a card the agent's own orders filled keeps the room for the deletes
        of their retention (the file's checkpoint would spend it on new orders)."""
        row = await self.fetchone("PRAGMA page_size")
        most = _WAL_AUTOCHECKPOINT * ((int(row[0]) if row is not None else 4096) + _WAL_FRAME_HEADER)
        try:
            held = (await asyncio.to_thread(os.path.getsize, _wal(self.path))) > 2 * most
        except OSError:
            held = False
        async with self._write_lock:
            if self._wal_refused and self._group is None:
                await self._checkpoint_refused_wal(room=held)
            return not self._wal_refused

    async def _checkpoint_refused_wal(self, *, room: bool = False) -> None:
        """Before the next write after one a full card refused: new writes go to the WAL first, and SQLite starts it
        over from its beginning (reusing its blocks) only at a write after a checkpoint that copied all of it into the
        file, which runs after a COMMIT that succeeded. On a full card none can while the WAL needs to grow (a reader
        held an older snapshot when it should have started over: a backup's copy, ``edge status``): every write,
        the storage probe's too, failed for good, with free pages in the file (https://www.sqlite.org/wal.html,
        "Avoiding Excessively Large WAL Files"). PASSIVE: it waits for no reader; one still reading keeps the flag
        for the next write.

        The checkpoint writes the WAL's pages into the file, which grows by them when it has no free pages (a reader
        held the WAL from the first orders on, and it filled the card): the card has no byte for that but the room
        kept beside the database. ``room`` (checkpoint_on_room: nothing retention may delete, which the room is kept
        for) gives it back for that when the checkpoint fails for room; it is kept again by retention's next run on a
        full card, or of what the stop frees. Before stop 83 it stayed kept and every order was 503 for good
        (storage83 F3)."""
        checkpoint = "PRAGMA wal_checkpoint(PASSIVE)"
        try:
            try:
                row = await (await self._writer.execute(checkpoint)).fetchone()
            except sqlite3.Error as err:
                if not (room and _no_room_for(self.path, err) and await self.give_room()):
                    raise
                row = await (await self._writer.execute(checkpoint)).fetchone()
        except sqlite3.Error as err:
            self._checkpoint_failed.failed(str(err))
            return
        self._checkpoint_failed.passed()
        self._wal_refused = row is None or row[0] != 0 or row[1] != row[2]  # busy, or frames left to copy

    async def _take_over_wal(self) -> None:
        """Before the next write after the WAL's fsync found no edge.db-wal (a technician's rm while the agent ran):
        SQLite still appends to the removed file through its descriptor, so a crash would lose every commit since the
        last checkpoint, orders answered 201 before the rm too, and the fsync by name can never succeed again. A
        TRUNCATE checkpoint copies all of it into edge.db through that descriptor and syncs edge.db, which makes every
        commit so far durable; new connections (the old ones closed once nothing reads through them) make a new WAL.
        Until it succeeds (a reader holds an older snapshot), each write tries again, and is answered 503 meanwhile:
        its fsync fails as before."""
        try:
            row = await (await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")).fetchone()
            if row is None or row[0] != 0:
                raise StoreError(f"database {self.path}: the checkpoint of the removed write-ahead log was blocked")
            # A completed checkpoint at synchronous=NORMAL has synced edge.db itself. Not by an open and close of our
            # own: closing any descriptor of the file drops this process's POSIX locks on it, and each later close of
            # an outside connection (sqlite3, `edge status`) took itself for the last and deleted the new WAL (the
            # verify83 probe, F4).
            writer = await connect_writer(self.path)
        except (OSError, sqlite3.Error, StoreError) as err:
            self._take_over_failed.failed(str(err))
            return
        try:
            await writer.execute("PRAGMA synchronous = NORMAL")
            reader = await _connect_reader(self.path)
        except BaseException as err:
            await writer.close()
            if not isinstance(err, sqlite3.Error):
                raise
            self._take_over_failed.failed(str(err))
            return
        self._take_over_failed.passed()
        writer.row_factory = reader.row_factory = aiosqlite.Row
        old = (self._writer, self._reader)
        self._writer, self._direct, self._reader = writer, DirectConnection(writer._conn), reader
        for conn in old:  # a read already queued on the old reader runs first: nothing writes until it is closed
            await conn.close()
        self._wal_removed = False
        self._fsync_failed_at = None  # every commit is in edge.db, synced
        log.warning(
            "store_wal_taken_over",
            db=str(self.path),
            hint="edge.db-wal was removed while the agent ran: its commits are now in edge.db; do not remove it",
        )

    async def _undo(self, group: _Group | None, err: BaseException) -> None:
        """Roll back one caller's writes (its savepoint); if SQLite ended the whole transaction, the group is lost."""
        if group is None:  # BEGIN itself failed
            await self._end_transaction()
            return
        try:
            await _to_the_end(self._writer.execute("ROLLBACK TO w"))
            await _to_the_end(self._writer.execute("RELEASE w"))
        except sqlite3.Error:
            pass  # no transaction left to roll back into: seen just below
        self._lost_if_ended(group, err)

    def _eager(self, group: _Group | None) -> None:
        """A write that may not wait ran: a group lingering for it commits now, and the next claims may linger."""
        if group is not None:
            group.company.set()
        self._eager_at = time.monotonic()

    def _group_closed(self, group: _Group, failure: BaseException | None) -> None:
        """A closing trip committed (and synced) the group, or failed to: its callers hear it; its committer, when its
        turn comes, finds it gone."""
        if self._group is group:
            self._group = None
        if failure is None:
            group.done.set_result(None)
        else:
            group.done.set_exception(failure)
            group.done.exception()  # retrieved: the closing caller raises it itself

    def _lost_if_ended(self, group: _Group, err: BaseException) -> None:
        """After a caller's writes were rolled back: if SQLite ended the whole transaction, the group is lost."""
        if not self._writer.in_transaction and self._group is group:
            self._group = None
            lost = err if isinstance(err, sqlite3.Error) else sqlite3.OperationalError("transaction rolled back")
            group.done.set_exception(self._store_error(lost))
            group.done.exception()  # retrieved: a group of one has no other member to see it

    async def _commit(self, group: _Group, linger: float = 0.0) -> None:
        """COMMIT the group once every caller queued before it has added its writes; wake them with the outcome.
        ``linger``: first wait up to this long for a write that does not linger to join (see ``write``)."""
        interrupted = False
        if linger > 0:
            try:
                await wait_real(group.company, linger)
            except asyncio.CancelledError:  # the group's callers still wait: commit it, then end
                interrupted = True
        await self._commit_now(group)
        if interrupted:
            raise asyncio.CancelledError

    async def _commit_now(self, group: _Group) -> None:
        async with self._write_lock:
            if self._group is not group:
                return  # lost already (see _undo)
            self._group = None
            try:
                with self._on_card():  # SQLite checkpoints in a COMMIT now and then, syncing the log and the file
                    await _to_the_end(self._writer.execute("COMMIT"))
            except sqlite3.Error as err:
                await self._end_transaction()
                group.done.set_exception(self._store_error(err))
                group.done.exception()
            except BaseException as err:  # cancelled: the callers must not wait for ever
                await self._end_transaction()
                group.done.set_exception(StoreError(f"database {self.path}: commit interrupted"))
                group.done.exception()
                if isinstance(err, asyncio.CancelledError):
                    raise
            else:
                if not group.durable or not self._must_sync(self._writer._conn.total_changes != group.changes):
                    group.done.set_result(None)  # the next durable write's fsync carries it, or it changed nothing
                    return
                self._unsynced.append(group)
                if self._syncer is None or self._syncer.done():
                    self._syncer = asyncio.create_task(self._sync(), name="store-wal-sync")

    async def _sync(self) -> None:
        """fsync the WAL for every group committed so far, then tell their callers; repeat while more commit. The next
        groups write and COMMIT meanwhile (the writer is free during the fsync), so one fsync carries all of them: the
        write-ahead log is appended in order, so an fsync makes every commit before it durable."""
        while self._unsynced:
            groups, self._unsynced = self._unsynced, []
            try:
                started = time.monotonic()
                with self._on_card():
                    await asyncio.to_thread(sync_to_disk, _wal(self.path), data_only=True)
                self._measured_fsync(_Fsync(started, time.monotonic() - started))
            except OSError as err:
                failure = _sync_failure(self.path, err)
                self._fsync_failed(failure)
                for group in groups:
                    group.done.set_exception(failure)
                    group.done.exception()
                continue
            for group in groups:
                group.done.set_result(None)

    @property
    def fsync_s(self) -> float:
        """How long the WAL's fsync has taken lately (a moving average; 0 before the first)."""
        return self._fsync_s

    @contextmanager
    def _on_card(self) -> Iterator[None]:
        """Around a wait for the card (a fsync, a COMMIT, a write's trip with its fsync): one still waiting after
        ``stall_after_s`` is a stall, told at once (write_problem: /ready, the storage alert), since nothing fails
        to tell it otherwise. The next fsync that succeeds tells that the card writes again (_measured_fsync); one
        that fails keeps the problem told (a dying card stalls, then fails: no all-clear between)."""
        if self.stall_after_s is None:
            yield
            return
        timer = asyncio.get_running_loop().call_later(self.stall_after_s, self._stalled)
        try:
            yield
        finally:
            timer.cancel()

    def _stalled(self) -> None:
        if self.stall is None:
            self.stall = (
                f"database {self.path}: the storage card has not finished a write in {self.stall_after_s:g} s "
                "(a worn or failing SD card stalls so); orders wait until it does"
            )
            self._set_write_problem(self.stall)

    def _must_sync(self, changed: bool) -> bool:
        """Whether a commit needs an fsync: one that changed no row (a sender's retry of an order stored, a start's
        check that finds no job to requeue) needs none of its own, unless an earlier commit's fsync is still to come:
        its caller must not hear "done" before those are durable (a 200 for an order whose 201 waits for its fsync),
        nor after one failed, until one succeeds (a 200 for an order whose 503 said its fsync failed). Rows are what the
        store's transactions change: the schema changes only in migrations, which run apart."""
        waiting = bool(self._unsynced) or (self._syncer is not None and not self._syncer.done())
        return changed or waiting or self._fsync_failed_at is not None

    def _fsync_failed(self, failure: StoreUnavailableError) -> None:
        """A card that fails, as a full one is told; every write syncs until an fsync succeeds (see _must_sync)."""
        self._fsync_failed_at = time.monotonic()
        self._wal_removed |= isinstance(failure.__cause__, FileNotFoundError)
        self._set_write_problem(str(failure))

    def _measured_fsync(self, fsync: _Fsync | None) -> None:
        if fsync is None:  # the write changed nothing and synced nothing
            return
        self.durable_writes += 1
        # Only an fsync begun after the failure covers the commits that failure left unsynced (one running beside it,
        # from the other thread, may have begun before them).
        if self._fsync_failed_at is not None and fsync.started > self._fsync_failed_at:
            self._fsync_failed_at = None
        if self.stall is not None:  # the card finished a write: it writes again
            stall, self.stall = self.stall, None
            if self.write_problem == stall:
                self._set_write_problem(None)
        took = fsync.took
        self._fsync_s = took if not self._fsync_s else self._fsync_s + (took - self._fsync_s) / 8

    def _store_error(self, err: sqlite3.Error) -> StoreError:
        if unavailable(err):
            why = str(err)
            code = getattr(err, "sqlite_errorcode", None)
            # A read-only card shows as "disk I/O error" or "readonly": say so, with what to do (not for a full disk).
            # On the loop, on a failed write only: statvfs and the times of an inode the open database holds in
            # memory, which a read-only file system refuses at once without reading the card.
            full = code is not None and code & 0xFF == sqlite3.SQLITE_FULL
            self._wal_refused |= full or no_room(self.path, err)
            if locked(err):  # SQLite's words read like a fault of the card's; it is a technician's sqlite3, mostly
                why = f"{held_open(self.path)}; SQLite said: {err}"
            elif not full and read_only(self.path):
                why = f"{read_only_advice(self.path.parent)}; SQLite said: {err}"
            self._set_write_problem(f"database {self.path}: cannot write: {why}")
            return StoreUnavailableError(f"database {self.path}: cannot write: {why}")
        return self._failure(err)

    def _failure(self, err: sqlite3.Error) -> StoreError:
        """A damaged file is also a write problem: the storage alert and /ready say so while the agent runs."""
        error = failure(self.path, err)
        if isinstance(error, StoreDamagedError):
            self._set_write_problem(str(error))
            self._damaged = True  # for good: a write that fits elsewhere in the file does not mend it
        return error

    @asynccontextmanager
    async def publishing(self, bus: EventBus) -> AsyncIterator[tuple[aiosqlite.Connection, list[Event]]]:
        """A transaction whose events are published once it has committed, as datasette holds a write's events until
        the write succeeded: append them to the list inside. An error or a cancellation, inside or at COMMIT, rolls
        the write back and drops them: nobody hears of a change that did not happen."""
        held: list[Event] = []
        async with self.transaction() as conn:
            yield conn, held
        for event in held:
            bus.publish(event)

    async def _end_transaction(self) -> None:
        """Roll back whatever is open once everything queued before has run, even if cancelled meanwhile.

        sqlite3's rollback() does nothing outside a transaction (SQLITE_FULL may have rolled back already), and it
        runs on the connection's thread after any statement still queued there, so it sees the true state."""
        try:
            await _to_the_end(self._writer.rollback())
        except sqlite3.Error as err:  # the original error matters more; the next BEGIN would report this one
            log.error("store_rollback_failed", db=str(self.path), error=str(err))

    async def give_room(self) -> bool:
        """Gives back the room kept beside the database (open_keeping_room) while the agent runs: a card that filled
        under it needs that room for the writes that make room (retention's deletes go to the WAL first). False when
        there was none to give. Made again by keep_room once the deletes are written, else of what the stop frees."""
        if self._room is None or not await asyncio.to_thread(_give_room, self._room):
            return False
        _room_given(self.path, "the card is full")
        return True

    async def keep_room(self) -> int:
        """Makes the room given back (give_room) again, of what the card has free, up to ROOM_BYTES, as a clean stop
        does: retention's run on a full card takes it back once its deletes are written, before new orders can spend
        it, so a later run can write its deletes too. Returns the bytes kept (0: it was there, or nothing is free)."""
        return 0 if self._room is None else await asyncio.to_thread(_take_room_back, self._room)

    @asynccontextmanager
    async def wal_within_room(self) -> AsyncIterator[None]:
        """While retention makes room on a full card: SQLite checkpoints its WAL at a COMMIT once it holds half the
        room kept beside the database, not at its default of 1000 pages (with 1 KiB pages, the whole room with the -shm
        beside it: on a card full to its last byte the deletes after that failed, "database or disk is full", and every
        full-card run after them, the fullstart probe). A checkpoint copies the deletes into the file (their pages go to
        its freelist: it does not grow), and the next write starts the WAL over from its beginning once every frame is
        in the file and no reader holds an older snapshot (https://www.sqlite.org/wal.html, "Concurrency" and
        "Automatic Checkpoint"). As automatic checkpoints are, PASSIVE: it never waits for a reader,
        and one a reader held back goes on at the next COMMIT. Not TRUNCATE: the WAL keeps its blocks on the card,
        which another program (journald) would take meanwhile. Back to the default after: a checkpoint writes the
        pages again, and fewer, bigger ones cost a card less."""
        row = await self.fetchone("PRAGMA page_size")
        frames = ROOM_BYTES // 2 // ((int(row[0]) if row is not None else 4096) + _WAL_FRAME_HEADER)
        async with self._write_lock:
            await self._writer.execute(f"PRAGMA wal_autocheckpoint = {frames}")
        try:
            yield
        finally:
            async with self._write_lock:
                await _to_the_end(self._writer.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT}"))

    async def card_has_room(self) -> bool:
        """Whether the card has room again, not counting the room a start gives back on a full card: the room to keep
        and as much again free (a start that gave it back runs on it, and its writes succeed on a full card)."""
        return await asyncio.to_thread(_free_bytes, self.path.parent) >= 2 * ROOM_BYTES

    async def probe_space(self) -> bool:
        """A write that needs 64 KiB of fresh pages; only this clears ``write_problem``, because on a full disk
        small updates in existing pages still succeed while new orders do not fit. A damaged file fails it for good."""
        if self._damaged:
            return False
        try:
            async with self.transaction() as conn:
                await conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('space_probe', zeroblob(65536))")
                await conn.execute("DELETE FROM meta WHERE key = 'space_probe'")
        except StoreError:
            return False
        self._set_write_problem(None)
        return True

    def _set_write_problem(self, problem: str | None) -> None:
        if (problem is None) == (self.write_problem is None):
            return  # report transitions only, not every failing write
        self.write_problem = problem
        if self.on_write_health is not None:
            self.on_write_health(problem)

    async def write(
        self,
        fn: Callable[[DirectConnection], Coroutine[Any, Any, T]],
        *,
        then: Callable[[], None] | None = None,
        linger: bool = False,
    ) -> T:
        """``transaction`` for a body that awaits nothing but its connection, run whole on the writer's thread in one
        trip (see DirectConnection): same group commit, same all-or-nothing, same return once durable. ``fn`` is called
        on the loop once the writer is ours (it may take what is pending then); its coroutine runs on the thread.

        A write that nobody waits to join (no group open, no caller queued for the writer, not lingering), which is a
        store's usual order, runs its COMMIT and the WAL's fsync in the same trip: one trip instead of three (body,
        COMMIT, fsync on another thread), the same guarantees. Writers that come meanwhile wait for that fsync and
        share the next one. So does a write that may not wait joining a group nobody else waits to join (an order
        joining a lingering claim): it commits the whole group and syncs in its trip, and every caller in the group
        hears the outcome then.

        Writers that queue while the body runs join its group (fewer commits, fewer pages written). ``then`` is called
        on the loop once the body has run and the group's COMMIT is queued (or the body failed): a write it schedules
        goes into the next group, which is how a batch keeps what it leaves over out of its own transaction.

        ``linger``: a write that may wait a moment (a spool's claim or printed mark) and opens a group holds its
        COMMIT until a write that may not (an order) joins, at most twice as long as an fsync has lately taken (and
        ``LINGER_MAX_S``), and only if such a write ran in the last ``LINGER_ONLY_WITHIN_S``: a printer working through
        a backlog with no orders coming does not wait. On an SD card the order then shares the fsync instead of waiting
        behind one of its own: one client sending orders one after another pays about one fsync per order, not two
        (its next order comes 5-10 ms after the claim; one fsync's wait caught most, two catch nearly all). The
        lingering caller still returns only once its write is durable, so a claim is on disk before a byte of its job
        is sent.

        Cancelled meanwhile, the body still runs to its end and its writes commit with the group (as a cancellation
        at COMMIT always could); the cancellation is raised once the group's bookkeeping is done."""
        async with self._writer_turn() as refused:
            if refused is not None:
                fn(self._direct).close()  # called once the writer is ours, as promised: it may take what is pending
                if then is not None:
                    then()
                raise refused
            group = self._group
            if group is not None:
                group.durable = True  # a group a write that need not be durable opened (see transaction) now must be
            alone = group is None and not linger and not self._queued
            # A write that may not wait joining a group nobody else waits to join (an order joining a lingering claim)
            # has nothing to wait for: it commits the group and syncs in its own trip too, not in two more after it.
            closing = group is not None and not linger and not self._queued
            body = fn(self._direct)
            conn = self._writer._conn
            changes = conn.total_changes  # nothing runs on the writer now: the lock is ours
            sync_unchanged = self._must_sync(False)
            if alone:
                trip = asyncio.ensure_future(self._writer._execute(_run_alone, conn, body, self.path, sync_unchanged))
            elif closing:
                assert group is not None
                closed = (conn, body, self.path, group.changes, sync_unchanged)
                trip = asyncio.ensure_future(self._writer._execute(_run_closing, *closed))
            else:
                trip = asyncio.ensure_future(self._writer._execute(_run_whole, conn, body, group is None))
            with self._on_card():
                cancelled = await _wait_out(trip)  # the bookkeeping below must run whatever happens to the caller
            err = trip.exception()
            if alone:
                if err is None:
                    self._measured_fsync(trip.result()[1])
                elif isinstance(err, StoreUnavailableError):  # committed, its fsync failed (_synced_if_changed)
                    self._fsync_failed(err)
            elif closing and isinstance(err, _GroupFailed):
                assert group is not None
                failed = err.error
                if isinstance(failed, sqlite3.Error):
                    err = self._store_error(failed)
                else:
                    self._fsync_failed(failed)
                    err = failed
                self._group_closed(group, err)
            elif closing and err is None:
                assert group is not None
                self._measured_fsync(trip.result()[1])
                self._group_closed(group, None)
            elif group is None and err is None:
                group = self._group = _Group(asyncio.get_running_loop().create_future(), changes)
                company_likely = time.monotonic() - self._eager_at < LINGER_ONLY_WITHIN_S
                wait = min(2 * self._fsync_s, LINGER_MAX_S) if linger and company_likely else 0.0
                self._committer = asyncio.create_task(self._commit(group, wait), name="store-group-commit")
            elif group is None:
                await self._end_transaction()  # the transaction we began holds nothing else
            elif err is not None:
                self._lost_if_ended(group, err)
            if not linger:
                self._eager(group)
            if then is not None:
                then()
            if isinstance(err, sqlite3.Error):
                raise self._store_error(err) from err
            if err is not None:
                raise err
            if cancelled:
                raise asyncio.CancelledError
        if alone or closing:
            return trip.result()[0]  # committed and synced in its trip
        assert group is not None  # the trip succeeded: its writes are in this group
        await _to_the_end(asyncio.shield(group.done))
        return trip.result()

    async def write_publishing(
        self,
        bus: EventBus,
        fn: Callable[[DirectConnection, list[Event]], Coroutine[Any, Any, T]],
        *,
        linger: bool = False,
    ) -> T:
        """``write`` whose events (appended to the list by the body) are published once it has committed, as in
        ``publishing``."""
        held: list[Event] = []
        result = await self.write(lambda conn: fn(conn, held), linger=linger)
        for event in held:
            bus.publish(event)
        return result

    async def fetchall(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[aiosqlite.Row]:
        try:
            # execute_fetchall runs and finalizes the statement in one step: a cursor left open by a
            # concurrent caller would hold an old WAL snapshot and hand back rows older than our own commit.
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as err:
            raise self._failure(err) from err

    async def fetchone(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def schema_version(self) -> int:
        """The schema version this file is at (PRAGMA user_version), as the reader sees it."""
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row is not None else 0

    async def writable(self) -> str | None:
        """None when a write goes through, else why not (for /ready and doctor)."""
        try:
            async with self.transaction() as conn:
                await conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('write_probe', datetime('now'))")
        except StoreError as err:
            return str(err)
        return None
