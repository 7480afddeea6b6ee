"""The backend restores a backup (its cursor is gone) after retention purged our copies: nothing prints again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import JobPrinted, RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, days_pass, db_rows, eventually
from tests.sync.conftest import Agents


async def test_orders_purged_by_retention_and_listed_again_after_a_backend_restore_print_nothing(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """Five orders recovered, printed and reported; 31 days later retention has purged them. The backend restores a
    backup, answers the stored cursor with 400, and the next run lists from the beginning: all five are present
    (the agent's record of seen ids), none is stored or printed again. Pushed again, one answers 200 duplicate, and
    with other content 409."""
    orders = central.create_orders(5, prefix="old")
    clock = SteppedClock()
    agent, events = await agents.start(sync_settings(sections={"retention": {"every_s": 0.2}}), clock=clock)
    db = agent.settings.agent.db_path
    [first] = await events.wait(RecoveryCompleted)
    assert first.counts["stored"] == 5
    jobs = (await db_rows(db, "SELECT COUNT(*) FROM print_jobs"))[0][0]
    await events.wait(JobPrinted, count=jobs)
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"), lambda rows: rows == [(0,)], 10
    )
    later = await days_pass(agent, clock, 31)
    await eventually(lambda: db_rows(db, "SELECT id FROM orders"), lambda rows: rows == [(later,)], timeout=10)
    await events.wait(JobPrinted, count=jobs + 1)  # the order of the day's ticket
    printed = len(printers["kitchen"].printed) + len(printers["front"].printed)
    central.restore_backup()
    async with api_client(agent) as api:
        async with api.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
        second = (await events.wait(RecoveryCompleted, count=2))[1]
        assert (second.counts["present"], second.counts["missing"], second.counts["stored"]) == (5, 0, 0)
        assert 400 in central.statuses()
        async with api.post("/api/v1/orders", json=orders[0]) as response:
            assert response.status == 200 and (await response.json())["status"] == "duplicate"
        async with api.post("/api/v1/orders", json=orders[1] | {"number": "X-1"}) as response:
            assert response.status == 409
    await asyncio.sleep(0.5)  # room for a wrong print
    assert len(printers["kitchen"].printed) + len(printers["front"].printed) == printed
    assert await db_rows(db, "SELECT id FROM orders") == [(later,)]
