"""The MQTT link's rows: rejected messages (table mqtt_rejects), how far the outbox is published (cursor in meta), why
the broker delivers nothing (meta)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from edge.store.db import Database
from edge.store.meta import UPSERT_META
from edge.store.rows import OutboxItem

# The id of the last outbox row the broker acknowledged on <prefix>/events. A cursor rather than a column: while MQTT
# is off the outbox pays nothing for it (no extra index entry or write per event on an SD card).
CURSOR_KEY = "mqtt_outbox_cursor"
SESSION_KEY = "mqtt_session_held"  # a broker once held a session for this store (value unused)
# Why the subscribed link delivers no orders, while that stands: its alarm outlives a restart in the alert store, and a
# restarted link must still say why (/ready, edge status) until a message comes on the orders topic.
NOT_DELIVERING_KEY = "mqtt_not_delivering"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttReject:
    """A message on the orders topic that was not a valid order, kept for a person."""

    id: int
    received_at: float  # our wall clock, unix seconds
    topic: str
    order_id: str | None  # when the payload named one
    payload: bytes  # as received
    error: dict[str, Any]  # the body the HTTP API answers for the same payload
    published_at: float | None  # reported on <prefix>/events and acknowledged by the broker

    @classmethod
    def from_row(cls, row: Any) -> MqttReject:
        return cls(
            id=row["id"],
            received_at=row["received_at"],
            topic=row["topic"],
            order_id=row["order_id"],
            payload=bytes(row["payload"]),
            error=json.loads(row["error"]),
            published_at=row["published_at"],
        )


class MqttStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_reject(
        self, *, topic: str, payload: bytes, order_id: str | None, error: dict[str, Any], now: float
    ) -> tuple[int, bool]:
        """The reject's id, and whether it is new: the identical payload on the same topic, kept already, is the same
        message sent again (a publisher's retry, a redelivery), not another one for a person."""
        async with self._db.transaction() as conn:
            kept = list(
                await conn.execute_fetchall(
                    "SELECT id FROM mqtt_rejects WHERE topic = ? AND payload = ? LIMIT 1", (topic, payload)
                )
            )
            if kept:
                return int(kept[0][0]), False
            cursor = await conn.execute(
                "INSERT INTO mqtt_rejects(received_at, topic, order_id, payload, error) VALUES (?, ?, ?, ?, ?)",
                (now, topic, order_id, payload, json.dumps(error, sort_keys=True)),
            )
            reject_id = int(cursor.lastrowid or 0)
            await cursor.close()
        return reject_id, True

    async def kept_reject(self, topic: str, payload: bytes) -> MqttReject | None:
        """The reject kept for the identical payload on the same topic, if any: that message judged before."""
        rows = await self._db.fetchall(
            "SELECT * FROM mqtt_rejects WHERE topic = ? AND payload = ? LIMIT 1", (topic, payload)
        )
        return MqttReject.from_row(rows[0]) if rows else None

    async def unpublished_rejects(self, limit: int) -> list[MqttReject]:
        rows = await self._db.fetchall(
            "SELECT * FROM mqtt_rejects WHERE published_at IS NULL ORDER BY id LIMIT ?", (limit,)
        )
        return [MqttReject.from_row(r) for r in rows]

    async def rejects_published(self, ids: list[int], now: float) -> None:
        async with self._db.transaction() as conn:
            await conn.executemany("UPDATE mqtt_rejects SET published_at = ? WHERE id = ?", [(now, i) for i in ids])

    async def rejects(self, limit: int = 20) -> list[MqttReject]:
        """Newest first, for a person (status page, edge doctor)."""
        rows = await self._db.fetchall("SELECT * FROM mqtt_rejects ORDER BY id DESC LIMIT ?", (limit,))
        return [MqttReject.from_row(r) for r in rows]

    async def reject_count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM mqtt_rejects")
        return int(row[0]) if row else 0

    async def session_held(self) -> bool:
        """Whether a broker held a session for this store before (MqttStore.note_session): a new one since means it
        lost it."""
        rows = await self._db.fetchall("SELECT 1 FROM meta WHERE key = ?", (SESSION_KEY,))
        return bool(rows)

    async def note_session(self) -> None:
        """A broker holds a session for this store (written once in a box's life)."""
        async with self._db.transaction() as conn:
            await conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", (SESSION_KEY,))

    async def not_delivering(self) -> str:
        """The reason an earlier run found that the broker delivers nothing on the orders topic; "" if none stands."""
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (NOT_DELIVERING_KEY,))
        return str(row[0]) if row else ""

    async def set_not_delivering(self, detail: str) -> None:
        """Kept while ``detail`` stands; "" (a message came on the orders topic) drops it."""
        async with self._db.transaction() as conn:
            if detail:
                await conn.execute(UPSERT_META, (NOT_DELIVERING_KEY, detail))
            else:
                await conn.execute("DELETE FROM meta WHERE key = ?", (NOT_DELIVERING_KEY,))

    async def outbox_cursor(self) -> int:
        """The last outbox id published; at the first start with MQTT, the newest row now (history before MQTT was
        configured is not replayed: central had it over HTTP, or recovery tells it)."""
        async with self._db.transaction() as conn:
            rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)))
            if rows:
                return int(rows[0][0])
            rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM outbox"))
            start = int(rows[0][0])
            await conn.execute(UPSERT_META, (CURSOR_KEY, str(start)))
        return start

    async def set_outbox_cursor(self, last_id: int) -> None:
        """Not durable (no fsync of its own, see Database.transaction): a cursor a power cut takes back publishes those
        events again, as QoS 1 may anyway; central deduplicates by key. At a store's pace it cost two fsyncs an
        order."""
        async with self._db.transaction(durable=False) as conn:
            await conn.execute(UPSERT_META, (CURSOR_KEY, str(last_id)))

    async def outbox_after(self, cursor: int, limit: int) -> list[OutboxItem]:
        """Outbox rows after ``cursor``, oldest first (delivered over HTTP or not: the two doors are independent)."""
        rows = await self._db.fetchall(
            "SELECT id, order_id, idempotency_key, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, limit),
        )
        return [OutboxItem.from_row(r) for r in rows]

    async def outbox_unpublished(self, cursor: int) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM outbox WHERE id > ?", (cursor,))
        return int(row[0]) if row else 0
