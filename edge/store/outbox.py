"""Status events for central (table outbox): written in the same transaction as the change, delivered in id order."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from edge.states import StatusEvent
from edge.store.db import Database, Writer
from edge.store.identity import EVENT_KEY_MARK_KEY
from edge.store.rows import OutboxBacklog, OutboxItem

# Payload key a rejected row gets (with delivered_at set): {"status", "reason", "at"}. Rejected rows are never sent.
REJECTED_KEY = "_rejected"


def outbox_row(order_id: str, event: StatusEvent, key_suffix: str, now: float, **fields: Any) -> tuple[Any, ...]:
    payload = {"order_id": order_id, "event": event, "at": now, **fields}
    return (order_id, event, f"{order_id}:{event}:{key_suffix}", json.dumps(payload, sort_keys=True), now)


async def add_outbox(conn: Writer, rows: list[tuple[Any, ...]]) -> None:
    """Inside the transaction of the change the rows report. INSERT OR IGNORE: an event recorded again after a crash
    keeps its first row and key. Each key ends in this database's mark (identity.EVENT_KEY_MARK_KEY), if it has one:
    ``ord_7f3a9c21:printed:17@3fa9c2d1``."""
    await conn.executemany(
        "INSERT OR IGNORE INTO outbox(order_id, event, idempotency_key, payload, created_at)"
        " VALUES (?, ?, ? || COALESCE((SELECT '@' || value FROM meta WHERE key = ?), ''), ?, ?)",
        [(order_id, event, key, EVENT_KEY_MARK_KEY, payload, at) for order_id, event, key, payload, at in rows],
    )


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def pending(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        return int(row[0]) if row else 0

    async def backlog(self) -> OutboxBacklog:
        row = await self._db.fetchone("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
        return OutboxBacklog(pending=row[0] if row else 0, oldest_at=row[1] if row else None)

    async def oldest(
        self, limit: int, *, up_to: int | None = None, set_aside: Collection[str] = ()
    ) -> list[OutboxItem]:
        """The oldest pending events (with ids up to ``up_to``, of orders not ``set_aside``), in the order they
        happened."""
        rows = await self._db.fetchall(
            "SELECT id, order_id, idempotency_key, payload FROM outbox WHERE delivered_at IS NULL"
            " AND (?1 IS NULL OR id <= ?1) AND order_id NOT IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT ?2",
            (up_to, limit, json.dumps(list(set_aside))),
        )
        return [OutboxItem.from_row(r) for r in rows]

    async def oldest_of(self, order_id: str) -> OutboxItem | None:
        """The order's oldest pending event: the one that goes first, so its events keep their order."""
        row = await self._db.fetchone(
            "SELECT id, order_id, idempotency_key, payload FROM outbox"
            " WHERE delivered_at IS NULL AND order_id = ? ORDER BY id LIMIT 1",
            (order_id,),
        )
        return None if row is None else OutboxItem.from_row(row)

    async def of_cancelled_order(self, item: OutboxItem) -> bool:
        """Whether this is an event of an order cancelled here other than its `cancelled`: written after it (a STORNO,
        a receipt going out as the cancel came) or before it (central cancelled the order itself, and the box heard
        later, its `received` too): central has the order's final state, or gets it with the `cancelled` behind this
        event, so a refusal of this one costs it nothing. A refused `cancelled` is not so: a person must see that."""
        row = await self._db.fetchone(
            "SELECT 1 FROM outbox e JOIN orders o ON o.id = e.order_id"
            " WHERE e.id = ? AND e.event <> 'cancelled' AND o.status = 'cancelled'",
            (item.id,),
        )
        return row is not None

    async def waiting_of(self, order_id: str) -> tuple[int, str | None]:
        """The order's pending events, and its number (None once its row is gone), for the person told about them."""
        row = await self._db.fetchone(
            "SELECT COUNT(*), (SELECT number FROM orders WHERE id = ?1) FROM outbox"
            " WHERE delivered_at IS NULL AND order_id = ?1",
            (order_id,),
        )
        return (0, None) if row is None else (int(row[0]), row[1])

    async def stored_at(self, order_id: str) -> float | None:
        """When the order was stored here (our wall clock), None once its row is gone."""
        row = await self._db.fetchone("SELECT received_at FROM orders WHERE id = ?", (order_id,))
        return None if row is None else float(row[0])

    async def later_order_taken(self, stored_at: float) -> bool:
        """Whether central took (acknowledged, not refused) an event of an order stored here after ``stored_at`` (our
        wall clock): its events side has heard of orders newer than one stored then."""
        row = await self._db.fetchone(
            "SELECT 1 FROM outbox e JOIN orders o ON o.id = e.order_id WHERE e.delivered_at >= ?1"
            " AND o.received_at > ?1 AND json_extract(e.payload, ?2) IS NULL LIMIT 1",
            (stored_at, f"$.{REJECTED_KEY}"),
        )
        return row is not None

    async def pending_orders(self, order_ids: Collection[str]) -> set[str]:
        """Those of these orders with events still pending."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT order_id FROM outbox WHERE delivered_at IS NULL"
            " AND order_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(order_ids)),),
        )
        return {r[0] for r in rows}

    async def last_pending_id(self) -> int | None:
        row = await self._db.fetchone("SELECT MAX(id) FROM outbox WHERE delivered_at IS NULL")
        return None if row is None or row[0] is None else int(row[0])

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        """Central took these rows. Not durable (no fsync of its own, see Database.transaction): a power cut that takes
        the mark back sends the events again, and central answers them as duplicates by their keys; the mark cost a
        store's box two fsyncs an order of its five (``received``, ``printed``, each delivered on its own at a store's
        pace). A failed try writes nothing: the sender tries every few seconds while central refuses (a wrong token
        nobody fixes for days), and a count of tries (the ``attempts`` column, no longer written, kept for a version
        rolled back to) cost a commit with an fsync each time."""
        async with self._db.transaction(durable=False) as conn:
            await conn.executemany("UPDATE outbox SET delivered_at = ? WHERE id = ?", [(now, i) for i in ids])

    async def reject(self, item: OutboxItem, reason: dict[str, Any], now: float) -> dict[str, Any]:
        """Central refused this event for good: settled (never sent again) with the refusal kept in its payload,
        which is returned."""
        payload = json.loads(item.payload) | {REJECTED_KEY: reason}
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET delivered_at = ?, payload = ? WHERE id = ? AND delivered_at IS NULL",
                (now, json.dumps(payload, sort_keys=True), item.id),
            )
        return payload

    async def rejected(self) -> int:
        """Rows central refused for good (see REJECTED_KEY)."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL AND json_extract(payload, ?) IS NOT NULL",
            (f"$.{REJECTED_KEY}",),
        )
        return int(row[0]) if row else 0
