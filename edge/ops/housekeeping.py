"""Scheduled chores (APScheduler): purge old orders and history; probe a database that stopped taking writes."""

from __future__ import annotations

import asyncio
import time

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import RetentionSettings
from edge.store import Database

log = structlog.get_logger()

# While writes fail, try one this often, so the agent notices by itself that space is back.
STORAGE_PROBE_S = 10.0

# Purgeable: old, every job printed, and central has every status event (nothing left in the outbox).
_PURGEABLE = """
SELECT o.id FROM orders o
WHERE o.received_at < ?
  AND NOT EXISTS (SELECT 1 FROM print_jobs j WHERE j.order_id = o.id AND j.state != 'printed')
  AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.order_id = o.id AND b.delivered_at IS NULL)
ORDER BY o.received_at LIMIT ?
"""


async def purge_printed_orders(db: Database, *, older_than_s: float, batch: int, now: float | None = None) -> int:
    """Deletes purgeable orders (their jobs cascade, their outbox rows go too), one short transaction per batch."""
    cutoff = (time.time() if now is None else now) - older_than_s
    total = 0
    while True:
        async with db.transaction() as conn:
            ids = [row[0] for row in await conn.execute_fetchall(_PURGEABLE, (cutoff, batch))]
            if ids:
                marks = ",".join("?" * len(ids))
                await conn.execute(f"DELETE FROM outbox WHERE order_id IN ({marks})", ids)
                await conn.execute(f"DELETE FROM orders WHERE id IN ({marks})", ids)
        total += len(ids)
        if len(ids) < batch:
            break
        await asyncio.sleep(0)  # let intake and the spools have the writer between batches
    if total:
        log.info("orders_purged", count=total, older_than_days=round(older_than_s / 86400, 2))
    return total


# History that only explains the past: kept as long as orders are, then dropped in one statement each.
_HISTORY = (
    ("scans", "DELETE FROM scans WHERE scanned_at < ?"),
    ("alert_log", "DELETE FROM alert_log WHERE at < ?"),
    ("alert_mails", "DELETE FROM alert_mails WHERE sent_at IS NOT NULL AND created_at < ?"),
    ("alert_silences", "DELETE FROM alert_silences WHERE ends_at < ?"),
    # recovery_items go with their run (ON DELETE CASCADE); the cursor lives in meta, not in a run.
    ("recovery_runs", "DELETE FROM recovery_runs WHERE finished_at IS NOT NULL AND finished_at < ?"),
)


async def purge_history(db: Database, *, older_than_s: float, now: float | None = None) -> dict[str, int]:
    """Drops scans, sent mails, alert log lines and finished recovery runs older than the retention age."""
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = {}
    async with db.transaction() as conn:
        for table, sql in _HISTORY:
            cursor = await conn.execute(sql, (cutoff,))
            removed[table] = cursor.rowcount
            await cursor.close()
    if any(removed.values()):
        log.info("history_purged", **removed)
    return removed


class Housekeeping:
    def __init__(self, db: Database, retention: RetentionSettings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._retention = retention
        self._clock = clock
        self._scheduler = AsyncIOScheduler()

    def start(self) -> None:
        self._scheduler.add_job(
            self.purge, "interval", seconds=self._retention.every_s, id="retention", max_instances=1, coalesce=True
        )
        self._scheduler.add_job(
            self.probe_storage, "interval", seconds=STORAGE_PROBE_S, id="storage_probe", max_instances=1, coalesce=True
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def purge(self) -> int:
        try:
            age, now = self._retention.days * 86400, self._clock.wall()
            await purge_history(self._db, older_than_s=age, now=now)
            return await purge_printed_orders(self._db, older_than_s=age, batch=self._retention.batch, now=now)
        except Exception as err:  # a failed purge is retried at the next run; it must not kill the scheduler
            log.warning("purge_failed", error=str(err))
            return 0

    async def probe_storage(self) -> None:
        # Only while writes fail: a healthy agent does not wear the SD card with probe writes.
        if self._db.write_problem is not None:
            await self._db.probe_space()
