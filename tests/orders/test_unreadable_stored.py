"""Orders stored by an older, laxer intake. One over today's limits (a longer name) prints, changes and cancels as any
other: the limits hold senders, not what was answered 2xx. One this version cannot read at all (a time without its
zone): a change or cancel to it fails alone, with a clear answer, and never takes down the orders that share its
transaction (group commit)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.errors import InvalidOrderError
from edge.orders.model import parse_order
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import TIRAMISU, db_execute, db_rows, eventually, orders, post, slow_fsync, wait_until

# customer.name is at most 100 characters now; an older intake took longer ones.
LAX = "UPDATE orders SET payload = json_set(payload, '$.customer.name', ?) WHERE id = ?"
CREATED_AT = "UPDATE orders SET payload = json_set(payload, '$.created_at', ?) WHERE id = ?"
# A time without its zone: no instant at all, which no reading can mend.
NAIVE = "2026-11-22T18:04:11"


def changed(order: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(order) | {"revision": 2}
    out["items"].append(copy.deepcopy(TIRAMISU))
    return out


@pytest.mark.parametrize("others", [8, 2])
async def test_a_change_to_an_order_this_version_cannot_read_fails_alone(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
    others: int,
) -> None:
    """Revision 2 of such an order comes with new orders (a slow card: the first new one commits alone, the change
    and the rest share the next group commit, 8 or just 2 in it): the new ones are stored (201) and print; the change
    is refused with 409 naming the stored order's unreadable field, nothing of it prints. Before: the whole group
    failed with 422 "created_at", and a sender drops an order refused as invalid."""
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await db_execute(agent, CREATED_AT, NAIVE, example_order["id"])
    slow_fsync(monkeypatch, 0.05)
    first, *rest = orders(example_order, others)
    answers = await asyncio.gather(*(post(api, order) for order in [first, changed(example_order), *rest]))
    status, body = answers[1]
    assert status == 409 and body["error"] == "wrong_state", body
    assert "created_at" in body["reason"] and example_order["id"] in body["reason"], body
    assert [a[0] for a in answers[:1] + answers[2:]] == [201] * others, answers
    await printers["kitchen"].wait_for_printed(1 + others)
    assert await db_rows(agent, "SELECT revision FROM orders WHERE id = ?", example_order["id"]) == [(1,)]
    assert await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE order_id = ?", example_order["id"]) == [(2,)]


async def test_a_cancel_of_an_order_this_version_cannot_read_is_refused_naming_the_stored_field(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cancel route builds the cancelled revision from the stored one: 409 wrong_state naming the stored field,
    not a 422 blaming the sender's body (which holds only a revision); nothing prints, the order stays open. Before:
    422 created_at, and a sender drops a cancel refused as invalid without a person hearing of it."""
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await db_execute(agent, CREATED_AT, NAIVE, example_order["id"])
    async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 2}) as response:
        body = await response.json()
        assert (response.status, body["error"]) == (409, "wrong_state"), body
    assert "created_at" in body["reason"] and "cancelled" in body["reason"], body
    assert await db_rows(agent, "SELECT status FROM orders") == [("open",)]
    assert len(printers["kitchen"].printed) == 1


