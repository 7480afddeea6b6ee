"""The spool against the simulated network printer: offline, paper out, dropped connections, crashes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import Settings
from edge.events import PrinterStatusChanged
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_execute, eventually, job_rows, orders, post, status_reads, wait_until


async def test_offline_printer_keeps_jobs_then_prints_all_in_order(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """While the printer is off, jobs wait without spending attempts; when it is back, all print, oldest first."""
    events: list[PrinterStatusChanged] = []
    agent.bus.subscribe(events.append, PrinterStatusChanged)
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    batch = orders(example_order, 10)
    for order in batch:
        assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    await asyncio.sleep(0.6)
    assert kitchen.printed == []
    assert {(state, attempts) for state, attempts, _ in await job_rows(agent)} == {("queued", 0)}

    kitchen.set_offline(False)
    printed = await kitchen.wait_for_printed(10, timeout=15)
    numbers = [decode(p).text for p in printed]
    assert [next(n for n in (f"N-{i:03d}" for i in range(10)) if n in text) for text in numbers] == [
        o["number"] for o in batch
    ]
    await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows))
    transitions = [(e.old, e.new) for e in events]
    assert transitions[0][1] == "offline" and transitions.count(transitions[0]) == 1  # published once, not per probe
    assert any(old == "offline" and new != "offline" for old, new in transitions)


async def test_dropped_connection_reprints_marked_copy(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The printer hangs up mid-job: the job counts one attempt and comes out again with KOPIE / COPY."""
    kitchen = printers["kitchen"]
    kitchen.drop_after = 40
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    printed = await kitchen.wait_for_printed(2, timeout=10)
    assert len(printed[0]) <= 40  # what got out before the drop
    assert "KOPIE / COPY" in decode(printed[1]).text
    assert decode(printed[1]).qr_codes == ["edge:v1:ord_7f3a9c21:kitchen"]
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")
    assert await job_rows(agent) == [("printed", 1, 1)]


async def test_printer_that_keeps_dropping_sends_job_dead(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A reachable printer that fails every attempt: after max_attempts the job is dead, with its last error."""
    agent = await make_agent(spool={"max_attempts": 3})
    kitchen = printers["kitchen"]
    example_order["print_receipt"] = False
    kitchen.drop_after = 10
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await job_rows(agent))[0][0] != "dead":
            assert loop.time() < deadline
            if kitchen.drop_after is None:
                kitchen.drop_after = 10  # one-shot in the simulator: re-arm until the job gives up
            await asyncio.sleep(0.01)
        state, attempts, last_error = (await job_rows(agent, "SELECT state, attempts, last_error FROM print_jobs"))[0]
        assert (state, attempts) == ("dead", 3)
        assert "kitchen" in last_error
        async with api.get("/api/v1/jobs", params={"state": "dead"}) as response:
            dead = (await response.json())["jobs"]
        assert [(j["order_id"], j["order_number"]) for j in dead] == [("ord_7f3a9c21", "A-1042")]
        async with api.post(f"/api/v1/jobs/{dead[0]['id']}/retry") as response:
            assert response.status == 200
        await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")


async def test_paper_out_pauses_without_burning_attempts(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Paper out: nothing is sent, no attempt is counted; paper back: the ticket prints within 2 s."""
    kitchen = printers["kitchen"]
    kitchen.paper_out = True
    example_order["print_receipt"] = False
    await post(api, example_order)
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out")
    await status_reads(kitchen, 2)  # probed while paused
    assert await job_rows(agent) == [("queued", 0, 0)]
    kitchen.paper_out = False
    loop = asyncio.get_running_loop()
    start = loop.time()
    await kitchen.wait_for_printed(1, timeout=5)
    assert loop.time() - start < 2.0
    assert "KOPIE" not in decode(kitchen.printed[0]).text


async def test_job_caught_printing_by_a_crash_reprints_as_copy(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    example_order: dict,
    printers: dict[str, SimPrinter],
) -> None:
    """A job left 'printing' (the agent died mid-job) is printed again at start, marked COPY; the start-up log names
    it."""
    settings = make_settings()
    printers["kitchen"].set_offline(True)
    first = await make_agent(settings)
    example_order["print_receipt"] = False
    async with api_client(first) as api:
        assert (await post(api, example_order))[0] == 201
    await first.stop()
    # as if the power went while bytes were going out
    await db_execute(settings.agent.db_path, "UPDATE print_jobs SET state = 'printing'")
    printers["kitchen"].set_offline(False)
    with capture_logs() as logs:
        second = await make_agent(settings)
    assert [e["job_ids"] for e in logs if e["event"] == "jobs_interrupted_by_crash"] == [[1]]
    printed = await printers["kitchen"].wait_for_printed(1)
    assert "KOPIE / COPY" in decode(printed[0]).text
    await eventually(lambda: job_rows(second), lambda rows: rows == [("printed", 0, 1)])


async def test_slow_printer_does_not_hold_up_the_other(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """One spool per printer: a crawling kitchen printer does not delay the receipt printer."""
    printers["kitchen"].bytes_per_s = 300
    await post(api, example_order)
    await printers["front"].wait_for_printed(1, timeout=5)
    assert printers["kitchen"].printed == []
    await printers["kitchen"].wait_for_printed(1, timeout=20)


async def test_a_forced_stop_leaves_the_ticket_going_out_printing_for_a_copy(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A second SIGTERM while a ticket goes out to a slow printer (50 bytes/s): the agent stops at once instead of
    waiting for the job's outcome, and the job stays 'printing', so the next start prints it again marked COPY."""
    printers["kitchen"].bytes_per_s = 50
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printing", 0, 0)], what="the ticket going out")
    stopping = asyncio.create_task(agent.stop())
    agent.force_stop()
    await asyncio.wait_for(stopping, timeout=5)
    assert await job_rows(agent) == [("printing", 0, 0)]
    printers["kitchen"].bytes_per_s = None  # the driver's thread may finish sending what it started
