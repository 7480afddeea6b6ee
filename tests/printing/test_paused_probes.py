"""A paused printer is probed on a timer, not once per new order for it."""

from __future__ import annotations

import asyncio

import aiohttp

from edge.app import Agent
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import post, status_reads, wait_until


async def test_orders_for_a_paused_printer_do_not_each_probe_it(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """Paper out at the kitchen printer: the spool probes it with backoff (capped at 1 s for paper trouble). A rush of
    20 orders for it meanwhile must not each wake the spool into one more status read (DLE EOT 1, 2 and 4): about
    one probe a second comes while the orders arrive, as before them, and every order prints once paper is back."""
    kitchen = printers["kitchen"]
    kitchen.paper_out = True
    assert (await post(api, make_order(0, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out")
    await status_reads(kitchen, 3)  # the backoff has reached its cap: 0.25 + 0.5 + 1 s
    before = kitchen.status_queries
    started = asyncio.get_running_loop().time()
    for n in range(1, 21):
        assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await asyncio.sleep(0.05)
    elapsed = asyncio.get_running_loop().time() - started
    probes = (kitchen.status_queries - before) // 3
    assert probes <= elapsed / 1.0 + 2, f"{probes} probes in {elapsed:.2f} s for 20 orders"
    kitchen.paper_out = False
    printed = await kitchen.wait_for_printed(21, timeout=10)
    assert len(printed) == 21
