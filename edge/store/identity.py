"""Which store a database belongs to (table store_identity): recorded at the agent's first start, checked on restore."""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
from datetime import datetime
from pathlib import Path

import structlog

from edge.clock import CLOCK_OFF_S
from edge.errors import ConfigError
from edge.hardware import STABLE_PREFIXES
from edge.store.db import Database, Writer
from edge.store.meta import UPSERT_META

log = structlog.get_logger()

# Table meta: until when (unix seconds) orders this database does not know may be on paper all the same: set at a
# new database's first start (the store's earlier system, or a card that died, printed before it) and by a restore
# (the arrival of the newest order the replaced database took). Recovered orders it first stores that were created
# before then print marked COPY; those created longer before then than a ticket may wait are history
# (edge.sync.recovery).
MAY_HAVE_PRINTED_KEY = "may_have_printed_until"
# A new database's first start on this boot's monotonic clock, until central's clock dated it (edge.sync.recovery).
FIRST_START_UNSETTLED_KEY = "first_start_unsettled"
# Table meta: this database's mark in the idempotency keys of its status events (edge.store.outbox.add_outbox), set at a
# new database's first start and by a restore. A new box at a store recovers the orders the box before it reported and
# counts its job ids from 1 again: without a mark of its own its events would repeat the earlier box's keys with other
# bodies, which central refuses for good. A database from before the mark has none, and keeps its keys as they were.
EVENT_KEY_MARK_KEY = "event_key_mark"
# Table meta: the identities of the box that runs this database (edge.hardware.hardware_ids), a JSON list. A card
# cloned or moved into another box carries the database and config, not the box: at a start in a box that shares none
# of them the database is treated as a restore's (CARD_MOVED_KEY). Removed by `edge restore`: a backup put on a new
# box is no clone, the next start records that box.
HARDWARE_KEY = "hardware_ids"
# Table meta: the last such move, JSON {"at": its start, "ran_until": the newest order the other box took (None: it
# took none)}, for `edge doctor`.
CARD_MOVED_KEY = "card_moved"
# Moves the may-have-printed mark on, never back: a later one (a restore's, on a clock ahead) stays.
RAISE_MARK_SQL = (
    "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE"
    " SET value = ?2 WHERE CAST(value AS REAL) < ?3"
)
# The recovery cursor's key in table meta (edge.sync.recovery.CURSOR_KEY); the store does not import the sync part.
_CURSOR_KEY = "central_cursor"


async def record_store(conn: Writer, store_id: str, *, now: float, db_path: Path) -> None:
    """Records ``store_id`` the first time; ConfigError naming both stores if the database is another store's.

    On a schema without the table (migrated down below it) there is nothing to record.
    """
    found = await conn.execute_fetchall("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_identity'")
    if not found:
        return
    await conn.execute(
        "INSERT OR IGNORE INTO store_identity(singleton, store_id, recorded_at) VALUES (1, ?, ?)", (store_id, now)
    )
    recorded = next(iter(await conn.execute_fetchall("SELECT store_id FROM store_identity")))[0]
    check_store(store_id, recorded, db_path)


async def in_service_since(db: Database) -> float | None:
    """Since when this database has been its store's: its first start's record (a restore's time after one), or the
    oldest order it keeps by central's clock where that is later: a box first started on a clock years behind, set
    right by NTP since, was three years without a backup (the verify79 probe, V2). None without the record."""
    try:
        row = await db.fetchone("SELECT recorded_at, (SELECT MIN(created_at) FROM orders) FROM store_identity")
    except sqlite3.OperationalError:
        return None
    if row is None:
        return None
    try:
        oldest = datetime.fromisoformat(row[1]).timestamp() if row[1] else None
    except ValueError:  # a row written by hand
        oldest = None
    return max(float(row[0]), oldest) if oldest is not None else float(row[0])


def check_store(store_id: str, recorded: str | None, db_path: Path) -> None:
    """ConfigError naming both stores if the database at ``db_path`` is another store's (``recorded``; None: none)."""
    if recorded is not None and recorded != store_id:
        raise ConfigError(
            "agent.store_id",
            f"is {store_id!r} but database {db_path} belongs to store {recorded!r}; start with that store's config"
            f" (its waiting tickets and unsent events are {recorded!r}'s); a box moved to another store starts with an"
            " empty data_dir; only a store renamed keeps its database: `edge backup` then `edge restore --force FILE`",
        )


