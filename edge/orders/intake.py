"""Accepting an order: validate, route, store durably; the one path used by the API and by recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import structlog

from edge.config import Settings
from edge.errors import (
    InvalidOrderError,
    MalformedOrderError,
    OrderConflictError,
    StoredOrderUnreadableError,
    WrongStateError,
)
from edge.events import (
    CancelRefused,
    Event,
    EventBus,
    JobHeld,
    OrderConflicted,
    OrderRevised,
    OrderStored,
    OrderTotalsMismatched,
)
from edge.orders.model import (
    Cancel,
    cancelled_payload,
    canonical_bytes,
    check_line_ids,
    first_difference,
    meaning_hash,
    parse_order,
    parse_stored,
    read_order,
    revision_hash,
)
from edge.orders.routing import plan_jobs
from edge.orders.totals import totals_problems
from edge.states import HoldReason, InsertOutcome, OrderSource, OrderStatus
from edge.store.orders import InsertResult, NewOrder, OrderStore
from edge.store.rows import StoredOrder

log = structlog.get_logger()

_REVISED = (InsertOutcome.UPDATED, InsertOutcome.CANCELLED)

# Orders with more items than this are validated in a thread; smaller ones (nearly all) on the loop, where a thread
# hop would cost more than the work.
_INLINE_ITEMS = 40


def _large(payload: Any) -> bool:
    return (
        isinstance(payload, dict) and isinstance(payload.get("items"), list) and len(payload["items"]) > _INLINE_ITEMS
    )


@dataclasses.dataclass(frozen=True)
class Router:
    """The routing part of the settings, bound once."""

    stations: dict[str, list[str]]
    receipt_printer: str | None
    receipts_by_default: bool
    reprint_receipt_on_change: bool = False
    printers: frozenset[str] = frozenset()  # every printer the config has
    receipts_enabled: bool = True  # false: this box prints no receipts by design (receipts.enabled)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        return cls(
            stations=settings.stations,
            receipt_printer=settings.receipts.printer,
            receipts_by_default=settings.receipts.by_default,
            reprint_receipt_on_change=settings.receipts.on_change == "reprint",
            printers=frozenset(settings.printers),
            receipts_enabled=settings.receipts.enabled,
        )

    def printer_for(self, kind: str, station: str | None) -> str | None:
        """Where a job of this kind (and station) prints now: the station's primary, or the receipt printer."""
        return next(iter(self.printers_for(kind, station)), None)

    def printers_for(self, kind: str, station: str | None) -> tuple[str, ...]:
        """The printers that serve a job of this kind (and station) now: the station's, primary first (backups take
        its tickets in a failover), or the receipt printer; none if nothing does."""
        if kind == "receipt":
            return (self.receipt_printer,) if self.receipt_printer else ()
        return tuple(self.stations.get(station or "", ()))

    def prepare(self, payload: Any, source: OrderSource, *, sent: bool = True) -> NewOrder:
        """Validate and plan; raises InvalidOrderError naming the field. Pure: touches nothing. ``sent``: the payload
        is a sender's (not one built from a stored revision, which is not refused for rules newer than it)."""
        # Built from a stored revision (a cancel): read as stored; its fields are not the sender's to be told of.
        order = parse_order(payload) if sent else parse_stored(payload, str(payload.get("id")))
        if sent:
            check_line_ids(order)
        canonical = canonical_bytes(payload)
        # A box that prints no receipts plans every revision as asking for none: none is made, a later revision turning
        # one on adds none (edge/orders/changes.py). The hashes stay the sender's: a resend is still the same order.
        planned = order if self.receipts_enabled else dataclasses.replace(order, print_receipt=False)
        plans = plan_jobs(
            planned,
            stations=self.stations,
            receipt_printer=self.receipt_printer,
            receipts_by_default=self.receipts_by_default,
        )
        routes = {station: printers[0] for station, printers in self.stations.items() if printers}
        if self.receipt_printer is not None:
            routes[""] = self.receipt_printer
        return NewOrder(
            order=planned,
            payload=canonical.decode(),
            content_hash=revision_hash(payload),
            meaning_hash=meaning_hash(order),
            plans=tuple(plans),
            source=source,
            routes=routes,
            printers=self.printers,
            reprint_receipt=self.reprint_receipt_on_change,
        )


def _refused_cancel(new: NewOrder, stored: StoredOrder) -> bool:
    """A cancel sent (not recovery's list: central's own record) for an order stored open: one at or below its
    revision is refused, not applied."""
    return (
        new.order.status == OrderStatus.CANCELLED
        and new.source != OrderSource.RECOVERY
        and stored.status == OrderStatus.OPEN
    )


