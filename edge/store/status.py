"""Read-only queries for the technician's status page: tickets of the last orders, last recovery, alerts, outbox."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge.store.db import Database


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxBacklog:
    """Status events not yet delivered to central."""

    pending: int
    oldest_at: float | None  # unix seconds of the oldest one; None when nothing waits


class StatusStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def jobs_of(self, order_ids: list[str]) -> list[dict[str, Any]]:
        if not order_ids:
            return []
        marks = ",".join("?" * len(order_ids))
        rows = await self._db.fetchall(
            "SELECT id, order_id, kind, station, printer, state, copy FROM print_jobs"
            f" WHERE order_id IN ({marks}) ORDER BY id",
            tuple(order_ids),
        )
        return [dict(row) for row in rows]

    async def last_recovery(self) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT id, trigger, state, created_at, finished_at, counts, errors FROM recovery_runs"
            " ORDER BY id DESC LIMIT 1"
        )
        return dict(row) if row is not None else None

    async def conflict_numbers(self, run_id: int, limit: int) -> list[str]:
        """Order numbers (the id when the order is gone) of a run's conflicts, as the kitchen knows them."""
        rows = await self._db.fetchall(
            "SELECT COALESCE(o.number, i.order_id) FROM recovery_items i LEFT JOIN orders o ON o.id = i.order_id"
            " WHERE i.run_id = ? AND i.class = 'conflict' ORDER BY i.order_id LIMIT ?",
            (run_id, limit),
        )
        return [row[0] for row in rows]

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT type, subject, severity, state, changed_at FROM alert_groups ORDER BY changed_at DESC LIMIT ?",
            (limit,),
        )
        return [dict(row) for row in rows]

    async def outbox_backlog(self) -> OutboxBacklog:
        row = await self._db.fetchone("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
        return OutboxBacklog(pending=row[0] if row else 0, oldest_at=row[1] if row else None)