async def _mark_first_start(conn: Writer, *, now: float) -> bool:
    """At the agent's start: a database that never saw an order and has no mark yet is a new box's, and everything
    before ``now`` may have printed elsewhere (MAY_HAVE_PRINTED_KEY). From the start of its second: central's times
    are often whole seconds, and an order of that second is after the start. Not by `edge migrate`: the box may not
    start for hours after it. True when it was set."""
    cursor = await conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM seen_orders)",
        (MAY_HAVE_PRINTED_KEY, repr(float(now // 1))),
    )
    return cursor.rowcount == 1


@dataclasses.dataclass(frozen=True)
class Started:
    """What the agent's start recorded (first_records)."""

    new_box: bool  # a new database's first start
    moved: CardMoved | None  # the database ran in another box until now (record_hardware)


async def first_records(
    conn: Writer,
    store_id: str,
    *,
    now: float,
    db: Path,
    boot: str | None = None,
    mono: float = 0.0,
    hardware: frozenset[str] = frozenset(),
) -> Started:
    """What the agent's start records: the store, a new database's first start, with its monotonic time ``mono`` in
    this ``boot``, until central's clock has dated it (a later run of the same boot can then, if the first run never
    reached central: OrderStore.first_start_unsettled), and the box's ``hardware`` (record_hardware)."""
    await record_store(conn, store_id, now=now, db_path=db)
    new_box = await _mark_first_start(conn, now=now)
    if new_box:
        await conn.execute(UPSERT_META, (EVENT_KEY_MARK_KEY, new_event_key_mark()))
        if boot is not None:
            await conn.execute(UPSERT_META, (FIRST_START_UNSETTLED_KEY, json.dumps({"boot": boot, "mono": mono})))
    moved = await record_hardware(conn, hardware, now=now, boot=boot, mono=mono)
    return Started(new_box=new_box, moved=moved)


@dataclasses.dataclass(frozen=True)
class CardMoved:
    """A database found at a start in a box other than the one that ran it: a cloned card, or one moved."""

    at: float  # this start (the box's clock)
    ran_until: float | None  # when the other box took its newest order (its clock); None if it took none


async def record_hardware(
    conn: Writer, ids: frozenset[str], *, now: float, boot: str | None = None, mono: float = 0.0
) -> CardMoved | None:
    """At the agent's start: records the box's hardware ``ids`` with the database; a CardMoved when it ran in a box
    that shares none of them. Its orders are then treated as a restore's: recovered ones created before now print
    marked COPY (the other box may have printed them: the may-have-printed mark, moved on as a restore moves it, and
    dated on central's clock as a first start is), and its status events get a mark of their own (the other box may
    still report the same orders and job ids). Nothing when no id can be read."""
    if not ids:
        return None
    rows = await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (HARDWARE_KEY,))
    recorded = frozenset(json.loads(next(iter(rows))[0])) if rows else None
    if recorded != ids:  # a start that finds it as it was writes nothing: no fsync for it
        await conn.execute(UPSERT_META, (HARDWARE_KEY, json.dumps(sorted(ids))))
    if recorded is None or recorded & ids:
        return None
    if not (_stable(recorded) and _stable(ids)):
        # Only ids a box changes without becoming another (a USB adapter's MAC) on one side: this could be a swapped
        # dongle as well as another box, and marking orders never printed COPY is worse than missing a clone.
        log.info(
            "box_not_judged",
            recorded=sorted(recorded),
            now=sorted(ids),
            reason="no stable id (CPU or device-tree serial, product UUID, built-in adapter's MAC) on both sides",
        )
        return None
    newest = await conn.execute_fetchall("SELECT MAX(received_at) FROM orders")
    ran_until = next(iter(newest))[0]
    moved = CardMoved(at=now, ran_until=None if ran_until is None else float(ran_until))
    mark = float(now // 1)  # from its whole second, as a first start's: central's times are often whole seconds
    await conn.execute(RAISE_MARK_SQL, (MAY_HAVE_PRINTED_KEY, repr(mark), mark))
    await conn.execute(UPSERT_META, (EVENT_KEY_MARK_KEY, new_event_key_mark()))
    await conn.execute(UPSERT_META, (CARD_MOVED_KEY, json.dumps(dataclasses.asdict(moved))))
    if boot is not None:
        await conn.execute(UPSERT_META, (FIRST_START_UNSETTLED_KEY, json.dumps({"boot": boot, "mono": mono})))
    return moved


def _stable(ids: frozenset[str]) -> bool:
    return any(id_.startswith(STABLE_PREFIXES) for id_ in ids)


def card_moved(conn: sqlite3.Connection) -> CardMoved | None:
    """The last move a database recorded (see CARD_MOVED_KEY); None if none."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (CARD_MOVED_KEY,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else CardMoved(**json.loads(row[0]))


def new_event_key_mark() -> str:
    """8 hex digits: two boxes of a store share one by chance once in about 4 billion replacements."""
    return secrets.token_hex(4)


def recorded_store(conn: sqlite3.Connection) -> str | None:
    """The store a database file belongs to; None if it never recorded one (or predates the table)."""
    try:
        row = conn.execute("SELECT store_id FROM store_identity").fetchone()
    except sqlite3.OperationalError:  # written before store_identity existed
        return None
    return None if row is None else str(row[0])


def move_to_store(conn: sqlite3.Connection, store_id: str, *, now: float) -> None:
    """A deliberate move: the database becomes ``store_id``'s and its recovery starts over from the first order."""
    with conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (_CURSOR_KEY,))
        has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_identity'")
        if has_table.fetchone():  # an older schema gets its row at the agent's first start, after migrating
            conn.execute(
                "INSERT OR REPLACE INTO store_identity(singleton, store_id, recorded_at) VALUES (1, ?, ?)",
                (store_id, now),
            )


def acked_key(order_id: str, revision: int) -> str:
    """Table meta: a revision the database a restore replaced had taken (answered 2xx, maybe printed) that the backup
    put in its place lacks, written by `edge restore` (files.prepare_restored_file). The revision first: no colon."""
    return f"{_ACKED_PREFIX}{revision}:{order_id}"


_ACKED_PREFIX = "acked_before_restore:"


def acked_recorded(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    """The (order id, revision) records a restore left in a database: read back by the next restore (a backup restored
    again: what the first knew goes on)."""
    rows = conn.execute(_ACKED_KEYS_SQL, (len(_ACKED_PREFIX), _ACKED_PREFIX))
    return {
        (order_id, int(revision))
        for revision, _, order_id in (key[len(_ACKED_PREFIX) :].partition(":") for (key,) in rows)
    }


_ACKED_KEYS_SQL = "SELECT key FROM meta WHERE substr(key, 1, ?) = ?"


async def acked_before_restore(conn: Writer, revisions: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Of ``revisions`` (order id, revision) pushed now, those the database a restore replaced had taken: a sender's
    resend of what may be on paper, to print marked COPY (the tech77 probe: a till's resend across a restore printed a
    second time unmarked)."""
    if not revisions:
        return set()
    keys = {acked_key(order_id, revision): (order_id, revision) for order_id, revision in revisions}
    rows = await conn.execute_fetchall(_ACKED_SQL, (json.dumps(list(keys)),))
    return {keys[r[0]] for r in rows}


_ACKED_SQL = "SELECT key FROM meta WHERE key IN (SELECT value FROM json_each(?))"


@dataclasses.dataclass(frozen=True)
class Mark:
    """The may-have-printed mark as a commit reads it (MAY_HAVE_PRINTED_KEY; ``until`` None: none), whether central
    has dated it yet (FIRST_START_UNSETTLED_KEY), and the box's clock then."""

    until: float | None
    unsettled: bool
    now: float

    def before(self, at: float) -> bool:
        """Whether a time from another clock (a sender's created_at, the replaced box's received_at) is before the
        mark. An undated mark is on the box's clock, which may be wrong: a time more than CLOCK_OFF_S ahead of it
        shows the box is behind and cannot be judged against the mark, so it counts as before it (prints marked COPY,
        never a second time unmarked: before stop 81 it printed unmarked, the verify81b probe, V1)."""
        if self.until is None:
            return False
        return at < self.until or (self.unsettled and at > self.now + CLOCK_OFF_S)


async def read_mark(conn: Writer, now: float) -> Mark:
    """The may-have-printed mark, see Mark."""
    rows = await conn.execute_fetchall(
        "SELECT key, value FROM meta WHERE key IN (?, ?)", (MAY_HAVE_PRINTED_KEY, FIRST_START_UNSETTLED_KEY)
    )
    found = {str(key): value for key, value in rows}
    until = found.get(MAY_HAVE_PRINTED_KEY)
    return Mark(float(until) if until is not None else None, FIRST_START_UNSETTLED_KEY in found, now)
