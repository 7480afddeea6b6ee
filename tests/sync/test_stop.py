"""Stopping the agent: the job in flight records its outcome even while the outbox is cancelled mid-write."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest

from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_rows, eventually
from tests.sync.conftest import Agents


async def test_stop_while_the_outbox_waits_for_the_writer_keeps_the_printed_mark(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """A ticket is printing slowly while the outbox waits for BEGIN IMMEDIATE (another process holds the write lock,
    as a slow disk or a backup tool might); the agent is stopped meanwhile. The ticket still ends 'printed', and
    the next start prints nothing again (no KOPIE / COPY)."""
    settings = sync_settings()
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    db = agent.settings.agent.db_path
    kitchen = printers["kitchen"]
    kitchen.bytes_per_s = 1500  # a ticket takes about a second
    central.latency_s = 0.3  # the outbox's POST is in flight when the lock is taken
    [order] = central.create_orders(1, prefix="stop")
    order["print_receipt"] = False
    async with api_client(agent) as session, session.post("/api/v1/orders", json=order) as response:
        assert response.status == 201
    await eventually(
        lambda: db_rows(db, "SELECT state FROM print_jobs"), lambda rows: rows == [("printing",)], timeout=5
    )
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")  # off the loop: it may wait for the agent's writer
        await asyncio.sleep(0.5)  # the outbox got its answer and now waits for BEGIN on the writer's thread
        stopping = asyncio.create_task(agents.stop(agent))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(other.execute, "COMMIT")
        await asyncio.wait_for(stopping, timeout=20)
    finally:
        other.close()
    assert await db_rows(db, "SELECT state, copy FROM print_jobs") == [("printed", 0)]
    assert len(kitchen.printed) == 1

    kitchen.bytes_per_s = None
    await agents.start(settings)
    await asyncio.sleep(1.0)  # room for a wrong reprint
    assert len(kitchen.printed) == 1 and "KOPIE / COPY" not in decode(kitchen.printed[0]).text


@pytest.mark.parametrize("turns", range(3))
@pytest.mark.parametrize("part", ["outbox", "monitor"])
async def test_a_central_link_loop_stops_when_the_stop_meets_a_wake(
    part: str, turns: int, central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The outbox sender or the link monitor is woken (a ticket printed, a call unanswered) a few turns of the event
    loop before it is stopped. On Python 3.11 ``asyncio.wait_for`` returns instead of raising when the cancel meets
    the event it waits for, and the loop went on: CI at e6d8c48 hung 300 s in the agent's stop after a recovery test,
    while its last tickets woke the outbox. Now the stop ends (before: turns 0 and 1 hung, for both)."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    assert agent.sync is not None
    loop = getattr(agent.sync, part)
    await asyncio.sleep(0.2)  # both asleep: the outbox has sent the run's events, the monitor its first probe
    loop._wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.wait_for(loop.stop(), timeout=5)
