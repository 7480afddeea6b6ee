"""Status outbox delivery: pending rows go to the central API in id order, in batches, until acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, wait_set
from edge.errors import CentralApiError
from edge.events import CentralLinkChanged, EventBus, JobDead, JobPrinted, OrderRevised, OrderStored, ScanRecorded
from edge.store import Database
from edge.store.outbox import OutboxStore
from edge.store.rows import OutboxItem
from edge.sync.client import MAX_EVENTS_PER_POST, CentralClient, CentralRejectedError

log = structlog.get_logger()

# After a wake-up, wait this long so a burst of prints goes out as one batch.
_GATHER_S = 0.05
# Even without a wake-up, look again this often (rows written by other parts, retries after a failure).
_IDLE_S = 5.0


class OutboxSender:
    """Rows are written in the same transaction as the change (see store/); this only delivers them.

    Sends are serialised and always take the oldest pending rows, so events of one order reach the backend
    in the order they happened. A batch the backend did not acknowledge is sent again, with the same keys.

    A batch refused for good (the contract's 422 naming an event, see PERMANENT_EVENT_ERRORS) is split in halves,
    oldest half first, until every event is either acknowledged or refused on its own; such an event is marked
    rejected (delivered_at set, the reason in the payload under edge.store.outbox.REJECTED_KEY), logged as
    ``outbox_event_rejected`` and never sent again. A 413 splits too, but never rejects: one event too big for a
    proxy stays pending. Every other refusal (a proxy's 405, a 410, a 400, auth) rejects nothing: the batch stays
    pending.
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
        self._store = OutboxStore(db)
        self._clock = clock
        self._client = client
        self._batch_size = min(batch_size, MAX_EVENTS_PER_POST)
        self._link_up = link_up
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = [
            bus.subscribe(lambda _: self._wake.set(), t)
            for t in (OrderStored, JobPrinted, JobDead, ScanRecorded, CentralLinkChanged, OrderRevised)
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
        return await self._store.pending()

    async def send_once(self, up_to: int | None = None) -> int:
        """Deliver the oldest pending batch (ids <= up_to); returns the rows settled (acknowledged or rejected)."""
        async with self._lock:
            items = await self._store.oldest(self._batch_size, up_to=up_to)
            if not items:
                return 0
            return await self._settle(items)

    async def _settle(self, items: Sequence[OutboxItem]) -> int:
        """POST these rows as one batch; on a permanent refusal bisect. Returns rows acknowledged or rejected."""
        ids = [i.id for i in items]
        try:
            await self._client.post_events(
                [{**json.loads(i.payload), "idempotency_key": i.idempotency_key} for i in items]
            )
        except CentralApiError as err:
            await self._store.count_attempt(ids)
            if not isinstance(err, CentralRejectedError) or not (err.permanent_for_event or err.status == 413):
                raise
            if len(items) == 1:
                if not err.permanent_for_event:
                    raise
                await self._reject(items[0], err)
                return 1
            # Which event does the backend refuse? Halves, oldest first, so the good ones still go and in order.
            log.warning("outbox_batch_split", events=len(ids), first_id=ids[0], last_id=ids[-1], status=err.status)
            half = len(items) // 2
            settled = await self._settle(items[:half])
            return settled + await self._settle(items[half:])
        await self._store.delivered(ids, self._clock.wall())
        log.debug("outbox_delivered", events=len(ids), first_id=ids[0], last_id=ids[-1])
        return len(ids)

    async def _reject(self, item: OutboxItem, err: CentralRejectedError) -> None:
        now = self._clock.wall()
        reason = err.body or str(err)
        payload = await self._store.reject(item, {"status": err.status, "reason": reason, "at": now}, now)
        log.error(
            "outbox_event_rejected",
            outbox_id=item.id,
            key=item.idempotency_key,
            order_id=payload.get("order_id"),
            event_type=payload.get("event"),
            status=err.status,
            reason=reason[:200],
        )

    async def rejected(self) -> int:
        """Rows the backend refused for good."""
        return await self._store.rejected()

    async def flush(self) -> int:
        """Deliver everything pending now (not what is written meanwhile, or a busy store would never finish)."""
        last = await self._store.last_pending_id()
        if last is None:
            return 0
        total = 0
        while sent := await self.send_once(up_to=last):
            total += sent
        return total

    async def _run(self) -> None:
        while True:
            if await wait_set(self._wake, _IDLE_S):
                await asyncio.sleep(_GATHER_S)
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
