"""Status outbox delivery: pending rows go to the central API in id order, in batches, until acknowledged."""

from __future__ import annotations

import asyncio
import bisect
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, wait_set
from edge.errors import CentralApiError, StoreUnavailableError
from edge.events import (
    CentralLinkChanged,
    EventBus,
    JobDead,
    JobPrinted,
    OrderEventRejected,
    OrderEventsRefused,
    OrderRevised,
    OrderStored,
    ScanRecorded,
)
from edge.log import SaidOnce, Summarised
from edge.states import OrderStatus
from edge.store.db import Database
from edge.store.outbox import OutboxStore
from edge.store.rows import OutboxItem
from edge.sync.client import (
    MAX_EVENTS_PER_POST,
    CentralClient,
    CentralInProgressError,
    CentralRejectedError,
    CentralSlowAnswerError,
    body_sizes,
)

log = structlog.get_logger()

# After a wake-up, wait this long so a burst of prints goes out as one batch.
_GATHER_S = 0.05
# Even without a wake-up, look again this often (rows written by other parts, retries after a failure).
_IDLE_S = 5.0
_SAY_AGAIN_S = 600.0  # a refusal or failure that lasts is said again this often (see OutboxSender)
# Refusals that may concern events of the batch rather than the store, the token, the URL or the request as a whole:
# an order central archived (410), a state it will not take (409), its own validation without the contract's code
# (422). The batch is split to find the order; 400, 401, 403, 404, 405 or 408 would refuse every event alike.
_ORDER_REFUSALS = frozenset({409, 410, 422, 200})  # 200: the batch taken in part (CentralClient.post_events)
# Refusals of an event of an order cancelled here but its `cancelled` (edge.store.outbox.OutboxStore.of_cancelled_order)
# that reject it: a backend that keeps order states answers so to any event after the cancel (409 order_cancelled, or
# its framework's 422), whichever side cancelled first, and setting the order aside would offer it for ever, the
# order's `cancelled` waiting behind it. A 410 (the order archived) is left as any other order's.
_CANCELLED_ORDER_REFUSALS = frozenset({409, 422})
_REJECTED = "outbox_event_rejected"  # the log line of an event refused for good
# A set-aside order is tried again after refused_retry_s and up to this part of it more, so a fleet spreads out.
_JITTER = 0.1
# A body limit a gateway answered 413 for (nginx's client_max_body_size) is kept this long. It is configuration that a
# person changes now and then, not load: within the hour no batch meets it again, a limit that stands costs one 413
# and a split an hour, and one the operator raised is used within the hour.
_BODY_LIMIT_KEPT_S = 3600.0
# 422 unknown_order for an order stored here from central (pushed, listed, published) less than this long ago is "not
# yet", not "never": central had the order, its events side has not heard yet (a read replica behind, a queue between
# its services). Ten minutes is past any such lag that is not an outage of central's events side, and short enough
# that events central really does not have (another store's order) are settled soon.
_NOT_YET_KNOWN_S = 600.0
# After those ten minutes "never" needs evidence that the events side is current: central took events of an order
# stored here later. Without it (its events side down while orders are still pushed) the order waits, offered every
# refused_retry_s, up to this long: rejecting then lost every state of the outage's orders at central for good (the
# verify73b probe, 2a). A day is past any outage someone is not already fixing, and nothing waits for ever.
_NEVER_KNOWN_S = 86400.0


def _events(items: Sequence[OutboxItem]) -> list[dict[str, Any]]:
    """The rows as the events POST carries them."""
    return [{**json.loads(i.payload), "idempotency_key": i.idempotency_key} for i in items]


