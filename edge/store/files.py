"""A database file as a whole, with or without the agent running: checks, copies, and the reads `edge` commands make
without the agent. Blocking (sqlite3): callers on the event loop run these in a thread."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import sqlite3
from collections.abc import Sequence, Set
from pathlib import Path
from typing import Any

import structlog

from edge.errors import SchemaTooOldError, StoreError, StoreUnreadableError
from edge.printing.text import names_number, typed_forms
from edge.store.alerts import LOGIN_REST_ARGS, LOGIN_REST_SQL, LoginRest, login_rest_of
from edge.store.identity import (
    EVENT_KEY_MARK_KEY,
    FIRST_START_UNSETTLED_KEY,
    HARDWARE_KEY,
    MAY_HAVE_PRINTED_KEY,
    RAISE_MARK_SQL,
    CardMoved,
    acked_key,
    acked_recorded,
    card_moved,
    move_to_store,
    new_event_key_mark,
    recorded_store,
)
from edge.store.jobs import BACK_IN_LINE, PRINTABLE
from edge.store.meta import INCARNATION_KEY, UPSERT_META
from edge.store.rows import PrintableJob

log = structlog.get_logger()


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What a database file says about itself."""

    problems: tuple[str, ...]  # what SQLite's check found; ("ok",) when the file is sound
    version: int  # schema version (PRAGMA user_version)
    store_id: str | None  # the store it belongs to; None if it never recorded one
    newest_order_at: float | None  # received_at of its newest order (full checks only); None when it has none

    @property
    def sound(self) -> bool:
        return self.problems == ("ok",)


def _read_only(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)


