"""The stale-hold age of a ticket born of a change (docs/printing.md, "Old orders"): as old as the order was when the
change that made it arrived, plus its own wait since; a later revision that rewrites it in place changes neither."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge.app import Agent
from edge.events import JobHeld
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, asap, eventually, job_rows, post, ticket_variant, wait_until
from tests.printing.conftest import BoxClock

STALE_S = 600  # the kitchen's stale age ([staleness] kitchen = 10)
CHANGE_AT = 240  # the change bringing the kitchen its first items arrives 4 minutes after the order
REWRITE_AT = 480  # a later change rewrites that waiting ticket in place


def revised(order: dict[str, Any], revision: int, *, pizzas: int | None = None, food: bool = True) -> dict[str, Any]:
    """Revision ``revision``: ``pizzas`` Margherita; without ``food``, the drinks only (no kitchen item)."""
    out = copy.deepcopy(order)
    out["revision"], out["print_receipt"] = revision, False
    if not food:
        out["items"] = [i for i in out["items"] if not i["requires_production"]]
    if pizzas is not None:
        out["items"][0]["qty"] = pizzas
    return out


@pytest.mark.parametrize(
    ("rewritten", "back_at", "state"),
    [(False, 500, "printed"), (True, 500, "printed"), (True, 620, "held")],
    ids=["waiting", "rewritten-in-place", "rewritten-in-place-and-really-stale"],
)
async def test_a_stations_first_ticket_rewritten_in_place_keeps_the_age_its_change_gave_it(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    box_clock: BoxClock,
    example_order: dict[str, Any],
    rewritten: bool,
    back_at: int,
    state: str,
) -> None:
    """Revision 1 (drinks only: no kitchen ticket) at t=0; the kitchen printer goes off; revision 2 brings the pizzas
    at t=240 s (the kitchen's first ticket, ÄNDERUNG, waits); [rewritten] revision 3 (3 pizzas) at t=480 s rewrites
    that ticket in place; the printer is back at ``back_at``. The ticket is as old as the order: 500 s is under the
    kitchen's stale age of 600 s, so it prints, showing the latest revision; at 620 s it is held, aged 620 s. Before,
    a rewrite counted the wait twice: the age ran from revision 3's arrival plus the wait since revision 2 (500 s
    became 740 s, held)."""
    held: list[JobHeld] = []
    asap(example_order)
    agent = await make_agent(clock=box_clock, staleness={"kitchen": STALE_S / 60})
    agent.bus.subscribe(held.append, JobHeld)
    kitchen = printers["kitchen"]
    async with api_client(agent) as api:
        assert (await post(api, revised(example_order, 1, food=False)))[0] == 201
        kitchen.set_offline(True)
        box_clock.advance(CHANGE_AT)
        status, body = await post(api, revised(example_order, 2))
        assert (status, body["status"]) == (200, "updated"), body
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline", what="the spool saw it off")
        if rewritten:
            box_clock.advance(REWRITE_AT - CHANGE_AT)
            status, body = await post(api, revised(example_order, 3, pizzas=3))
            assert (status, body["status"]) == (200, "updated"), body
        box_clock.advance(back_at - (REWRITE_AT if rewritten else CHANGE_AT))
        kitchen.set_offline(False)
        revision = 3 if rewritten else 2
        rows = await eventually(
            lambda: job_rows(agent, "SELECT state, revision, variant FROM print_jobs ORDER BY id"),
            lambda rows: rows and rows[0][0] in ("printed", "held"),
            timeout=6,
            what="the kitchen's ticket printed or held",
        )
    assert rows == [(state, revision, "added")], (rows, [round(e.age_s) for e in held])
    if state == "printed":
        [ticket] = [decode(data).text for data in kitchen.printed]
        assert ticket_variant(ticket) == ("added", revision), ticket
        assert f"{3 if rewritten else 2}x Pizza Margherita" in ticket, ticket
        assert held == []
    else:
        assert kitchen.printed == []
        await wait_until(lambda: held, what="the manager told of the hold")
        [event] = held
        assert back_at <= event.age_s < back_at + 60, event  # the order's age, counted once


@pytest.mark.parametrize(("back_at", "state"), [(280, "printed"), (320, "held")])
async def test_a_receipt_a_change_asks_for_is_as_old_as_the_order_at_that_change(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    box_clock: BoxClock,
    example_order: dict[str, Any],
    back_at: int,
    state: str,
) -> None:
    """printing.stale_receipt_min = 5 (300 s). Revision 1 has no receipt; revision 2 asks for one at t=240 s while
    the front printer is off; it is back at ``back_at``. The receipt is as old as the order (240 s at the change, plus
    its wait): printed at 280 s, held at 320 s. Before, it was aged from the order's first arrival plus its wait only
    (80 s at 320 s): printed."""
    asap(example_order)
    agent = await make_agent(clock=box_clock, printing={"stale_receipt_min": 5})
    front = printers["front"]
    async with api_client(agent) as api:
        assert (await post(api, revised(example_order, 1)))[0] == 201
        front.set_offline(True)
        box_clock.advance(CHANGE_AT)
        status, body = await post(api, revised(example_order, 2) | {"print_receipt": True})
        assert (status, body["status"]) == (200, "updated"), body
        await wait_until(lambda: agent.spoolers["front"].state.value == "offline", what="the spool saw it off")
        box_clock.advance(back_at - CHANGE_AT)
        front.set_offline(False)
        rows = await eventually(
            lambda: job_rows(agent, "SELECT state FROM print_jobs WHERE kind = 'receipt'"),
            lambda rows: rows and rows[0][0] in ("printed", "held"),
            timeout=6,
            what="the receipt printed or held",
        )
    assert rows == [(state,)]
