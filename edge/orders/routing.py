"""Which ticket goes to which printer. Decided by the product (requires_production), never by the channel."""

from __future__ import annotations

import dataclasses

from edge.errors import InvalidOrderError
from edge.orders.model import Order


@dataclasses.dataclass(frozen=True)
class JobPlan:
    kind: str  # "ticket" or "receipt"
    station: str | None  # set for tickets
    printer: str


def plan_jobs(
    order: Order, *, stations: dict[str, list[str]], receipt_printer: str | None, receipts_by_default: bool
) -> list[JobPlan]:
    """One ticket per station with production items, then a receipt if asked for.

    ``stations`` maps a station to its printers, primary first. An item whose station
    has no printer is an error at intake: a silently dropped ticket is the worst bug we can have.
    """
    plans = []
    for index, item in enumerate(order.items):
        if item.requires_production and not stations.get(item.station or ""):
            raise InvalidOrderError(f"items[{index}].station", f"no printer is configured for station {item.station!r}")
    for station in order.stations:
        plans.append(JobPlan(kind="ticket", station=station, printer=stations[station][0]))
    wants_receipt = receipts_by_default if order.print_receipt is None else order.print_receipt
    if wants_receipt:
        if receipt_printer is None:
            raise InvalidOrderError("print_receipt", "a receipt was asked for but no receipt printer is configured")
        plans.append(JobPlan(kind="receipt", station=None, printer=receipt_printer))
    return plans
