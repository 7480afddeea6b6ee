"""No legal order stalls the event loop: intake and printing of the largest order keep the loop answering; and the
printing path does no work twice that the next orders' intake would wait for."""

from __future__ import annotations

import asyncio
import copy
import time

import aiohttp
import pytest

from edge.app import Agent
from edge.orders.model import MAX_ITEMS, Order, parse_order
from edge.printing import jobs
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import eventually, job_rows, post

_TICK_S = 0.002
_MEASURE_ALL = False  # True: all runs, to see the numbers (-s)
_RUNS = 3  # a stall our code causes repeats in every run; a neighbour taking the CPU for a moment does not


def largest_order(seq: int) -> dict:
    """MAX_ITEMS items, each with a modifier and a note, on one kitchen ticket and a receipt, totals that add up."""
    order = make_order(seq, print_receipt=True)
    pizza = order["items"][0]
    order["items"] = []
    for n in range(MAX_ITEMS):
        item = copy.deepcopy(pizza)
        item["sku"], item["name"] = f"P-{n}", f"Pizza Nummer {n} mit Käse, Basilikum und Öl"
        order["items"].append(item)
    total = f"{MAX_ITEMS * 2 * 10.50:.2f}"
    order["totals"] = {"subtotal": total, "discount": "0.00", "total": total, "currency": "EUR", "tax": []}
    return order


async def _max_lag_while(work: asyncio.Future[None]) -> float:
    """The longest the loop was late for a 2 ms timer while ``work`` ran."""
    worst = 0.0
    while not work.done():
        started = time.perf_counter()
        await asyncio.sleep(_TICK_S)
        worst = max(worst, time.perf_counter() - started - _TICK_S)
    await work
    return worst


def render_s(agent: Agent, order: dict) -> float:
    """How long rendering the order's kitchen ticket takes here and now: how long the loop would stall rendering it."""
    started = time.perf_counter()
    agent.printing.renderer().ticket(parse_order(order), "kitchen", width=48, language="de")
    return time.perf_counter() - started


async def test_the_largest_order_never_stalls_the_loop_more_than_20_ms(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """An order of 500 items is taken (201), rendered and printed (ticket and receipt) while the loop is never more
    than 20 ms late, or two thirds of the ticket's render time measured here and now if that is more: a render on the
    loop would stall it for the whole of it, while a render in a thread costs the loop only its turns at the GIL.
    Those turns, measured alone on this machine with a render of 44 ms: 7-25 ms late, at the start of stop 65 as at
    its end; a third of the render time (the bound until then) failed a clean-clone CI run at 22.2 ms."""
    bound = max(0.020, min(render_s(agent, largest_order(99)) for _ in range(2)) * 2 / 3)
    lags = []
    for run in range(_RUNS):
        order = largest_order(run)

        async def push_and_print(seq: int = run, order: dict = order) -> None:
            assert (await post(api, order))[0] == 201
            await printers["kitchen"].wait_for_printed(seq + 1, timeout=20)
            await printers["front"].wait_for_printed(seq + 1, timeout=20)

        lags.append(await _max_lag_while(asyncio.ensure_future(push_and_print())))
        if lags[-1] < bound and not _MEASURE_ALL:
            break
    await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows))
    print(f"loop late by at most {[round(lag * 1000, 1) for lag in lags]} ms (bound {bound * 1000:.1f} ms)")
    assert min(lags) < bound, f"loop late by {[round(lag * 1000, 1) for lag in lags]} ms (bound {bound * 1000:.1f} ms)"


async def test_an_order_s_ticket_and_receipt_read_its_stored_json_once_between_them(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An order printed as a kitchen ticket and a receipt: both print, and its stored JSON is read into an order once
    for the two renders, not once each. Before, each job read it again (~0.2 ms of CPU each here, a third of a small
    ticket's render), on the CPU the next orders' intake shares (the perf82 profile of bench.py storage)."""
    reads: list[str] = []
    parse = jobs.parse_order

    def counted(data: dict, *, stored: bool = False) -> Order:
        reads.append(data["id"])
        return parse(data, stored=stored)

    monkeypatch.setattr(jobs, "parse_order", counted)
    assert (await post(api, example_order))[0] == 201
    ticket = decode((await printers["kitchen"].wait_for_printed(1))[0]).text
    receipt = decode((await printers["front"].wait_for_printed(1))[0]).text
    assert example_order["number"] in ticket and example_order["number"] in receipt
    assert reads == [example_order["id"]]
