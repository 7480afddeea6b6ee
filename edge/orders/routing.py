"""Which ticket goes to which printer. Decided by the product (requires_production), never by the channel."""

from __future__ import annotations

import dataclasses

from edge.orders.model import Order


@dataclasses.dataclass(frozen=True)
class JobPlan:
    kind: str  # "ticket" or "receipt"
    station: str | None  # set for tickets
    printer: str | None  # None: no printer serves it (yet); the job is held until the config gives it one


def wants_receipt(order: Order, *, by_default: bool) -> bool:
    """Whether ``order`` asks for the customer's receipt: its ``print_receipt``, or receipts.by_default when it does not
    say; for a later revision, what the order had instead of receipts.by_default (edge/orders/changes.py)."""
    return by_default if order.print_receipt is None else order.print_receipt


def plan_jobs(
    order: Order, *, stations: dict[str, list[str]], receipt_printer: str | None, receipts_by_default: bool
) -> list[JobPlan]:
    """One ticket per station with production items, then a receipt if asked for.

    ``stations`` maps a station to its printers, primary first. A station no printer serves (central's menu gained
    it before this store's config did), or a receipt with no receipt printer, still gets its job, planned without a
    printer: it is held and alerted until the config routes it, and the rest of the order prints. Refusing the
    whole order would leave the kitchen without it; dropping the ticket is the worst bug we can have.
    """
    plans = [
        JobPlan(kind="ticket", station=station, printer=next(iter(stations.get(station, ())), None))
        for station in order.stations
    ]
    if wants_receipt(order, by_default=receipts_by_default):
        plans.append(JobPlan(kind="receipt", station=None, printer=receipt_printer))
    return plans
