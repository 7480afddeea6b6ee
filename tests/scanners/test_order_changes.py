"""Orders changed after their tickets were scanned: the stations an order waits for are those with production items
in its current revision. The real agent: orders and their revisions over HTTP, scans through pty scanners, the state
read back from GET /api/v1/orders/{id}, the scans table and the outbox."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, db_rows, eventually, job_rows, key_mark, post

TIRAMISU = {
    "sku": "TIRAMISU",
    "name": "Tiramisu",
    "qty": 1,
    "unit_price": "5.00",
    "requires_production": True,
    "station": "kitchen",
    "modifiers": [],
    "note": None,
}
APEROL = {
    "sku": "APEROL",
    "name": "Aperol Spritz",
    "qty": 1,
    "unit_price": "7.50",
    "requires_production": True,
    "station": "bar",
    "modifiers": [],
    "note": None,
}


def totalled(order: dict[str, Any]) -> dict[str, Any]:
    """The order's totals made to add up again: food (kitchen) at 7 %, everything else at 19 %, tax included."""
    gross = {"7": Decimal(0), "19": Decimal(0)}
    for item in order["items"]:
        price = Decimal(item["unit_price"]) + sum(Decimal(m["price"]) for m in item["modifiers"])
        gross["7" if item["station"] == "kitchen" else "19"] += price * item["qty"]
    total = sum(gross.values())
    order["totals"] |= {
        "subtotal": f"{total:.2f}",
        "total": f"{total:.2f}",
        "tax": [
            {"rate": rate, "amount": f"{(g * int(rate) / (100 + int(rate))).quantize(Decimal('0.01'))}"}
            for rate, g in gross.items()
            if g
        ],
    }
    return order


def revised(
    order: dict[str, Any], revision: int, *, add: tuple[dict[str, Any], ...] = (), drop: str = ""
) -> dict[str, Any]:
    """Revision ``revision``: ``add`` items appended, the items of station ``drop`` taken out."""
    out = copy.deepcopy(order)
    out["revision"] = revision
    out["items"] = [i for i in out["items"] if not drop or i["station"] != drop] + [copy.deepcopy(i) for i in add]
    return totalled(out)


async def new_order(api: aiohttp.ClientSession, agent: Agent, seq: int, *, bar: bool = False) -> dict[str, Any]:
    """An order over HTTP, its tickets printed (as in a kitchen: a change then prints a change ticket)."""
    order = totalled(make_order(seq, bar=bar))
    status, body = await post(api, order)
    assert status == 201, body
    await printed(agent)
    return order


async def change(api: aiohttp.ClientSession, agent: Agent, order: dict[str, Any]) -> None:
    status, body = await post(api, order)
    assert (status, body["status"]) == (200, "updated"), body
    await printed(agent)


async def printed(agent: Agent) -> None:
    await eventually(
        lambda: job_rows(agent, "SELECT state FROM print_jobs"),
        lambda rows: all(r[0] in ("printed", "discarded") for r in rows),
        what="every job printed",
    )


async def scan(
    sims: dict[str, SimScanner], seen: Seen, scanner: str, order: dict[str, Any], station: str, revision: int = 1
) -> None:
    """The scanner reads the QR code of the ticket showing ``revision`` (a change ticket: the change's); returns once
    the scan is stored."""
    before = len(seen.scans)
    sims[scanner].scan(f"edge:v1:{order['id']}:{station}" + (f":{revision}" if revision > 1 else ""))
    await seen.scans_count(before + 1)


async def last_scan(agent: Agent) -> tuple[str, str]:
    [(outcome, detail)] = await db_rows(agent, "SELECT outcome, detail FROM scans ORDER BY id DESC LIMIT 1")
    return outcome, detail


