"""What retention deletes: old orders nothing is left to do for, old history, ids seen and cancels kept long ago."""

from __future__ import annotations

import dataclasses
import json

from edge.states import FINAL_JOB_STATES
from edge.store.db import Database
from edge.store.mqtt import CURSOR_KEY


@dataclasses.dataclass(frozen=True)
class OutboxReaders:
    """Who takes the status events from the outbox: the central API over HTTP (a row is done once delivered) and MQTT
    (done once the publish cursor has passed it). An order stays while a reader has not had its events; with no
    reader at all, nothing ever will, and the outbox keeps nothing."""

    central: bool = True
    mqtt: bool = False


CENTRAL_ONLY = OutboxReaders()

# Old by our clock and by its own created_at (a box that took it with its clock still in 1970 dated it then: NTP's
# step must not make a minutes-old order look a month old), every job final (it will not print again by itself;
# 'held' still waits for a person), and nothing left in the outbox for a reader that is configured. MQTT's cursor is
# absent only before its first start: then every row waits.
_PURGEABLE = """
SELECT o.id FROM orders o
WHERE o.received_at < :cutoff AND (julianday(o.created_at) - 2440587.5) * 86400.0 < :cutoff
  AND NOT EXISTS (SELECT 1 FROM print_jobs j WHERE j.order_id = o.id
                  AND j.state NOT IN (SELECT value FROM json_each(:final)))
  AND (NOT :central OR NOT EXISTS (SELECT 1 FROM outbox b WHERE b.order_id = o.id AND b.delivered_at IS NULL))
  AND (NOT :mqtt OR NOT EXISTS (
        SELECT 1 FROM outbox b WHERE b.order_id = o.id
          AND b.id > COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = :mqtt_cursor_key), 0)))
ORDER BY o.received_at LIMIT :batch
"""

# History that only explains the past: kept as long as orders are. Each table's rows older than the cutoff, by this
# condition (on the table's own columns), go in that order: an alert group after its log lines, a run's recovery items
# before the run (a finished run may hold hundreds of them, each with its order: not all at once with their run).
_HISTORY = (
    ("scans", "scanned_at < :cutoff"),
    ("alert_log", "at < :cutoff"),
    # A dead-lettered mail waits for a person; a discarded or superseded one was decided on, like a sent one.
    ("alert_mails", "(sent_at IS NOT NULL OR state IN ('discarded', 'superseded')) AND created_at < :cutoff"),
    ("alert_silences", "ends_at < :cutoff"),
    # A group's row is its throttle state; one resolved, told and quiet since the cutoff holds nothing a next firing
    # needs (that starts a new episode either way), and groups are per order for central's refusals: without this,
    # one row for every order central ever refused. Its log lines go first (above), so a pending digest keeps it.
    (
        "alert_groups",
        "state = 'resolved' AND notified = 'resolved' AND fires_since_mail = 0 AND changed_at < :cutoff"
        " AND NOT EXISTS (SELECT 1 FROM alert_log l WHERE l.group_key = alert_groups.key)",
    ),
    # A rejected MQTT message is kept for a person; once reported on the events topic, as long as history is.
    ("mqtt_rejects", "published_at IS NOT NULL AND received_at < :cutoff"),
    (
        "recovery_items",
        "run_id IN (SELECT id FROM recovery_runs WHERE finished_at IS NOT NULL AND finished_at < :cutoff)",
    ),
    # The cursor lives in meta, not in a run.
    ("recovery_runs", "finished_at IS NOT NULL AND finished_at < :cutoff"),
)
HISTORY_TABLES = tuple(table for table, _ in _HISTORY)


async def newest_order_time(db: Database, *, past_receipt_s: float) -> float | None:
    """The newest ``created_at`` among stored orders, unix seconds: a time the sender's clock gave, not the box's,
    but each at most ``past_receipt_s`` past our receipt of it (one order a sender dated 2099 must not lift the bound:
    today's orders were purged under it). With none stored, the newest seen-order record's ``seen_at`` (its receipt
    or its purge, by retention's own "now": never earlier than its order's ``created_at``; one written on a clock far
    ahead would have kept its order from being purged).
    None with neither. Retention takes it as a bound on "now" (see edge/ops/housekeeping.py)."""
    row = await db.fetchone(
        "SELECT COALESCE((SELECT MAX(MIN((julianday(created_at) - 2440587.5) * 86400.0, received_at + ?)) FROM orders),"
        " (SELECT MAX(seen_at) FROM seen_orders))",
        (past_receipt_s,),
    )
    return None if row is None or row[0] is None else float(row[0])


