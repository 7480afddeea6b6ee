"""A network printer that loses power in the middle of a ticket (a breaker, a pulled plug): a device without power
sends nothing, neither a reset nor a close, so the connection only goes silent (the simulated printer's power_off,
edge/sim/printer.py). The ticket is never taken for printed: when the printer is back it prints again whole, as COPY."""

from __future__ import annotations

import aiohttp

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import eventually, job_rows, post, wait_until


async def test_a_printer_that_loses_power_mid_ticket_prints_it_again_whole_as_copy_when_back(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer has answered status before; its plug is pulled 200 bytes into the next ticket. The agent
    hears nothing after the job (no reply to GS r, none to DLE EOT): the job is not marked printed, the printer is
    offline, and once it is powered again the whole ticket comes out, marked COPY (before: silence after a job on a
    network printer read as "unknown", so the ticket was marked printed and never came out whole)."""
    kitchen = printers["kitchen"]
    assert (await post(api, make_order(0)))[0] == 201
    await kitchen.wait_for_printed(1)
    kitchen.power_off_after = 200
    order = make_order(1)
    assert (await post(api, order))[0] == 201
    await wait_until(lambda: not kitchen.powered, what="the plug pulled mid-ticket")
    # It waits as long as the slowest printer would take to print the ticket (about 10 s) before it says offline.
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline", 30, "the printer taken for offline")
    # What the staff read: switched off (or stopped in the ticket), not the network or the till.
    detail = agent.spoolers["kitchen"].state_detail
    assert "switched off" in detail and "till" not in detail, detail
    kitchen.power_on()
    await kitchen.wait_for_printed(3, timeout=15)
    assert len(kitchen.printed[1]) == 200  # the head of the ticket, cut off by the power
    again = decode(kitchen.printed[2]).text
    assert order["number"] in again and "KOPIE" in again
    await eventually(
        lambda: job_rows(agent, "SELECT state, copy FROM print_jobs WHERE printer = 'kitchen' ORDER BY id"),
        lambda rows: rows == [("printed", 0), ("printed", 1)],
        what="the first ticket printed, the second printed again as COPY",
    )