async def state(api: aiohttp.ClientSession, order: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    async with api.get(f"/api/v1/orders/{order['id']}") as response:
        body = await response.json()
    return body["state"], {s["station"]: s["done"] for s in body["stations"]}


async def outbox(agent: Agent, order: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await db_rows(
        agent, "SELECT event, idempotency_key, payload FROM outbox WHERE order_id = ? ORDER BY id", order["id"]
    )
    return [(event, key, json.loads(payload)) for event, key, payload in rows]


async def test_an_item_added_at_a_done_station_reopens_it_and_the_order_waits_for_its_change_ticket(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
) -> None:
    """Kitchen and bar order; the kitchen scans its ticket done, then revision 2 adds a Tiramisu (a kitchen change
    ticket prints). The bar scan leaves the order open, waiting for the kitchen; the change ticket's scan (it carries
    the ticket's code) makes it ready. Before: the bar scan said order_ready with the Tiramisu still to make, and the
    change ticket's scan "order … is already ready"."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 1, bar=True)
    await scan(sims, seen, "kitchen", order, "kitchen")
    assert await state(scan_api, order) == ("open", {"bar": False, "kitchen": True})

    await change(scan_api, agent, revised(order, 2, add=(TIRAMISU,)))
    assert await state(scan_api, order) == ("open", {"bar": False, "kitchen": False})

    await scan(sims, seen, "bar", order, "bar")
    assert await last_scan(agent) == ("ticket_done", f"order {order['number']}: bar done, waiting for kitchen")
    await scan(sims, seen, "kitchen", order, "kitchen", revision=2)
    assert await last_scan(agent) == ("order_ready", f"order {order['number']} ready")
    assert await state(scan_api, order) == ("ready", {"bar": True, "kitchen": True})
    events = await outbox(agent, order)
    assert [e for e, _, _ in events if e in ("updated", "ready")] == ["updated", "ready"]
    ready = [(key, payload) for e, key, payload in events if e == "ready"]
    assert [key for key, _ in ready] == [f"{order['id']}:ready:2{await key_mark(agent)}"]
    assert "reopened" not in next(p for e, _, p in events if e == "updated")  # it was not ready: nothing to take back


async def test_the_original_ticket_scanned_after_a_change_that_adds_a_dish_does_not_make_the_order_ready(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
    printers: dict[str, SimPrinter],
) -> None:
    """A kitchen order printed; revision 2 adds a Tiramisu and its change ticket prints. The cook scans the QR code of
    the ORIGINAL ticket still on the rail (the codes as printed, read back from the paper): the order stays open,
    nothing goes to central, and the scan says to scan the newest ticket; the change ticket's code makes it ready.
    Before (changes probe F1): every ticket of a station carried the same code, so the original's scan said
    order_ready and central heard ready with the Tiramisu still to make."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 1)
    await change(scan_api, agent, revised(order, 2, add=(TIRAMISU,)))
    original, change_ticket = (decode(t).qr_codes for t in await printers["kitchen"].wait_for_printed(2))
    assert len(original) == len(change_ticket) == 1 and original != change_ticket, (original, change_ticket)

    before = len(seen.scans)
    sims["kitchen"].scan(original[0])
    await seen.scans_count(before + 1)
    outcome, detail = await last_scan(agent)
    assert outcome == "already_done" and "revision 1" in detail and "revision 2" in detail, detail
    assert await state(scan_api, order) == ("open", {"kitchen": False})
    assert [e for e, _, _ in await outbox(agent, order) if e == "ready"] == []

    sims["kitchen"].scan(change_ticket[0])
    await seen.scans_count(before + 2)
    assert await last_scan(agent) == ("order_ready", f"order {order['number']} ready")
    assert await state(scan_api, order) == ("ready", {"kitchen": True})


async def test_a_ticket_scanned_after_a_change_took_back_what_another_added_shows_all_there_is_to_make(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
) -> None:
    """Revision 2 adds a Tiramisu, revision 3 takes it out again before it was made: the first ticket shows all
    there is to make at the kitchen now, and its scan makes the order ready. Before stop 80 it was refused, "revision 2
    gave kitchen more to make", though that revision's news was taken back (the scan80 probe, F2)."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 1)
    await change(scan_api, agent, revised(order, 2, add=(TIRAMISU,)))
    await change(scan_api, agent, revised(order, 3))
    await scan(sims, seen, "kitchen", order, "kitchen")
    assert await last_scan(agent) == ("order_ready", f"order {order['number']} ready")
    assert await state(scan_api, order) == ("ready", {"kitchen": True})


@pytest.mark.parametrize("scanner", ["kitchen", "counter"])
async def test_the_number_of_the_first_ticket_typed_after_a_renumbering_change_does_not_make_the_order_ready(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
    scanner: str,
) -> None:
    """Revision 2 renumbers A-1001 to B-77 and adds a Tiramisu. The cook types the number on the ticket in hand,
    the first one: it names that ticket's revision, which the change gave more to make, as its QR code would (refused,
    naming the change ticket); the order stays open and central hears no ready. Before stop 80 the typed old number
    marked the kitchen done, the order ready with the Tiramisu unmade, and central was told (the scan80 probe, F3)."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 1)
    renumbered = revised(order, 2, add=(TIRAMISU,)) | {"number": "B-77"}
    await change(scan_api, agent, renumbered)
    before = len(seen.scans)
    sims[scanner].scan(order["number"])
    await seen.scans_count(before + 1)
    outcome, detail = await last_scan(agent)
    assert outcome == "already_done" and "revision 2" in detail, detail
    assert await state(scan_api, order) == ("open", {"kitchen": False})
    assert [e for e, _, _ in await outbox(agent, order) if e == "ready"] == []


@pytest.mark.parametrize(
    ("added", "reopened", "rescan"),
    [
        pytest.param(TIRAMISU, "kitchen", "kitchen", id="dish_added"),
        pytest.param(APEROL, "bar", "bar", id="drink_added"),
    ],
)
async def test_an_item_added_to_a_ready_order_takes_it_out_of_ready_until_made(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
    added: dict[str, Any],
    reopened: str,
    rescan: str,
) -> None:
    """A kitchen-only order scanned ready; revision 2 adds a dish (kitchen change ticket) or a drink (the bar's first
    ticket). The order is open again, the station to make it not done, and the `updated` event says which stations
    it reopened; the scan of the new ticket makes it ready again, with a second `ready` event under its own key.
    Before: the order stayed ready (a drink added: ready next to a bar station not done), and the scan said "order …
    is already ready"."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 2)
    await scan(sims, seen, "kitchen", order, "kitchen")
    assert await state(scan_api, order) == ("ready", {"kitchen": True})

    await change(scan_api, agent, revised(order, 2, add=(added,)))
    expected = {"kitchen": reopened != "kitchen"} | {reopened: False}
    assert await state(scan_api, order) == ("open", expected)
    [updated] = [p for e, _, p in await outbox(agent, order) if e == "updated"]
    assert updated["reopened"] == [reopened]

    await scan(sims, seen, rescan, order, reopened, revision=2)
    assert await last_scan(agent) == ("order_ready", f"order {order['number']} ready")
    assert (await state(scan_api, order))[0] == "ready"
    events = [(e, key) for e, key, _ in await outbox(agent, order) if e in ("ready", "updated")]
    mark = await key_mark(agent)
    assert events == [
        ("ready", f"{order['id']}:ready:0{mark}"),
        ("updated", f"{order['id']}:updated:2{mark}"),
        ("ready", f"{order['id']}:ready:2{mark}"),
    ]


async def test_a_change_that_makes_nothing_new_leaves_a_ready_order_ready(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """A ready order whose change only takes something away (one pizza less) or touches no production item (a drink
    the counter hands over): nothing to make, the order stays ready, no second `ready` event."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 3)
    await scan(sims, seen, "kitchen", order, "kitchen")
    fewer = revised(order, 2)
    fewer["items"][0]["qty"] = 1
    await change(scan_api, agent, totalled(fewer))
    drinks = revised(fewer, 3)
    drinks["items"][2]["qty"] = 3
    await change(scan_api, agent, totalled(drinks))
    assert await state(scan_api, order) == ("ready", {"kitchen": True})
    events = [e for e, _, p in await outbox(agent, order) if e in ("ready", "updated") and "reopened" not in p]
    assert events == ["ready", "updated", "updated"]


@pytest.mark.parametrize("kitchen_first", [False, True], ids=["kitchen_scanned_after", "kitchen_scanned_before"])
async def test_a_station_emptied_by_a_change_is_no_longer_waited_for(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
    kitchen_first: bool,
) -> None:
    """Kitchen and bar order; revision 2 takes the drinks out (the bar gets a change ticket striking them). The order
    waits for the kitchen alone: its scan makes it ready, or, the kitchen already done, the change itself does (a
    `ready` event without a scanner, with the revision). The bar's old ticket scanned afterwards changes nothing.
    Before: "kitchen done, waiting for bar", the order waiting for a station with nothing to make."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 4, bar=True)
    if kitchen_first:
        await scan(sims, seen, "kitchen", order, "kitchen")
    await change(scan_api, agent, revised(order, 2, drop="bar"))
    if kitchen_first:
        assert await state(scan_api, order) == ("ready", {"kitchen": True})
        [ready] = [(key, p) for e, key, p in await outbox(agent, order) if e == "ready"]
        assert ready[0] == f"{order['id']}:ready:2{await key_mark(agent)}"
        assert ready[1] | {"at": 0} == {
            "order_id": order["id"],
            "event": "ready",
            "at": 0,
            "number": order["number"],
            "revision": 2,
        }
    else:
        assert await state(scan_api, order) == ("open", {"kitchen": False})
        await scan(sims, seen, "kitchen", order, "kitchen")
        assert await last_scan(agent) == ("order_ready", f"order {order['number']} ready")
        assert (await state(scan_api, order))[0] == "ready"
    await scan(sims, seen, "bar", order, "bar")
    # why, as the docs say: not "already ready", which left the barkeeper asking (the scan80 probe, F4)
    nothing = f"order {order['number']} has nothing for bar in revision 2: nothing changed"
    assert await last_scan(agent) == ("already_done", nothing)
    assert [e for e, _, _ in await outbox(agent, order)].count("ready") == 1


async def test_the_bar_ticket_of_drinks_taken_out_changes_nothing_and_says_why(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """The drinks taken out before anyone scanned: the bar scanning its old ticket marks nothing done and the detail
    says the bar has nothing in revision 2 (before: "bar done, waiting for kitchen")."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 5, bar=True)
    await change(scan_api, agent, revised(order, 2, drop="bar"))
    await scan(sims, seen, "bar", order, "bar")
    assert await last_scan(agent) == (
        "already_done",
        f"order {order['number']} has nothing for bar in revision 2: nothing changed",
    )
    assert await state(scan_api, order) == ("open", {"kitchen": False})


@pytest.mark.parametrize("scanned", [True, False])
async def test_a_cancelled_order_reads_cancelled_at_the_pass_not_ready_or_open(
    scan_agent: tuple[Agent, Seen],
    sims: dict[str, SimScanner],
    scan_api: aiohttp.ClientSession,
    scanned: bool,
) -> None:
    """An order scanned ready (or not scanned yet) and then cancelled: GET /api/v1/orders/{id} says `state:
    cancelled`, which no pickup screen reads as "call the guest" or "still to make". Before (changes probe F3): `ready`
    (or `open`) beside `status: cancelled`."""
    agent, seen = scan_agent
    order = await new_order(scan_api, agent, 1)
    if scanned:
        await scan(sims, seen, "kitchen", order, "kitchen")
        assert (await state(scan_api, order))[0] == "ready"
    async with scan_api.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2}) as response:
        assert response.status == 200, await response.text()
    assert (await state(scan_api, order))[0] == "cancelled"