def _cancel_refused(new: NewOrder, stored: StoredOrder, *, again: bool) -> CancelRefused:
    """The event of a cancel refused at or below the open stored revision; ``again``: its redelivery's repeat."""
    return CancelRefused(
        order_id=new.order.id,
        number=stored.number,
        source=new.source,
        revision=new.order.revision,
        stored=stored.revision,
        again=again,
    )


class OrderIntake:
    def __init__(self, router: Router, orders: OrderStore, bus: EventBus) -> None:
        self.router = router
        self._orders = orders
        self._bus = bus

    async def accept(self, payload: Any, *, source: OrderSource = OrderSource.PUSH) -> InsertResult:
        """Returns only after the order and its jobs are committed. Raises on invalid input or conflict."""
        return await self._store(await self._prepare(payload, source))

    async def cancel(self, order_id: str, cancel: Cancel, *, source: OrderSource) -> InsertResult:
        """The cancel route: the stored order sent again at the cancel's revision, cancelled; for an order not here
        (yet), the cancel kept (cancel_unknown). Built from the revision stored when it commits: a change stored
        between reading the order and writing the cancel makes it read and build again."""
        while True:
            stored = await self._orders.get(order_id)
            if stored is None:
                kept = await self.cancel_unknown(order_id, cancel, source=source)
                if kept is not None:
                    return kept
                continue  # stored meanwhile: cancelled like any stored order
            payload = cancelled_payload(json.loads(stored.payload), cancel)
            new = dataclasses.replace(await self._prepare(payload, source, sent=False), based_on=stored.revision)
            result = await self._store(new)
            if result.outcome != InsertOutcome.MOVED:
                return result

    async def _prepare(self, payload: Any, source: OrderSource, *, sent: bool = True) -> NewOrder:
        if _large(payload):  # validating 500 items is ~10 ms of CPU: off the loop, which keeps taking orders
            return await asyncio.to_thread(self.router.prepare, payload, source, sent=sent)
        return self.router.prepare(payload, source, sent=sent)

    async def _store(self, new: NewOrder) -> InsertResult:
        result = await self._orders.insert(new)
        if refused := await self._cancel_not_applied(new, result):
            raise refused
        self.publish(result, new)
        if result.outcome == InsertOutcome.CONFLICT:
            conflict = await self._conflict(new)
            self._tell_conflict(result, new, conflict)
            raise conflict
        if result.outcome == InsertOutcome.CLOSED:
            raise WrongStateError(
                f"order {result.order_id} is cancelled (revision {result.revision}); a cancelled order is not"
                " reopened: send a new order"
            )
        return result

    async def _cancel_not_applied(self, new: NewOrder, result: InsertResult) -> OrderConflictError | None:
        """A cancel (by the route, or a cancelled order pushed) at or below the stored open revision changes nothing:
        a cancel takes a revision above it. Answered 409 naming the revision to send, and alerted: a 2xx "stale" is
        taken for done by its sender, "status differs" said nothing of what to do, and the kitchen made a cancelled
        order. Recovery's list is central's own record, whose old revisions stay stale."""
        if new.order.status != OrderStatus.CANCELLED or new.source == OrderSource.RECOVERY:
            return None
        if result.outcome not in (InsertOutcome.STALE, InsertOutcome.CONFLICT):
            return None
        stored = await self._orders.get(new.order.id)
        if stored is None or not _refused_cancel(new, stored):
            return None
        order_id, sent = new.order.id, new.order.revision
        log.warning("cancel_not_applied", order_id=order_id, revision=sent, stored=stored.revision, source=new.source)
        self._bus.publish(_cancel_refused(new, stored, again=False))
        return OrderConflictError(
            order_id,
            f"order {order_id} is at revision {stored.revision}, open: this cancel at revision {sent} was not applied"
            f" and the order is not cancelled; a cancel takes the next revision: send it with revision"
            f" {stored.revision + 1}",
            field="revision",
        )

    async def refused_again(self, payload: bytes, error: Mapping[str, Any], *, source: OrderSource) -> None:
        """A message refused as a conflict and kept, sent again (the broker's redelivery, answered from the kept
        reject): the alarm its refusal raised, published again marked ``again``. The alert rules fold it into that
        alarm, or store it if a crash came before they did; nothing counts it. Told as _store told it: a cancel at or
        below the open stored revision, else a conflict with the reason kept (not judged anew: the record answers)."""
        if error.get("error") != "conflict":
            return
        try:
            new = await self._prepare(await read_order(payload), source)
        except (MalformedOrderError, InvalidOrderError):  # the config changed since: the kept reject still reports it
            return
        order_id, sent = new.order.id, new.order.revision
        stored = await self._orders.get(order_id)
        if stored is not None and _refused_cancel(new, stored) and sent <= stored.revision:
            event: Event = _cancel_refused(new, stored, again=True)
        else:
            event = OrderConflicted(
                order_id=order_id,
                source=source,
                number=new.order.number,
                reason=str(error.get("reason", "")),
                field=str(error.get("field") or ""),
                revision=sent,
                stands=stored.revision if stored is not None else 0,
                again=True,
            )
        self._bus.publish(event)

    async def _conflict(self, new: NewOrder) -> OrderConflictError:
        """Names the first field that differs from the revision stored under its number (the current one, or a lower
        one kept: see edge/store/orders.py _revision_reused), on the order as it is meant (as the duplicate check
        compares). Not for a kept cancel's or a purged order's revision: only their hashes are kept."""
        order_id, revision = new.order.id, new.order.revision
        stored = await self._orders.get(order_id)
        if stored is None and await self._orders.kept_cancel_revision(order_id) == revision:
            # Not "already exists": the order was never stored, a cancel came first (the docs probe, D7).
            return OrderConflictError(
                order_id,
                f"order {order_id} was cancelled at revision {revision} before it came (the cancel kept here stands),"
                " and a cancelled order is not reopened: send a new order",
                field="status",
            )
        payload = None if stored is None else await self._orders.payload_at(order_id, revision)
        if stored is None or payload is None:
            return OrderConflictError(order_id)
        try:
            field = first_difference(parse_stored(json.loads(payload), order_id), new.order)
        except StoredOrderUnreadableError:  # stored by an older, laxer version: its bytes differ, no field to name
            field = None
        differs = f" ({field} differs)" if field else ""
        if revision < stored.revision:
            return OrderConflictError(
                order_id,
                f"order {order_id} has revision {revision} stored with other content{differs} and is at revision"
                f" {stored.revision}: a change takes the next revision, send it with revision {stored.revision + 1}",
                field=field,
            )
        return OrderConflictError(
            order_id,
            f"order {order_id} already exists at revision {revision} with other content{differs}: the version stored"
            " first stands, printed or printing as it was",
            field=field,
        )

    async def cancel_unknown(self, order_id: str, cancel: Cancel, *, source: OrderSource) -> InsertResult | None:
        """A cancel for an order not stored here: kept, so the order prints nothing when it comes (see
        edge/store/cancels.py). None if the order is stored now (it came meanwhile): cancel it as a stored one. Raises
        on a conflict with the cancel kept before."""
        result = await self._orders.keep_cancel(order_id, cancel, source)
        if result is None:
            return None
        if result.outcome == InsertOutcome.CONFLICT:
            log.warning("cancel_conflict", order_id=order_id, revision=cancel.revision, source=source)
            reason = f"another reason than the cancel kept at revision {result.revision} for this order, not here yet"
            self._bus.publish(OrderConflicted(order_id=order_id, source=source, reason=reason))
            raise OrderConflictError(
                order_id,
                f"order {order_id} is not here yet; the cancel kept for it at revision {result.revision} has"
                " another reason",
            )
        if result.outcome == InsertOutcome.CANCEL_PENDING and result.revision == cancel.revision:
            log.info("cancel_kept", order_id=order_id, revision=cancel.revision, source=source)
        return result

    def publish(self, result: InsertResult, new: NewOrder) -> None:
        """Facts go out after the commit, never before."""
        if result.outcome == "stored":
            log.info(
                "order_stored",
                order_id=result.order_id,
                number=new.order.number,
                jobs=list(result.job_ids),
                source=new.source,
            )
            self._bus.publish(
                OrderStored(
                    order_id=result.order_id,
                    number=new.order.number,
                    job_ids=result.job_ids,
                    printers=tuple(sorted({p.printer for p in new.plans if p.printer})),
                    source=new.source,
                )
            )
            self._tell_totals(result, new)
            self._publish_unrouted(result, new)
            _tell_not_understood(result, new)
        elif result.after_cancel:  # stored, and at once cancelled by the cancel that came first: nothing prints
            log.info(
                "order_stored_cancelled",
                order_id=result.order_id,
                number=new.order.number,
                revision=new.order.revision,
                cancelled_revision=result.revision,
                source=new.source,
            )
            self._publish_stored_cancelled(result, new)
        elif result.arrived_cancelled:  # its cancel overtook it: received as central counts it, nothing prints
            log.info(
                "order_stored",
                order_id=result.order_id,
                number=new.order.number,
                revision=result.revision,
                cancelled=True,
                jobs=[],
                source=new.source,
            )
            self._publish_stored_cancelled(result, new)
        elif result.outcome in _REVISED and result.revision == new.order.revision:  # stored now, not before
            log.info(
                "order_revised",
                order_id=result.order_id,
                revision=result.revision,
                status=new.order.status,
                jobs=list(result.job_ids),
                source=new.source,
            )
            self._bus.publish(
                OrderRevised(
                    order_id=result.order_id,
                    number=new.order.number,
                    revision=result.revision,
                    status=new.order.status,
                    job_ids=result.job_ids,
                    printers=tuple(sorted(set(new.routes.values()))),
                    source=new.source,
                )
            )
            if new.order.status != OrderStatus.CANCELLED:  # a STORNO prints no sums
                self._tell_totals(result, new)
            self._publish_unrouted(result, new)
            _tell_not_understood(result, new)
        elif result.outcome == InsertOutcome.STALE:  # 2xx, nothing changed: the one trace of "the change never came"
            log.info(
                "order_stale",
                order_id=result.order_id,
                revision=new.order.revision,
                stored=result.revision,
                source=new.source,
            )

    def _publish_stored_cancelled(self, result: InsertResult, new: NewOrder) -> None:
        """An order stored now and cancelled at once (as it came, or by the cancel kept for it): received, and
        cancelled, nothing prints."""
        self._bus.publish(
            OrderStored(order_id=result.order_id, number=new.order.number, job_ids=(), printers=(), source=new.source)
        )
        self._bus.publish(
            OrderRevised(
                order_id=result.order_id,
                number=new.order.number,
                revision=result.revision,
                status=OrderStatus.CANCELLED,
                job_ids=(),
                printers=(),
                source=new.source,
            )
        )

    def _tell_conflict(self, result: InsertResult, new: NewOrder, conflict: OrderConflictError) -> None:
        """The manager's mail names what differs and the revision that stands, as the 409 does: the door alone said
        nothing, and a lower revision's conflict is not "the first version received stands"."""
        log.warning(
            "order_conflict",
            order_id=result.order_id,
            source=new.source,
            field=conflict.field,
            revision=new.order.revision,
            stands=result.revision,
        )
        self._bus.publish(
            OrderConflicted(
                order_id=result.order_id,
                source=new.source,
                number=new.order.number,
                reason=conflict.reason,
                field=conflict.field or "",
                revision=new.order.revision,
                stands=result.revision,
            )
        )

    def _tell_totals(self, result: InsertResult, new: NewOrder) -> None:
        """A receipt is a legal document: an order or a change whose totals do not add up is stored and printed as
        sent, but never silently."""
        if problems := totals_problems(new.order):
            log.warning(
                "order_totals_mismatch",
                order_id=result.order_id,
                number=new.order.number,
                problems=[str(problem) for problem in problems],
            )
            self._bus.publish(
                OrderTotalsMismatched(
                    order_id=result.order_id, number=new.order.number, problems=tuple(problems), source=new.source
                )
            )

    def _publish_unrouted(self, result: InsertResult, new: NewOrder) -> None:
        """Jobs held because no printer serves their station (or receipts): the manager is told what to route."""
        for job_id, station in result.unrouted:
            log.error(
                "job_held_no_printer",
                job_id=job_id,
                order_id=result.order_id,
                station=station,
                hint="no printer serves this station: add it to [stations] (or [receipts]) and restart",
            )
            self._bus.publish(
                JobHeld(
                    job_id=job_id,
                    order_id=result.order_id,
                    printer="",
                    age_s=0,
                    reason=HoldReason.NO_PRINTER,
                    order_number=new.order.number,
                    station=station,
                )
            )


def _tell_not_understood(result: InsertResult, new: NewOrder) -> None:
    """One line for what of the guest's words beside the contract (note, allergens) an order's tickets cannot print:
    where it was and its JSON type, never the words (health data). Not for a cancel: a STORNO prints none of them."""
    if new.order.not_understood and new.order.status == OrderStatus.OPEN:
        log.warning(
            "order_fields_not_understood",
            order_id=result.order_id,
            revision=new.order.revision,
            fields=list(new.order.not_understood),
            hint="allergens: a string, or an array of strings or of objects with a name or code; note: a string",
        )
