"""What the status events cost the SD card at a store's pace, and what a power cut does to their delivered marks: the
agent as its own process, its fsyncs counted by scripts/slowfsync.c (or its files put back by scripts/powercut.c),
against the central simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest

from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.powercut import PowerCut
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from tests.helpers import COPY_MARK, FAST, FsyncCounter, agent_process, api_client, post, toml, wait_until
from tests.sync.conftest import STORE

ORDERS = 6


def linked_agent(
    tmp_path: Path, printers: dict[str, SimPrinter], central: CentralSim, env: dict[str, str] | None = None
) -> AgentProcess:
    """The agent as its own process, linked to ``central`` with quick probes and retries."""
    link = toml({"central": {**FAST, "url": central.url}})
    return agent_process(tmp_path, printers, env=env, store_id=STORE, extra=f"\n{link}")


async def start_settled(port: int) -> None:
    """Waits for the recovery run every start makes (its own commits are not the orders')."""

    async def done() -> bool:
        async with api_client(port) as api, api.get("/api/v1/recovery/runs") as response:
            runs = (await response.json())["runs"]
            return bool(runs) and runs[0]["state"] == "completed"

    await wait_until(done, 10, "the start's recovery run completed")


async def one_at_a_time(port: int, central: CentralSim, orders: list[dict[str, object]]) -> None:
    """Each order pushed once the one before is printed and central has both its events: a store's pace, where
    orders come seconds apart and each event is delivered on its own."""
    async with api_client(port) as api:
        for order in orders:
            central.add_orders([order])
            assert (await post(api, order))[0] == 201
            await wait_until(lambda o=order: len(events_of(central.events, o)) == 2, 10, f"{order['id']}'s events")


def events_of(keys: Iterable[str], order: dict[str, object]) -> list[str]:
    """The keys of an order's events (``<order id>:<event>:<suffix>@<box>``)."""
    return [key for key in keys if key.startswith(f"{order['id']}:")]


async def test_at_a_stores_pace_an_order_with_its_events_costs_three_fsyncs(
    tmp_path: Path, printers: dict[str, SimPrinter], central: CentralSim, fsyncs: FsyncCounter
) -> None:
    """One ticket an order: the order stored, the ticket claimed, the ticket printed: three fsyncs, each a promise
    (the 201, no unmarked second print). Central's two events (received, printed), each delivered on its own at this
    pace, add none: a delivered mark that a power cut takes back only sends the event again (the next test). Before:
    five fsyncs an order, the delivered marks two of them."""
    agent = linked_agent(tmp_path, printers, central, fsyncs.env)
    port = agent.port
    orders = [make_order(n, prefix="pace", print_receipt=False) for n in range(ORDERS)]
    await agent.start()
    try:
        await start_settled(port)
        before = fsyncs.count()
        await one_at_a_time(port, central, orders)
        synced = fsyncs.count() - before
    finally:
        await agent.close()
    assert len(printers["kitchen"].printed) == ORDERS
    # 3 an order; 2 more if SQLite checkpoints its log meanwhile (it syncs the log and the database file)
    assert ORDERS <= synced <= 3 * ORDERS + 2, f"{synced} fsyncs for {ORDERS} orders"  # at least: the shim counted


@pytest.mark.crash
async def test_a_power_cut_after_the_events_went_sends_them_again_and_central_takes_them_as_duplicates(
    tmp_path: Path, printers: dict[str, SimPrinter], central: CentralSim, powercut_shim: Path
) -> None:
    """The power goes after the last order's events reached central, before any later fsync: their delivered marks
    are lost with it. At the next start the events go again with the same keys; central takes them as duplicates,
    nothing is lost, and no ticket prints again (its printed mark was durable before its event was written)."""
    power = PowerCut(powercut_shim, tmp_path / "data", tmp_path / "durable")
    agent = linked_agent(tmp_path, printers, central, power.env())
    port = agent.port
    await agent.start()
    # Taken after the box's first start: one from before it would print marked COPY (a new box's may-have-printed mark)
    orders = [make_order(n, prefix="cut", print_receipt=False) for n in range(ORDERS)]
    try:
        await one_at_a_time(port, central, orders)
        await agent.kill()
        await asyncio.to_thread(power.cut)
        agent = AgentProcess(agent.config, port, tmp_path / "agent.log")
        await agent.start()
        await wait_until(lambda: events_of(central.duplicates, orders[-1]), 10, "the last order's events sent again")
    finally:
        await agent.close()
    assert all(len(events_of(central.events, o)) == 2 for o in orders) and len(central.events) == 2 * ORDERS
    assert set(central.duplicates) <= set(central.events)
    tickets = [decode(data).text for data in printers["kitchen"].printed]
    assert len(tickets) == ORDERS and not any(COPY_MARK in text for text in tickets)