def _require_current(conn: sqlite3.Connection, path: Path) -> None:
    """SchemaTooOldError for a file at an older schema than this release's, for a read that names this schema's
    columns: a pre-upgrade backup restored before the agent's start migrated it, or a box between upgrade.sh's install
    and migrate. Before stop 82 `edge preview` said only "no such column: e.pulse_lost" (the upgrade82 probe, F2). A
    newer one is read as it is: its columns are ours and more."""
    from edge.store.migrations import latest_version, load_migrations  # aiosqlite: not for the files' other readers

    version, latest = int(conn.execute("PRAGMA user_version").fetchone()[0]), latest_version(load_migrations())
    if version < latest:
        raise SchemaTooOldError(
            f"database {path} is at schema version {version}, this agent expects {latest}: run `edge migrate` (the"
            " agent's start does it too), then ask again"
        )


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_readable(path: Path) -> None:
    """StoreUnreadableError if this process cannot open ``path`` (SQLite says only "unable to open database file",
    as for a damaged one): a file root copied with mode 0600 for an `edge` command that became the agent's user."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        raise StoreUnreadableError(f"{path} does not exist") from None
    except PermissionError:
        raise StoreUnreadableError(
            f"cannot read {path} as user {_user()}: copy it somewhere that user can read, or chmod a+r {path}"
        ) from None


def check_file(path: Path, *, full: bool = False) -> FileCheck:
    """Read-only: a quick check (a backup just written), or ``full``: the integrity check and the newest order (the
    doctor). StoreUnreadableError if this process cannot open it; StoreError (SQLite's words) if the file is no
    database or cannot be read."""
    check_readable(path)
    try:
        conn = _read_only(path)
        try:
            check = "PRAGMA integrity_check" if full else "PRAGMA quick_check"
            problems = tuple(row[0] for row in conn.execute(check))
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            newest = conn.execute("SELECT MAX(received_at) FROM orders").fetchone()[0] if full else None
            return FileCheck(problems=problems, version=version, store_id=recorded_store(conn), newest_order_at=newest)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(str(err)) from err


def card_moved_of_file(path: Path) -> CardMoved | None:
    """Read-only: the last time a database file found itself in another box than the one that ran it (see
    identity.CARD_MOVED_KEY); None if never, or the file cannot say."""
    try:
        conn = _read_only(path)
        try:
            return card_moved(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def store_of_file(path: Path) -> str | None:
    """The store the database file belongs to (``recorded_store``), read without writing and without a check
    (`edge config check`); None also when there is no such file or it cannot be read: the agent's start says what it
    makes of it."""
    try:
        if not path.is_file():
            return None
        conn = _read_only(path)
        try:
            return recorded_store(conn)
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None


def _at_rest(path: Path) -> sqlite3.Connection | None:
    """A file closed cleanly, read from the file alone (``immutable``: without the -shm a full card cannot make, and a
    read-only connection leaves behind); None where a WAL may hold newer pages."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size:
        return None
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def schema_of_file(path: Path, *, at_rest: bool = False) -> int | None:
    """The database file's schema version (``PRAGMA user_version``), read without writing; None where there is no
    such file or it cannot be read (the agent's start says what it makes of that). ``at_rest``: of a file closed
    cleanly only (``_at_rest``)."""
    try:
        if not path.is_file():
            return None
        conn = _at_rest(path) if at_rest else _read_only(path)
        if conn is None:
            return None
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None


def login_rest_of_file(path: Path) -> LoginRest | None:
    """The relay's rest the agent began after a refused login (``AlertStore.login_rest``), read without writing by a
    command that mails without the agent (the health timer); None where there is none or the file cannot say. A file
    the agent closed (or a killed one left with its WAL), read at once or not at all: a short timeout, never a wait
    behind an agent starting just then."""
    try:
        if not path.is_file():
            return None
        conn = _at_rest(path) or _read_only(path, timeout=0.2)
        try:
            row = conn.execute(LOGIN_REST_SQL, LOGIN_REST_ARGS).fetchone()
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None
    return login_rest_of(row[0] if row is not None else None)


def copy_database(source: Path, target: Path, *, standalone: bool = False) -> None:
    """Through SQLite, not a file copy: consistent while the agent writes, and a WAL target stays consistent too.
    ``standalone`` (a backup file): with a rollback journal, so that reading it (its check, a restore) leaves no -wal
    and -shm files beside it, and without the file's incarnation (Database._check_file); a copy of the agent's
    database is in WAL mode. StoreError (SQLite's words) if it
    fails."""
    try:
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(target)
            try:
                # In one step, i.e. one read transaction: in WAL mode it never blocks the agent's writer, and no commit
                # can make it start over (stepwise, it restarted at every commit of the agent: under an order every
                # 50 ms a 200 MiB copy never finished). Its time is bounded by the file's size alone.
                src.backup(dst, pages=-1)
                if standalone:
                    dst.execute("PRAGMA journal_mode=DELETE")
                    # Not the agent's file: copied back over it by hand while the agent runs, it is told apart.
                    if dst.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
                        dst.execute("DELETE FROM meta WHERE key = ?", (INCARNATION_KEY,))
                        dst.commit()
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as err:
        raise StoreError(str(err)) from err


def leave_wal(path: Path) -> None:
    """The database at ``path`` out of WAL mode: its write-ahead log written back into it and removed, with its -shm.
    StoreError if it cannot (then the log stays)."""
    try:
        conn = sqlite3.connect(path)
        try:
            [(mode,)] = conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from err
    if mode != "delete":
        raise StoreError(f"database {path}: its write-ahead log cannot be written back into it")


def restoring_path(db_path: Path) -> Path:
    """Where `edge restore` prepares the backup that goes in place of ``db_path``."""
    return db_path.with_name(db_path.name + ".restoring")


def remove_restore_leftover(db_path: Path) -> None:
    """A restore's copy left by a kill (as large as the database, on an SD card): only ever removed under the data
    directory's lock, which a restore in progress holds."""
    left = restoring_path(db_path)
    if left.exists():
        left.unlink()
        log.info("restore_leftover_removed", path=str(left))


def printed_until_mark(path: Path) -> float | None:
    """Read-only: until when a database file may have printed orders: when its newest order arrived (our clock) or was
    created (its sender's), whichever is later, or
    the may-have-printed mark a restore or its first start left in it, if later (a backup restored twice: the second
    replaces a database that holds the first one's mark, not the orders behind it); None if neither. StoreError if the
    file cannot say (damaged where the orders are)."""
    [(until,)] = _read_all(path, _PRINTED_UNTIL_SQL, (MAY_HAVE_PRINTED_KEY,))
    return None if until is None else float(until)


def mark_unsettled(path: Path) -> bool:
    """Read-only: whether a database file's may-have-printed mark is still on the box's clock, central's not having
    dated it (a new box's first start before the line was up). StoreError if the file cannot say."""
    return bool(_read_all(path, "SELECT 1 FROM meta WHERE key = ?", (FIRST_START_UNSETTLED_KEY,)))


# The newest order's created_at too: the mark is compared with created_at (the sender's clock), and received_at is on
# the box's, a month behind on a box living with NTP blocked (before stop 81 what the replaced database took since the
# backup then came back by recovery and printed unmarked: the verify81b probe, V2).
_PRINTED_UNTIL_SQL = (
    "SELECT MAX(t) FROM (SELECT MAX(received_at) AS t FROM orders"
    " UNION ALL SELECT MAX((julianday(created_at) - 2440587.5) * 86400.0) FROM orders"
    " UNION ALL SELECT CAST(value AS REAL) FROM meta WHERE key = ?)"
)


def revisions_taken(path: Path) -> set[tuple[str, int]]:
    """Read-only: every revision of every order a database file took, as (order id, revision): those it holds, and
    those a restore recorded in it as taken by the database it replaced (a backup restored twice). StoreError if the
    file cannot say (damaged where the orders are)."""
    try:
        conn = _read_only(path)
        try:
            return _revisions_held(conn) | acked_recorded(conn)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from None


def _revisions_held(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    """Every (order id, revision) a database holds; one of a schema before revisions (10 and older) holds each
    order's first."""
    try:
        rows = conn.execute(_REVISIONS_SQL).fetchall()
    except sqlite3.OperationalError:  # no such table order_revisions (or column revision): an older backup
        rows = conn.execute(_FIRST_REVISIONS_SQL).fetchall()
    return {(str(order_id), int(revision)) for order_id, revision in rows}


_REVISIONS_SQL = "SELECT id, revision FROM orders UNION SELECT order_id, revision FROM order_revisions"
_FIRST_REVISIONS_SQL = "SELECT id, 1 FROM orders"


def mails_settled(path: Path) -> list[tuple[str, str, str, str, float | None]]:
    """Read-only: the alert mails a database file has done with (sent, dead, discarded, superseded), by Message-ID: a
    backup restored over it may hold them as waiting. StoreError if the file cannot say."""
    return [tuple(row) for row in _read_all(path, _SETTLED_MAILS_SQL, ())]


_SETTLED_MAILS_SQL = (
    "SELECT message_id, state, delivered, refused, sent_at FROM alert_mails"
    " WHERE message_id IS NOT NULL AND state != 'pending'"
)
_SETTLE_MAIL_SQL = (
    "UPDATE alert_mails SET state = ?2, delivered = ?3, refused = ?4, sent_at = ?5"
    " WHERE message_id = ?1 AND state = 'pending'",
    None,  # older than Message-IDs (schema 7): none to match, its waiting mails may go again
)

_DONE = ("printed", "discarded")
_NOT_OUT = ("printing", "printed")  # any other state: it has not reached paper there


def waiting_jobs(path: Path) -> list[str]:
    """Read-only: the idempotency keys of a database file's jobs that have not printed (nor been discarded)."""
    return [r[0] for r in _read_all(path, "SELECT idempotency_key FROM print_jobs WHERE state NOT IN (?, ?)", _DONE)]


def maybe_printed(path: Path, keys: list[str]) -> list[str]:
    """Read-only: of ``keys``, the jobs a database file may have printed: printing or printed there, or gone (purged
    once printed). StoreError if the file cannot say (damaged where the jobs are)."""
    found = dict(_read_all(path, "SELECT idempotency_key, state FROM print_jobs WHERE state NOT IN (?, ?)", _NOT_OUT))
    return [key for key in keys if key not in found]


def _read_all(path: Path, sql: str, params: tuple[str, ...]) -> list[Any]:
    try:
        conn = _read_only(path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from err


def prepare_restored_file(
    path: Path,
    *,
    may_have_printed_until: float | None,
    printed_since: list[str],
    not_out: list[str],
    acked: Set[tuple[str, int]] = frozenset(),
    settled_mails: Sequence[tuple[str, str, str, str, float | None]] = (),
    store_id: str | None,
    now: float,
    unsettled: tuple[str | None, float] | None = None,
) -> int:
    """A backup about to replace a database: orders first stored from now on and created up to
    ``may_have_printed_until`` (what the replaced database may have printed; None: nothing, the backup's own mark
    stands) print marked COPY, as do the backup's waiting jobs the replaced database may have printed since
    (``printed_since``, idempotency keys). Its jobs the replaced database has still waiting, never out (``not_out``),
    that the backup caught 'printing' (a spool trying an offline printer when it was taken) go back in line unmarked:
    a start would take them for a crash's and mark them COPY at their first print. Of the revisions the replaced
    database took (``acked``: answered 2xx, maybe printed), those the backup lacks are recorded: a sender's resend of
    one prints marked COPY (see identity.acked_before_restore). Its alert mails still waiting that the replaced
    database had done with since (``settled_mails``, by Message-ID) are taken as it left them: not mailed again. With
    ``store_id``, a deliberate move of the file to that store (see identity.move_to_store). ``unsettled`` (boot id,
    monotonic time): the mark is the restore's own moment on the box's clock, which may be wrong (a new card: no
    battery, the image's date until NTP), kept to be put on central's clock as a new database's first start is
    (identity.FIRST_START_UNSETTLED_KEY); without it, one the backup carries goes: the mark then stands as it is.
    Returns how many orders the backup lacks of those the replaced one took."""
    try:
        conn = sqlite3.connect(path)
        try:
            with conn:
                held = _revisions_held(conn)
                missing = acked - held
                # In meta, which every schema has: a backup of an older one is migrated only at the next start.
                conn.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')",
                    [(acked_key(order_id, revision),) for order_id, revision in sorted(missing)],
                )
                if unsettled is not None and may_have_printed_until is not None:  # the restore's moment: later than
                    # anything its backup knew, on the box's clock, which the record kept with it has central date
                    conn.execute(UPSERT_META, (MAY_HAVE_PRINTED_KEY, repr(may_have_printed_until)))
                elif may_have_printed_until is not None:  # a mark only moves on: the backup's may be the later one
                    conn.execute(
                        RAISE_MARK_SQL, (MAY_HAVE_PRINTED_KEY, repr(may_have_printed_until), may_have_printed_until)
                    )
                # The box the backup ran in is not the one it is put on: the next start records this one, no clone.
                conn.execute("DELETE FROM meta WHERE key = ?", (HARDWARE_KEY,))
                # The backup's own (its box's boot) would move the mark at the next start (first_start_unsettled).
                conn.execute("DELETE FROM meta WHERE key = ?", (FIRST_START_UNSETTLED_KEY,))
                if unsettled is not None:
                    boot, mono = unsettled
                    conn.execute(UPSERT_META, (FIRST_START_UNSETTLED_KEY, json.dumps({"boot": boot, "mono": mono})))
                # Its events from now on are a new box's: the replaced database may have reported, after the backup,
                # events of the same orders and job ids as the ones this one will record (see EVENT_KEY_MARK_KEY).
                conn.execute(UPSERT_META, (EVENT_KEY_MARK_KEY, new_event_key_mark()))
                _older_too(conn, _PRINTED_SINCE_SQL, [(key, *_DONE) for key in printed_since])
                _older_too(conn, _BACK_IN_LINE_SQL, [(key,) for key in not_out])
                _older_too(conn, _SETTLE_MAIL_SQL, list(settled_mails))
            if store_id is not None:
                move_to_store(conn, store_id, now=now)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from err
    return len({order_id for order_id, _ in missing} - {order_id for order_id, _ in held})


def _older_too(conn: sqlite3.Connection, sqls: tuple[str, str | None], rows: Sequence[tuple[Any, ...]]) -> None:
    """``rows`` through the first statement, or the second for a backup of an older schema that lacks what the first
    names (a restored backup is migrated at the next start, not before); none: such a backup has nothing to mark."""
    if not rows:
        return
    try:
        conn.executemany(sqls[0], rows)
    except sqlite3.OperationalError:  # no such column (went_out: 17, message_id: 7) or table (order_revisions: 11)
        if sqls[1] is not None:
            conn.executemany(sqls[1], rows)


_PRINTED_SINCE_SQL = (
    "UPDATE print_jobs SET copy = 1, went_out = 1 WHERE idempotency_key = ? AND state NOT IN (?, ?)",
    "UPDATE print_jobs SET copy = 1 WHERE idempotency_key = ? AND state NOT IN (?, ?)",
)
_BACK_IN_LINE_SQL = (
    f"UPDATE print_jobs SET state = {BACK_IN_LINE} WHERE idempotency_key = ? AND state = 'printing'",
    "UPDATE print_jobs SET state = 'queued' WHERE idempotency_key = ? AND state = 'printing'",
)


def _numbered(conn: sqlite3.Connection, ref: str) -> str | None:
    """The id of the latest order whose ticket shows the number ``ref`` (names_number): sent so, or one with more than
    printable ASCII in it that prints so ("B-10\u200b43" as "B-1043"; the inject81 probe, F1), newest first."""
    forms = tuple(sorted(typed_forms(ref)))
    marks = ",".join("?" * len(forms))
    rows = conn.execute(
        f"SELECT id, number FROM orders WHERE number IN ({marks}) OR number GLOB '*[^ -~]*' ORDER BY received_at DESC",
        forms,
    )
    return next((row["id"] for row in rows if names_number(ref, row["number"], row["id"])), None)


def order_jobs(path: Path, ref: str, *, by_id: bool = False) -> list[PrintableJob]:
    """Read-only, with or without the agent: the print jobs of the one order ``ref`` names, oldest first: the latest
    order with that number (a ticket in hand; numbers come round daily), else the order with that id (``by_id``: only
    that). One order, not every order ever numbered so, nor another whose id a till's running ids made the same."""
    order = (
        "?1"
        if by_id
        else "COALESCE(?2,"
        # the number its first ticket showed, a revision changed since
        " (SELECT order_id FROM order_revisions WHERE json_extract(payload, '$.number') = ?1"
        " ORDER BY received_at DESC LIMIT 1), ?1)"
    )
    try:
        conn = _read_only(path)
        try:
            _require_current(conn, path)
            conn.row_factory = sqlite3.Row
            named = (ref,) if by_id else (ref, _numbered(conn, ref))
            rows = conn.execute(PRINTABLE + f" WHERE o.id = {order} ORDER BY j.id", named).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"database {path}: {err}") from None
    return [PrintableJob.from_row(r) for r in rows]
