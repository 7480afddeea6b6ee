"""A box that prints no receipts by design (the till prints them): receipts.enabled = false. No receipt job is made
whatever an order asks, and receipts an earlier run held for want of a receipt printer are discarded at the start, so
retention purges their orders (probe days F2: before, each was held `no_printer` for ever and nothing was purged)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import parse_settings
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, config_dict, days_pass, db_rows, eventually, post, wait_until


def kitchen_only(tmp_path: Path, printers: dict[str, SimPrinter], **receipts: Any) -> dict[str, Any]:
    """A kitchen-only box: no receipts.printer; ``receipts``: the rest of [receipts]."""
    raw = config_dict(tmp_path / "data", printers, retention={"every_s": 0.2})
    raw["receipts"] = dict(receipts)
    return raw


async def test_a_box_that_prints_no_receipts_makes_no_receipt_job_whatever_the_order_asks(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Orders say print_receipt true, or turn it on in a later revision: the tickets print, no receipt job is made,
    nothing is held. That the box prints none is logged once at the start, not for each order."""
    with capture_logs() as logs:
        agent = await make_agent(parse_settings(kitchen_only(tmp_path, printers, enabled=False), source="test"))
        first, second = make_order(1, print_receipt=True), make_order(2, print_receipt=False)
        turned_on = {**copy.deepcopy(second), "revision": 2, "print_receipt": True}
        async with api_client(agent) as api:
            for order in (first, second, turned_on):
                status, body = await post(api, order)
                assert status in (200, 201), body
        await printers["kitchen"].wait_for_printed(2)
        await eventually(
            lambda: db_rows(agent, "SELECT order_id, kind, state FROM print_jobs ORDER BY id"),
            lambda rows: rows == [(first["id"], "ticket", "printed"), (second["id"], "ticket", "printed")],
            what="tickets only, printed",
        )
    assert printers["front"].printed == []
    assert [e["event"] for e in logs].count("receipts_disabled") == 1


async def test_receipts_held_for_no_printer_are_discarded_once_the_box_prints_none_and_their_orders_are_purged(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A kitchen-only box without the setting holds each receipt its orders ask for (no_printer: a receipt printer
    may be missing by mistake). The setting is added and the agent started again: those receipts are discarded, the
    count logged, and 31 days on retention purges the orders. Before, they were held for ever and never purged."""
    clock = SteppedClock()
    raw = kitchen_only(tmp_path, printers)
    orders = [make_order(n, print_receipt=True) for n in (1, 2)]
    before = await make_agent(parse_settings(copy.deepcopy(raw), source="test"), clock=clock)
    async with api_client(before) as api:
        for order in orders:
            assert (await post(api, order))[0] == 201
    await printers["kitchen"].wait_for_printed(2)
    held = await eventually(
        lambda: db_rows(
            before, "SELECT order_id FROM print_jobs WHERE kind = 'receipt' AND held_reason = ?", "no_printer"
        ),
        lambda rows: len(rows) == 2,
        what="both receipts held for want of a printer",
    )
    assert {r[0] for r in held} == {o["id"] for o in orders}
    await before.stop()

    raw["receipts"]["enabled"] = False
    with capture_logs() as logs:
        after = await make_agent(parse_settings(raw, source="test"), clock=clock)
        await eventually(
            lambda: db_rows(after, "SELECT state FROM print_jobs WHERE kind = 'receipt'"),
            lambda rows: rows == [("discarded",), ("discarded",)],
            what="the held receipts discarded at the start",
        )
        # Logged once the discard's commit has returned, a moment after the rows read discarded.
        await wait_until(lambda: any(e["event"] == "held_receipts_discarded" for e in logs), what="the count logged")
    assert [e["count"] for e in logs if e["event"] == "held_receipts_discarded"] == [2]
    later = await days_pass(after, clock, 31)
    await eventually(
        lambda: db_rows(after, "SELECT id FROM orders"), lambda rows: rows == [(later,)], what="the old orders purged"
    )
    assert await db_rows(after, "SELECT COUNT(*) FROM print_jobs WHERE state = 'held'") == [(0,)]


def test_config_check_of_a_kitchen_only_box_says_how_to_say_no_receipts_here(tmp_path: Path) -> None:
    """A box with no receipts.printer: `edge config check` says that a receipt an order asks for would be held, and
    the setting that says the box prints none; with it set, it says nothing of receipts. Before: only the start's log
    said it."""
    from tests.config.box import write_box_config
    from tests.helpers import edge_blocking

    done = edge_blocking("config", "check", "--config", str(write_box_config(tmp_path)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "set receipts.enabled = false" in done.stdout, done.stdout
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    done = edge_blocking(
        "config", "check", "--config", str(write_box_config(quiet, receipts={"enabled": False})), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "receipts" not in done.stdout, done.stdout


async def test_an_order_whose_receipt_printed_before_the_box_stopped_printing_receipts_reprints_its_tickets(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The receipt printer leaves and the box is set to print none; the order's Reprint (the page's, `edge reprint`)
    of an order whose receipt printed before gives the kitchen its COPY. Before (newfeat probe F1): 409 "no printer
    serves receipts now; add one to the config", which the config check refuses while receipts are off."""
    raw = config_dict(tmp_path / "data", printers)
    order = make_order(1, print_receipt=True)
    before = await make_agent(parse_settings(copy.deepcopy(raw), source="test"))
    async with api_client(before) as api:
        assert (await post(api, order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await printers["front"].wait_for_printed(1)
    await before.stop()

    raw["receipts"] = {"enabled": False}
    after = await make_agent(parse_settings(raw, source="test"))
    async with api_client(after) as api:
        async with api.post(f"/api/v1/orders/{order['id']}/reprint") as response:
            assert response.status == 201, await response.text()
    copies = await printers["kitchen"].wait_for_printed(2)
    assert "KOPIE" in decode(copies[1]).text
    assert len(printers["front"].printed) == 1