@pytest.mark.parametrize(
    ("sql", "value", "on_paper"),
    [(LAX, "Gr" + "o" * 148, "o" * 40), (CREATED_AT, "2101-01-01T03:17:00Z", "03:17")],
    ids=["long-name", "year-2101"],
)
async def test_an_order_an_older_intake_stored_still_waiting_prints_after_the_upgrade(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    sql: str,
    value: str,
    on_paper: str,
) -> None:
    """An order taken by an older, laxer version while the printers were off (its tickets waiting across the upgrade)
    holds a customer name longer than this version takes, or a time in a year it no longer takes: its ticket and
    receipt print when the printers are back, what it holds on the paper. A limit on what a sender may send is not a
    reason to leave an acknowledged order unprinted; it changes and cancels as any order. Before: both jobs went dead,
    "cannot render" (the year: until stop 40)."""
    for printer in printers.values():
        printer.set_offline(True)
    assert (await post(api, example_order))[0] == 201
    for name in printers:
        await wait_until(lambda name=name: agent.spoolers[name].state.value == "offline", what=f"{name} offline")
    await db_execute(agent, sql, value, example_order["id"])
    for printer in printers.values():
        printer.set_offline(False)
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    [receipt] = await printers["front"].wait_for_printed(1)
    for data in (ticket, receipt):
        assert on_paper in decode(data).text.replace("\n", "")
    states = "SELECT DISTINCT state FROM print_jobs"
    await eventually(lambda: db_rows(agent, states), lambda rows: rows == [("printed",)], what="both printed")
    # It changes and cancels as any order: a change ticket, then a STORNO.
    assert (await post(api, changed(example_order)))[0] == 200
    change = decode((await printers["kitchen"].wait_for_printed(2))[1]).text
    assert "+ 1x Tiramisu" in change, change
    async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 3}) as response:
        assert response.status == 200, await response.text()
    void = decode((await printers["kitchen"].wait_for_printed(3))[2]).text
    assert "STORNO" in void, void


@pytest.mark.parametrize(
    ("path", "value", "lax_reads_it"),
    [
        (("customer", "name"), "G" * 150, True),
        (("items", 0, "qty"), 0, True),
        (("items", 0, "tax_rate"), "100", True),
        (("fulfilment", "table"), 10**12, True),
        (("id",), "ord with spaces", True),
        (("items", 0, "qty"), "2", False),
        (("created_at",), "1999-12-31T23:00:00Z", True),
        (("created_at",), "2101-01-01T00:00:00Z", True),
        (("created_at",), NAIVE, False),
        (("created_at",), "9999-12-31T23:59:59Z", False),
        (("totals", "total"), 12.5, False),
    ],
)
def test_a_stored_payload_is_read_without_a_senders_limits_but_with_its_types_and_times(
    example_order: dict, path: tuple[str | int, ...], value: object, lax_reads_it: bool
) -> None:
    """parse_order(stored=True) drops lengths, counts, ranges and patterns (limits a sender is held to: the years
    2000-2100 among them), never types, times or money: what a ticket needs to print (a time without its zone names no
    instant; one in 9999 cannot be shown in the store's zone). A sender's payload with the same value is refused."""
    payload = copy.deepcopy(example_order)
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InvalidOrderError):
        parse_order(payload)
    if lax_reads_it:
        assert parse_order(payload, stored=True).id == payload["id"]
    else:
        with pytest.raises(InvalidOrderError):
            parse_order(payload, stored=True)


async def test_a_storno_whose_struck_revision_this_version_cannot_read_fails_alone(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The STORNO's revision on paper turns out unreadable (a time without its zone) when its turn comes: the STORNO
    fails as any ticket that cannot be rendered, and the orders behind it print. The look for a STORNO with nothing
    to strike reads those revisions too, before the render: it must not stop the printer's line."""
    kitchen = printers["kitchen"]
    assert (await post(api, example_order))[0] == 201
    await kitchen.wait_for_printed(1)
    kitchen.set_offline(True)
    async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 2}) as response:
        assert response.status == 200, await response.text()
    await db_execute(
        agent,
        "UPDATE order_revisions SET payload = json_set(payload, '$.created_at', ?) WHERE order_id = ? AND revision = 1",
        NAIVE,
        example_order["id"],
    )
    after = dict(copy.deepcopy(example_order), id="ord_after", number="B-7", print_receipt=False)
    assert (await post(api, after))[0] == 201
    kitchen.set_offline(False)
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE order_id = 'ord_after'"),
        lambda rows: rows == [("printed",)],
        what="the order behind the STORNO printed",
    )
    assert "B-7" in decode(kitchen.printed[-1]).text