def _purgeable_params(cutoff: float, batch: int, readers: OutboxReaders) -> dict[str, object]:
    return {
        "cutoff": cutoff,
        "batch": batch,
        "central": readers.central,
        "mqtt": readers.mqtt,
        "mqtt_cursor_key": CURSOR_KEY,
        "final": json.dumps(sorted(FINAL_JOB_STATES)),
    }


async def purge_orders(
    db: Database, *, cutoff: float, now: float, batch: int, readers: OutboxReaders = CENTRAL_ONLY
) -> int:
    """One transaction: up to ``batch`` purgeable orders go with their jobs (cascade) and outbox rows; their ids stay
    in seen_orders, dated ``now`` (the purge): retention.seen_days counts from it, so an order kept longer than that
    is not forgotten in the pass that purges it. Never dated back: a record's time stays at least its order's."""
    async with db.transaction() as conn:
        ids = [row[0] for row in await conn.execute_fetchall(_PURGEABLE, _purgeable_params(cutoff, batch, readers))]
        if ids:
            marks = ",".join("?" * len(ids))
            await conn.execute(f"UPDATE seen_orders SET seen_at = MAX(seen_at, ?) WHERE id IN ({marks})", [now, *ids])
            await conn.execute(f"DELETE FROM outbox WHERE order_id IN ({marks})", ids)
            await conn.execute(f"DELETE FROM orders WHERE id IN ({marks})", ids)
    return len(ids)


async def purge_history(db: Database, *, table: str, cutoff: float, batch: int) -> int:
    """One transaction: up to ``batch`` rows of ``table`` (one of HISTORY_TABLES) older than ``cutoff``. A month of a
    store's scans at once needs more room in the WAL than a full card has (edge/ops/housekeeping.py, make_room)."""
    where = dict(_HISTORY)[table]
    async with db.transaction() as conn:
        cursor = await conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT :batch)",
            {"cutoff": cutoff, "batch": batch},
        )
        removed = cursor.rowcount
        await cursor.close()
    return removed


async def anything_to_purge(db: Database, *, cutoff: float, readers: OutboxReaders = CENTRAL_ONLY) -> bool:
    """Whether an order or a row of history is older than ``cutoff`` and may go (purge_orders, purge_history): a read,
    which a full card still takes."""
    if await db.fetchone(_PURGEABLE, _purgeable_params(cutoff, 1, readers)):
        return True
    for table, where in _HISTORY:
        if await db.fetchone(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", {"cutoff": cutoff}):
            return True
    return False


async def purge_seen(db: Database, *, cutoff: float) -> int:
    """Forget ids seen, or purged, before ``cutoff`` whose order is gone: an order that old coming back is new again.
    A record a database older than that purge date kept has its receipt time: it goes as before."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "DELETE FROM seen_orders WHERE seen_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = seen_orders.id)",
            (cutoff,),
        )
        removed = cursor.rowcount
        await cursor.close()
    return removed


# No box clock that showed a time before this was right (a box without a battery boots in 1970).
_PLAUSIBLE_SINCE = 1_704_067_200.0  # 2024-01-01


async def purge_pending_cancels(db: Database, *, cutoff: float, now: float) -> int:
    """Forget cancels kept since before ``cutoff`` whose order never came (see edge/store/cancels.py): as long as a
    seen-order record is kept, so an order that old coming back is new again either way. A cancel has only our receipt
    time: one written by a clock still in 1970 counts from ``now`` (the first run that knows better), or NTP putting
    the clock right would forget it at once, and its order, coming later, would print."""
    async with db.transaction() as conn:
        if now >= _PLAUSIBLE_SINCE:
            await conn.execute(
                "UPDATE pending_cancels SET received_at = ? WHERE received_at < ?", (now, _PLAUSIBLE_SINCE)
            )
        cursor = await conn.execute("DELETE FROM pending_cancels WHERE received_at < ?", (cutoff,))
        removed = cursor.rowcount
        await cursor.close()
    return removed
