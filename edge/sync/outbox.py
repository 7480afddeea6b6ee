"""Status outbox delivery: pending rows go to the central API in id order, in batches, until acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import CentralApiError
from edge.events import CentralLinkChanged, EventBus, JobDead, JobPrinted, OrderStored, ScanRecorded
from edge.store import Database
from edge.sync.client import MAX_EVENTS_PER_POST, CentralClient, CentralRejectedError

log = structlog.get_logger()

# After a wake-up, wait this long so a burst of prints goes out as one batch.
_GATHER_S = 0.05
# Even without a wake-up, look again this often (rows written by other parts, retries after a failure).
_IDLE_S = 5.0
# Payload key a rejected row gets (with delivered_at set): {"status", "reason", "at"}. Rejected rows are never sent.
REJECTED_KEY = "_rejected"


class OutboxSender:
    """Rows are written in the same transaction as the change (see store/); this only delivers them.

    Sends are serialised and always take the oldest pending rows, so events of one order reach the backend
    in the order they happened. A batch the backend did not acknowledge is sent again, with the same keys.

    A batch refused for good (the contract's 422 naming an event, see PERMANENT_EVENT_ERRORS) is split in halves,
    oldest half first, until every event is either acknowledged or refused on its own; such an event is marked
    rejected (delivered_at set, the reason in the payload under REJECTED_KEY), logged as ``outbox_event_rejected``
    and never sent again. A 413 splits too, but never rejects: one event too big for a proxy stays pending.
    Every other refusal (a proxy's 405, a 410, a 400, auth) rejects nothing: the batch stays pending.
    """

    def __init__(
        self,
        db: Database,
        client: CentralClient,
        bus: EventBus,
        *,
        batch_size: int,
        link_up: Callable[[], bool],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._db = db
        self._clock = clock
        self._client = client
        self._batch_size = min(batch_size, MAX_EVENTS_PER_POST)
        self._link_up = link_up
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = [
            bus.subscribe(lambda _: self._wake.set(), t)
            for t in (OrderStored, JobPrinted, JobDead, ScanRecorded, CentralLinkChanged)
        ]

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
        """Deliver the oldest pending batch (ids <= up_to); returns the rows settled (acknowledged or rejected)."""
        async with self._lock:
            rows = await self._db.fetchall(
                "SELECT id, idempotency_key, payload FROM outbox"
                " WHERE delivered_at IS NULL AND (?1 IS NULL OR id <= ?1) ORDER BY id LIMIT ?2",
                (up_to, self._batch_size),
            )
            if not rows:
                return 0
            return await self._settle(rows)

    async def _settle(self, rows: Sequence[Any]) -> int:
        """POST these rows as one batch; on a permanent refusal bisect. Returns rows acknowledged or rejected."""
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        try:
            await self._client.post_events(
                [{**json.loads(r["payload"]), "idempotency_key": r["idempotency_key"]} for r in rows]
            )
        except CentralApiError as err:
            async with self._db.transaction() as conn:
                await conn.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({marks})", ids)
            if not isinstance(err, CentralRejectedError) or not (err.permanent_for_event or err.status == 413):
                raise
            if len(rows) == 1:
                if not err.permanent_for_event:
                    raise
                await self._reject(rows[0], err)
                return 1
            # Which event does the backend refuse? Halves, oldest first, so the good ones still go and in order.
            log.warning("outbox_batch_split", events=len(ids), first_id=ids[0], last_id=ids[-1], status=err.status)
            half = len(rows) // 2
            settled = await self._settle(rows[:half])
            return settled + await self._settle(rows[half:])
        async with self._db.transaction() as conn:
            await conn.execute(
                f"UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id IN ({marks})",
                [self._clock.wall(), *ids],
            )
        log.debug("outbox_delivered", events=len(ids), first_id=ids[0], last_id=ids[-1])
        return len(ids)

    async def _reject(self, row: Any, err: CentralRejectedError) -> None:
        payload = json.loads(row["payload"])
        now = self._clock.wall()
        reason = err.body or str(err)
        payload[REJECTED_KEY] = {"status": err.status, "reason": reason, "at": now}
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET delivered_at = ?, payload = ? WHERE id = ? AND delivered_at IS NULL",
                (now, json.dumps(payload, sort_keys=True), row["id"]),
            )
        log.error(
            "outbox_event_rejected",
            outbox_id=row["id"],
            key=row["idempotency_key"],
            order_id=payload.get("order_id"),
            event_type=payload.get("event"),
            status=err.status,
            reason=reason[:200],
        )

    async def rejected(self) -> int:
        """Rows the backend refused for good (see REJECTED_KEY)."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL"
            f" AND json_extract(payload, '$.{REJECTED_KEY}') IS NOT NULL"
        )
        return int(row[0]) if row else 0

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
            except CentralRejectedError as err:  # the batch stays pending; 401/403/404 need a person (token, store id)
                log.error("outbox_delivery_refused", status=err.status, error=str(err), pending=await self.pending())
            except CentralApiError as err:
                log.warning("outbox_delivery_failed", error=str(err), pending=await self.pending())
            except Exception:  # the sender must outlive a database hiccup; rows stay pending
                log.exception("outbox_sender_error")
