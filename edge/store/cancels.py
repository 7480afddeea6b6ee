"""Cancels kept for an order not here yet (table pending_cancels): the order still queued at the broker, or retried
by its sender, while the cancel came on another path. The order is then stored cancelled in the transaction that
stores it (see insert_batch) and prints nothing; a cancel whose order never comes goes with the seen-order records."""

from __future__ import annotations

import dataclasses
import json

from edge.orders.model import Cancel
from edge.states import InsertOutcome, OrderSource
from edge.store.db import Writer
from edge.store.revisions import known_from_rows, known_sql


@dataclasses.dataclass(frozen=True)
class PendingCancel:
    cancel: Cancel
    source: OrderSource  # the door the cancel came in by, which the cancelled revision is recorded with


@dataclasses.dataclass(frozen=True)
class KeptCancel:
    """What a cancel for an order not stored here came to: kept (cancel_pending), a duplicate or conflict of the one
    kept, or stale (the order was stored once, retention purged it). ``revision``: the kept cancel's, or the purged
    order's."""

    outcome: InsertOutcome
    revision: int


async def pending_cancels(conn: Writer, ids: list[str]) -> dict[str, PendingCancel]:
    if not ids:  # every order of the batch is known: its pushes pay no read for this
        return {}
    rows = await conn.execute_fetchall(
        "SELECT order_id, revision, reason, source FROM pending_cancels"
        " WHERE order_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    )
    return {r[0]: PendingCancel(Cancel(r[1], r[2]), OrderSource(r[3])) for r in rows}


async def drop_pending_cancels(conn: Writer, ids: list[str]) -> None:
    """Their orders are stored now: the order row speaks for them from here on."""
    if ids:
        await conn.execute(
            "DELETE FROM pending_cancels WHERE order_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        )


async def keep_cancel(
    conn: Writer, order_id: str, cancel: Cancel, source: OrderSource, now: float
) -> KeptCancel | None:
    """Keep ``cancel`` for an order not here; None if the order is stored (it came meanwhile: cancel it as stored).
    Runs inside the caller's transaction, which also serialises it with the order inserts."""
    known = known_from_rows(await conn.execute_fetchall(known_sql(1), (order_id, order_id))).get(order_id)
    if known is not None and not known.history:  # a history order was never here: its cancel is kept for it
        return None if known.stored else KeptCancel(InsertOutcome.STALE, known.revision)
    rows = await conn.execute_fetchall("SELECT revision FROM pending_cancels WHERE order_id = ?", (order_id,))
    if rows:
        [(revision,)] = rows
        if revision != cancel.revision:  # the first cancel stands: the order is cancelled either way
            return KeptCancel(InsertOutcome.CANCEL_PENDING, revision)
        # The same cancel, whatever its words: a reason is not content (meaning_hash); the first one's are kept.
        return KeptCancel(InsertOutcome.DUPLICATE, revision)
    await conn.execute(
        "INSERT INTO pending_cancels(order_id, revision, reason, received_at, source) VALUES (?, ?, ?, ?, ?)",
        (order_id, cancel.revision, cancel.reason, now, source),
    )
    return KeptCancel(InsertOutcome.CANCEL_PENDING, cancel.revision)