class OutboxSender:
    """Rows are written in the same transaction as the change (see store/); this only delivers them.

    Sends are serialised and always take the oldest pending rows, so events of one order reach the backend
    in the order they happened. A batch the backend did not acknowledge is sent again, with the same keys.

    A batch refused for good (the contract's 422 naming an event, see PERMANENT_EVENT_ERRORS) is split in halves,
    oldest half first, until every event is either acknowledged or refused on its own; such an event is marked
    rejected (delivered_at set, the reason in the payload under edge.store.outbox.REJECTED_KEY), logged as
    ``outbox_event_rejected``, published (OrderEventRejected: a person is told) and never sent again; but
    unknown_order for an order stored here less than _NOT_YET_KNOWN_S ago, or less than _NEVER_KNOWN_S ago while central
    has taken no events of an order stored after it, sets it aside instead (central's events side not up to date yet),
    nobody told. A 413, a 409, a 410 or another 422 splits as well, and an event
    refused on its own sets its order aside (one too big for a proxy as well): nothing is rejected, the order's
    events stay pending and wait (its later ones too, so they keep their order) while the other orders' go; every
    ``refused_retry_s`` its oldest event is sent alone, and once central takes it the order's events go as before.
    Each order set aside is published (OrderEventsRefused: a person is told). But an event of an order cancelled here
    other than its ``cancelled``, refused on its own with a 409 or such a 422, is rejected, logged as a warning, nobody
    told: central has the order's final state (a backend keeping order states refuses a STORNO's ``printed`` so, and
    any event written before the cancel once central cancelled the order itself), or gets it with the ``cancelled``
    behind it. An order central cancelled before the box stored the cancel is set aside meanwhile; storing the cancel
    makes its next try due at once (OrderRevised), and that rejects so. Every other refusal (a proxy's 405, a 400,
    auth) rejects nothing and sets nothing aside: the batch stays pending. So does a 409 while central may still be
    processing a POST of these keys that got no answer in time (the client's CentralInProgressError, retried).

    A 413 for several events is a body limit (a gateway's): the bytes of the larger half become the most a POST holds
    for _BODY_LIMIT_KEPT_S, so the halves go, and later batches go in parts of that size instead of meeting it again.
    """

    def __init__(
        self,
        db: Database,
        client: CentralClient,
        bus: EventBus,
        *,
        batch_size: int,
        link_up: Callable[[], bool],
        refused_retry_s: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = OutboxStore(db)
        self._bus = bus
        self._refused_retry_s = refused_retry_s
        # Orders whose events wait because central refused the oldest on its own -> when to try it again (monotonic).
        # In memory: a restart simply tries them again.
        self._set_aside: dict[str, float] = {}
        self._told: set[str] = set()  # of those, the ones published in this run (told once, not at every try)
        # Of those, orders central did not know yet -> (monotonic time of the first such answer, tries since, whether
        # the log said central's events side seems behind)
        self._unknown_since: dict[str, tuple[float, int, bool]] = {}
        self._never_known: set[str] = set()  # orders whose unknown_order was judged for good in this run
        self._clock = clock
        self._client = client
        self._storage = SaidOnce("outbox_waits_for_storage")  # why flushes cannot write, until one can
        # A refusal or failure every try meets again (a wrong token nobody fixes for days: a try every few seconds)
        # goes to the log once, then once in ten minutes while it lasts: each line is written to the SD card.
        self._refused = Summarised("outbox_delivery_refused", every_s=_SAY_AGAIN_S, level="error")
        self._failing = Summarised("outbox_delivery_failed", every_s=_SAY_AGAIN_S)
        self._batch_size = self._max_batch = min(batch_size, MAX_EVENTS_PER_POST)
        # (bytes a POST may hold, monotonic time it is forgotten) after a gateway's 413, see _BODY_LIMIT_KEPT_S
        self._body_limit: tuple[int, float] | None = None
        self._link_up = link_up
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = [
            bus.subscribe(lambda _: self._wake.set(), t)
            for t in (OrderStored, JobPrinted, JobDead, ScanRecorded, CentralLinkChanged)
        ]
        self._unsubscribe.append(bus.subscribe(self._revised, OrderRevised))

    def _revised(self, event: OrderRevised) -> None:
        """New rows to send; a cancel stored of an order set aside makes its next try due now: central's refusals of
        its events reject them from now on (of_cancelled_order), so it need not wait out refused_retry_s."""
        if event.status == OrderStatus.CANCELLED and event.order_id in self._set_aside:
            self._set_aside[event.order_id] = self._clock.mono()
        self._wake.set()

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
        return (await self._send_batch(up_to))[1]

    async def _send_batch(self, up_to: int | None) -> tuple[bool, int]:
        """(whether there was a batch to send, rows settled). A batch settles rows or sets an order aside, whose rows
        the next one leaves out: each is progress."""
        async with self._lock:
            items = await self._store.oldest(self._batch_size, up_to=up_to, set_aside=self._set_aside.keys())
            if not items:
                return False, 0
            if self._max_body() is not None:
                # What does not fit under a gateway's limit goes in the next batch, not in a small POST of its own.
                items = items[: self._fitting(_events(items))]
            return True, await self._settle(items)

    async def _settle(self, items: Sequence[OutboxItem]) -> int:
        """POST these rows as one batch; on a refusal about its events bisect. Returns rows acknowledged or rejected."""
        # An order set aside by an earlier half waits whole: its later events must not overtake the refused one.
        items = [i for i in items if i.order_id not in self._set_aside]
        if not items:
            return 0
        ids, events = [i.id for i in items], _events(items)
        if (fit := self._fitting(events)) < len(items):
            # A half of a batch refused before this limit was learnt: the oldest that fit, then the rest.
            return await self._settle(items[:fit]) + await self._settle(items[fit:])
        try:
            await self._client.post_events(events, retry_slow=len(items) == 1)
        except CentralSlowAnswerError:
            if len(items) == 1:
                raise
            # Central needs longer for this many than the read timeout allows (it may have taken them all: the keys
            # make the next copies duplicates): fewer a POST, until whole batches are taken in time again.
            self._batch_size = max(1, len(items) // 2)
            log.warning("outbox_batch_too_slow", events=len(items), batch_size=self._batch_size)
            # Central may still be at it (the client waits out its 409 "in progress"): the halves go after the pause
            # a retry of the whole would have had, not at once on top of it.
            await asyncio.sleep(self._client.retry_delay(0))
            return await self._settle_halves(items)
        except CentralApiError as err:
            if not isinstance(err, CentralRejectedError) or not (
                err.permanent_for_event or err.status == 413 or err.status in _ORDER_REFUSALS
            ):
                raise
            if len(items) == 1:
                if err.permanent_for_event and err.error == "unknown_order" and await self._not_known_yet(items[0]):
                    return 0
                if err.permanent_for_event:
                    await self._reject(items[0], err)
                    return 1
                if err.status in _CANCELLED_ORDER_REFUSALS and await self._store.of_cancelled_order(items[0]):
                    await self._reject(items[0], err, of_cancelled=True)
                    return 1
                # Refused on its own, not for good (one event too big for a proxy, 413, too): its order waits.
                await self._put_aside(items[0], err)
                return 0
            if err.status == 413:  # the body's size: the halves' go, nothing bigger until the limit is forgotten
                half = len(events) // 2
                self._keep_under(max(body_sizes(events[:half])[-1], body_sizes(events[half:])[-1]))
            # Which event does the backend refuse? Halves, oldest first, so the good ones still go and in order.
            log.warning(
                "outbox_batch_split",
                events=len(ids),
                first_id=ids[0],
                last_id=ids[-1],
                status=err.status,
                body_bytes=body_sizes(events)[-1],
                max_body_bytes=self._max_body(),
            )
            return await self._settle_halves(items)
        await self._store.delivered(ids, self._clock.wall())
        log.debug("outbox_delivered", events=len(ids), first_id=ids[0], last_id=ids[-1])
        if len(ids) == self._batch_size < self._max_batch:  # a whole batch in time: it doubles back to the setting
            self._batch_size = min(self._max_batch, 2 * self._batch_size)
        return len(ids)

    def _fitting(self, events: Sequence[dict[str, Any]]) -> int:
        """How many of the oldest of these go in one POST: all, or while a gateway's 413 is remembered, those under
        its limit (one at least: one alone over it is refused on its own, and its order set aside)."""
        limit = self._max_body()
        return len(events) if limit is None else max(1, bisect.bisect_right(body_sizes(events), limit))

    def _max_body(self) -> int | None:
        """The most bytes a POST holds while a gateway's 413 is remembered; None otherwise."""
        if self._body_limit is not None and self._clock.mono() >= self._body_limit[1]:
            log.info("outbox_body_limit_forgotten", max_body_bytes=self._body_limit[0])
            self._body_limit = None
        return None if self._body_limit is None else self._body_limit[0]

    def _keep_under(self, size: int) -> None:
        limit = self._max_body()
        self._body_limit = (size if limit is None else min(size, limit), self._clock.mono() + _BODY_LIMIT_KEPT_S)

    async def _settle_halves(self, items: Sequence[OutboxItem]) -> int:
        """The oldest half, then the other: events of one order keep their order."""
        half = len(items) // 2
        return await self._settle(items[:half]) + await self._settle(items[half:])

    async def _put_aside(self, item: OutboxItem, err: CentralRejectedError) -> None:
        """Central refused the order's oldest pending event on its own, not for good: its events wait, the others go."""
        self._set_aside[item.order_id] = self._clock.mono() + self._refused_retry_s * random.uniform(1, 1 + _JITTER)
        if item.order_id in self._told:  # refused again when tried alone
            log.info("outbox_order_still_refused", order_id=item.order_id, status=err.status)
            return
        self._told.add(item.order_id)
        reason = (err.body or str(err))[:200]
        waiting, number = await self._store.waiting_of(item.order_id)
        log.warning(
            "outbox_order_set_aside",
            order_id=item.order_id,
            key=item.idempotency_key,
            status=err.status,
            reason=reason,
            waiting=waiting,
            retry_in_s=self._refused_retry_s,
        )
        self._bus.publish(
            OrderEventsRefused(order_id=item.order_id, number=number, status=err.status, reason=reason, waiting=waiting)
        )

    async def _not_known_yet(self, item: OutboxItem) -> bool:
        """Central answered unknown_order to the order's oldest event alone: True when that is "not yet", and the order
        is set aside, nobody told; False when it is central's refusal for good. "Not yet" while the order was stored
        here from central less than _NOT_YET_KNOWN_S ago, or less than _NEVER_KNOWN_S ago while central has taken no
        events of an order stored after it; both by the wall clock and, within this run, by the monotonic one from the
        first such answer (a clock set back does not stretch them). Never for good before central has said so for
        _NOT_YET_KNOWN_S of this run: the stored time may be off the wall clock by a step forward since (a box that
        took orders with its clock behind, then NTP: the clock76 probe, D1), and a lag of seconds must cost seconds."""
        order_id, now = item.order_id, self._clock.mono()
        if order_id in self._never_known:  # its next events: central's answer is the same
            return False
        first, tries, said_behind = self._unknown_since.get(order_id, (now, 0, False))
        stored_at = await self._store.stored_at(order_id)  # None: its row gone, nothing to wait for
        if stored_at is None:
            waited = _NEVER_KNOWN_S
        elif now - first < _NOT_YET_KNOWN_S:
            waited = now - first
        else:
            waited = max(self._clock.wall() - stored_at, now - first)
        if waited >= _NEVER_KNOWN_S or (
            waited >= _NOT_YET_KNOWN_S and stored_at is not None and await self._store.later_order_taken(stored_at)
        ):
            self._unknown_since.pop(order_id, None)
            self._never_known.add(order_id)
            return False
        if waited < _NOT_YET_KNOWN_S:  # tried again soon, then less often: a lag of seconds costs seconds
            retry_in = min(self._refused_retry_s, self._client.retry_delay(tries))
        else:  # central's events side behind for minutes: as a refused order, not every few seconds for a day
            retry_in = self._refused_retry_s * random.uniform(1, 1 + _JITTER)
            if not said_behind:
                log.warning(
                    "outbox_order_not_known_yet_central_behind",
                    order_id=order_id,
                    waited_s=round(waited),
                    retry_in_s=round(retry_in),
                    rejected_after_s=_NEVER_KNOWN_S,
                )
        self._unknown_since[order_id] = (first, tries + 1, said_behind or waited >= _NOT_YET_KNOWN_S)
        self._set_aside[order_id] = now + retry_in
        if not tries:
            log.info("outbox_order_not_known_yet", order_id=order_id, key=item.idempotency_key, retry_in_s=retry_in)
        return True

    async def _try_set_aside(self) -> int:
        """Each set-aside order whose time has come: its oldest pending event alone. Taken (or rejected for good), the
        order's events go with the others again, the rest of them in the batches that follow; refused, it waits
        another round. Returns the rows settled."""
        now, total = self._clock.mono(), 0
        for order_id in [o for o, retry_at in self._set_aside.items() if retry_at <= now]:
            async with self._lock:
                del self._set_aside[order_id]
                item = await self._store.oldest_of(order_id)
                try:
                    if item is not None:  # None: settled meanwhile (by hand, or purged)
                        total += await self._settle([item])
                except CentralApiError:
                    # Not about the order (the line, the token): it waits another round, the batches say the rest.
                    self._set_aside[order_id] = now + self._refused_retry_s
                    raise
                if order_id not in self._set_aside:
                    self._told.discard(order_id)
                    self._unknown_since.pop(order_id, None)
                    log.info("outbox_order_taken_again", order_id=order_id)
        return total

    async def _reject(self, item: OutboxItem, err: CentralRejectedError, *, of_cancelled: bool = False) -> None:
        now = self._clock.wall()
        reason = err.body or str(err)
        payload = await self._store.reject(item, {"status": err.status, "reason": reason, "at": now}, now)
        # Of an order cancelled here central lost nothing it needs: no error for a person to chase.
        say, name = (log.warning, "outbox_event_after_cancel_refused") if of_cancelled else (log.error, _REJECTED)
        say(
            name,
            outbox_id=item.id,
            key=item.idempotency_key,
            order_id=payload.get("order_id"),
            event_type=payload.get("event"),
            status=err.status,
            reason=reason[:200],
        )
        if of_cancelled:
            return
        _, number = await self._store.waiting_of(item.order_id)
        self._bus.publish(
            OrderEventRejected(
                order_id=item.order_id,
                number=number,
                event=str(payload.get("event")),
                status=err.status,
                reason=reason[:200],
            )
        )

    async def rejected(self) -> int:
        """Rows the backend refused for good."""
        return await self._store.rejected()

    async def flush(self) -> int:
        """Deliver everything pending now (not what is written meanwhile, or a busy store would never finish); an order
        set aside only when its time has come."""
        total = await self._try_set_aside()
        last = await self._store.last_pending_id()
        if last is None:
            return total
        more = True
        while more:
            more, settled = await self._send_batch(last)
            total += settled
        return total

    async def _say(self, said: Summarised, kind: str, **fields: Any) -> None:
        """A failed try noted; the rows still pending counted only for a line that goes to the log, not at every try."""
        pending = {"pending": await self.pending()} if said.due(kind) else {}
        said.note(kind, **fields, **pending)

    def _idle_s(self) -> float:
        """How long the sender waits for news: _IDLE_S, less when a set-aside order's time comes sooner (one central
        did not know yet is tried again within seconds)."""
        now, wait = self._clock.mono(), _IDLE_S
        if self._link_up():
            wait = min([wait, *(retry_at - now for retry_at in self._set_aside.values())])
        return max(_GATHER_S, wait)

    async def _run(self) -> None:
        while True:
            if await wait_set(self._wake, self._idle_s()):
                await asyncio.sleep(_GATHER_S)
            self._wake.clear()
            if not self._link_up():
                continue
            try:
                await self.flush()
            except CentralRejectedError as err:  # the batch stays pending; 401/403/404 need a person (token, store id)
                await self._say(self._refused, str(err.status), status=err.status, error=str(err))
            except CentralInProgressError:
                pass  # central is still at the request (the client said so once): nothing failed; the next pass
            except CentralApiError as err:
                await self._say(self._failing, type(err).__name__, error=str(err))
            except StoreUnavailableError as err:  # a full or read-only card: rows stay pending
                self._storage.failed(str(err))
            except Exception:  # the sender must outlive a database hiccup; rows stay pending
                log.exception("outbox_sender_error")
            else:
                self._storage.passed()
                if self._refused.passed() | self._failing.passed():  # both told: neither says it again at once
                    log.info("outbox_delivery_resumed", pending=await self.pending())
