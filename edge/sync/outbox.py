"""Status outbox delivery: pending rows go to the central API in id order, in batches, until acknowledged."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import structlog

from edge.errors import CentralApiError
from edge.events import CentralLinkChanged, EventBus, JobDead, JobPrinted, OrderStored, ScanRecorded
from edge.store import Database
from edge.sync.client import CentralClient

log = structlog.get_logger()

# After a wake-up, wait this long so a burst of prints goes out as one batch.
_GATHER_S = 0.05
# Even without a wake-up, look again this often (rows written by other parts, retries after a failure).
_IDLE_S = 5.0


class OutboxSender:
    """Rows are written in the same transaction as the change (see store/); this only delivers them.

    Sends are serialised and always take the oldest pending rows, so events of one order reach the backend
    in the order they happened. A batch the backend did not acknowledge is sent again, with the same keys.
    """

    def __init__(self, db: Database, client: CentralClient, bus: EventBus, *, batch_size: int, link_up: Callable[[], bool]) -> None:
        self._db = db
        self._client = client
        self._batch_size = batch_size
        self._link_up = link_up
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = [bus.subscribe(lambda _: self._wake.set(), t) for t in (OrderStored, JobPrinted, JobDead, ScanRecorded, CentralLinkChanged)]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def pending(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        return int(row[0]) if row else 0

    async def send_once(self, up_to: int | None = None) -> int:
        """Deliver the oldest pending batch (rows with id <= up_to); returns how many rows were acknowledged."""
        async with self._lock:
            # Read through the writer: the shared reader connection can lag behind the last commit while other
            # reads overlap on it, and a stale view would send a batch the backend already acknowledged.
            async with self._db.transaction() as conn:
                rows = await conn.execute_fetchall(
                    "SELECT id, idempotency_key, payload FROM outbox WHERE delivered_at IS NULL AND (?1 IS NULL OR id <= ?1) ORDER BY id LIMIT ?2",
                    (up_to, self._batch_size),
                )
            if not rows:
                return 0
            ids = [r["id"] for r in rows]
            marks = ",".join("?" * len(ids))
            try:
                await self._client.post_events([{**json.loads(r["payload"]), "idempotency_key": r["idempotency_key"]} for r in rows])
            except CentralApiError:
                async with self._db.transaction() as conn:
                    await conn.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({marks})", ids)
                raise
            async with self._db.transaction() as conn:
                await conn.execute(f"UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id IN ({marks})", [time.time(), *ids])
            log.debug("outbox_delivered", events=len(ids), first_id=ids[0], last_id=ids[-1])
            return len(ids)

    async def flush(self) -> int:
        """Deliver everything pending now (not what is written meanwhile, or a busy store would never finish)."""
        row = await self._db.fetchone("SELECT MAX(id) FROM outbox WHERE delivered_at IS NULL")
        if row is None or row[0] is None:
            return 0
        total = 0
        while sent := await self.send_once(up_to=int(row[0])):
            total += sent
        return total

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=_IDLE_S)
                await asyncio.sleep(_GATHER_S)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._link_up():
                continue
            try:
                await self.flush()
            except CentralApiError as err:
                log.warning("outbox_delivery_failed", error=str(err), pending=await self.pending())
            except Exception:  # the sender must outlive a database hiccup; rows stay pending
                log.exception("outbox_sender_error")
