"""Ready-made orders shaped like the backend's contract, for the demo, the simulators and the benchmark."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

_EXAMPLE: dict[str, Any] = {
    "id": "ord_7f3a9c21",
    "number": "A-1042",
    "created_at": "2026-11-22T18:04:11Z",
    "channel": "web",
    "priority": 0,
    "customer": {"name": "Jürgen Groß", "phone": "+49 30 1234567"},
    "fulfilment": {"type": "pickup", "table": None, "due_at": "2026-11-22T18:30:00Z"},
    "items": [
        {
            "sku": "PIZ-MARG-32",
            "name": "Pizza Margherita",
            "qty": 2,
            "unit_price": "9.50",
            "requires_production": True,
            "station": "kitchen",
            "modifiers": [{"name": "extra Käse", "price": "1.00"}],
            "note": "eine ohne Basilikum",
        },
        {
            "sku": "SPAETZLE",
            "name": "Käsespätzle",
            "qty": 1,
            "unit_price": "11.90",
            "requires_production": True,
            "station": "kitchen",
            "modifiers": [],
            "note": None,
        },
        {
            "sku": "APFELSCHORLE-05",
            "name": "Apfelschorle 0,5 l",
            "qty": 2,
            "unit_price": "3.20",
            "requires_production": False,
            "station": None,
            "modifiers": [],
            "note": None,
        },
    ],
    "totals": {
        "subtotal": "39.30",
        "discount": "0.00",
        "tax": [{"rate": "19", "amount": "1.02"}, {"rate": "7", "amount": "2.15"}],
        "total": "39.30",
        "currency": "EUR",
    },
    "payment": {"method": "card", "status": "paid"},
    "print_receipt": True,
}

_CHANNELS = ("web", "pos", "phone", "marketplace", "kiosk")


def taken_at(order: dict[str, Any], created: datetime) -> dict[str, Any]:
    """The order as if created at ``created`` (changed in place): its due_at keeps its distance from created_at."""
    was = datetime.fromisoformat(order["created_at"])
    order["created_at"] = _iso(created)
    if due := order["fulfilment"].get("due_at"):
        order["fulfilment"]["due_at"] = _iso(created + (datetime.fromisoformat(due) - was))
    return order


def due_at(order: dict[str, Any], due: datetime | None) -> dict[str, Any]:
    """The order (changed in place) due at ``due``; None: for as soon as possible."""
    order["fulfilment"]["due_at"] = None if due is None else _iso(due)
    return order


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def example_order(*, created_at: datetime | None = None) -> dict[str, Any]:
    """The contract example as the backend team wrote it, taken at ``created_at`` (default: now).

    Staleness is an order's own age: as shipped (created 22 Nov 2026) it is an old order, held rather than printed.
    """
    return taken_at(copy.deepcopy(_EXAMPLE), created_at or datetime.now(UTC))


def make_order(
    seq: int, *, prefix: str = "ord", created_at: datetime | None = None, print_receipt: bool = True, bar: bool = False
) -> dict[str, Any]:
    """Order number ``seq``: the example with its own id, number, times and channel; ``bar`` adds a drink made at
    the bar."""
    order = example_order(created_at=created_at or datetime.now(UTC).replace(microsecond=0))
    order["id"] = f"{prefix}_{seq:06d}"
    order["number"] = f"A-{1000 + seq}"
    order["channel"] = _CHANNELS[seq % len(_CHANNELS)]
    order["print_receipt"] = print_receipt
    if bar:
        order["fulfilment"] = {"type": "dine_in", "table": "12", "due_at": None}
        order["items"].append(
            {
                "sku": "APEROL",
                "name": "Aperol Spritz",
                "qty": 2,
                "unit_price": "7.50",
                "requires_production": True,
                "station": "bar",
                "modifiers": [],
                "note": "wenig Eis",
            }
        )
        order["totals"]["subtotal"] = order["totals"]["total"] = "54.30"
        # Drinks are 19 %, tax included: 21.40 (6.40 + 15.00) holds 3.42 of it; the food's 7 % stays 2.15.
        order["totals"]["tax"] = [{"rate": "19", "amount": "3.42"}, {"rate": "7", "amount": "2.15"}]
    return order
