"""Ready-made orders shaped like the backend's contract, for the demo, the simulators and the benchmark."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
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


def example_order() -> dict[str, Any]:
    """The contract example exactly as the backend team wrote it."""
    return copy.deepcopy(_EXAMPLE)


def make_order(
    seq: int, *, prefix: str = "ord", created_at: datetime | None = None, print_receipt: bool = True, bar: bool = False
) -> dict[str, Any]:
    """Order number ``seq``: the example with its own id, number, times and channel; ``bar`` adds a drink made at the bar."""
    created = created_at or datetime.now(UTC).replace(microsecond=0)
    order = example_order()
    order["id"] = f"{prefix}_{seq:06d}"
    order["number"] = f"A-{1000 + seq}"
    order["created_at"] = created.isoformat().replace("+00:00", "Z")
    order["fulfilment"]["due_at"] = (created + timedelta(minutes=25)).isoformat().replace("+00:00", "Z")
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
    return order
