"""An order stored by an older, laxer intake that this version cannot read: a change to it fails alone, with a clear
answer, and never takes down the orders that share its transaction (group commit)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.sim.printer import SimPrinter
from tests.helpers import TIRAMISU, db_execute, db_rows, orders, post, slow_fsync

# customer.name is at most 100 characters now; an older intake took longer ones.
LAX = "UPDATE orders SET payload = json_set(payload, '$.customer.name', ?) WHERE id = ?"


def changed(order: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(order) | {"revision": 2}
    out["items"].append(copy.deepcopy(TIRAMISU))
    return out


async def test_a_change_to_an_order_this_version_cannot_read_fails_alone(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revision 2 of such an order comes with eight new orders, in one group commit (a slow card): the eight are
    stored (201) and print; the change is refused with 409 naming the stored order's unreadable field, nothing of it
    prints. Before: the whole group failed with 422 "customer.name", and a sender drops an order refused as invalid."""
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await db_execute(agent, LAX, "G" * 150, example_order["id"])
    slow_fsync(monkeypatch, 0.05)
    others = orders(example_order, 8)
    sent = [*others[:4], changed(example_order), *others[4:]]
    answers = await asyncio.gather(*(post(api, order) for order in sent))
    status, body = answers[4]
    assert status == 409 and body["error"] == "wrong_state", body
    assert "customer.name" in body["reason"] and example_order["id"] in body["reason"], body
    assert [a[0] for a in answers[:4] + answers[5:]] == [201] * 8, answers
    await printers["kitchen"].wait_for_printed(9)
    assert await db_rows(agent, "SELECT revision FROM orders WHERE id = ?", example_order["id"]) == [(1,)]
    assert await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE order_id = ?", example_order["id"]) == [(2,)]


async def test_a_cancel_of_an_order_this_version_cannot_read_is_refused_naming_the_stored_field(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cancel route builds the cancelled revision from the stored one: 409 wrong_state naming the stored field,
    not a 422 blaming the sender's body (which holds only a revision); nothing prints, the order stays open. Before:
    422 customer.name, and a sender drops a cancel refused as invalid without a person hearing of it."""
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await db_execute(agent, LAX, "G" * 150, example_order["id"])
    async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 2}) as response:
        body = await response.json()
        assert (response.status, body["error"]) == (409, "wrong_state"), body
    assert "customer.name" in body["reason"] and "cancelled" in body["reason"], body
    assert await db_rows(agent, "SELECT status FROM orders") == [("open",)]
    assert len(printers["kitchen"].printed) == 1
