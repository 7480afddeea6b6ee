"""Storing and printing recovered orders never waits for the events endpoint; reporting them catches up later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.config import Settings
from edge.events import JobPrinted, RecoveryCompleted, RecoveryFailed
from edge.sim.central import CentralSim
from tests.helpers import db_rows
from tests.sync.conftest import Agents

MISSED = 200


async def test_recovered_orders_print_while_the_events_endpoint_answers_503(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The events endpoint answers every call 503 with Retry-After: 2. 200 missed orders are still stored and printed
    within seconds, the run completes (cursor stored, no failure) with their events waiting in the outbox; once the
    endpoint answers again every event arrives, once."""
    orders = central.create_orders(MISSED, prefix="r503")
    central.fail_next(100_000, 503, retry_after=2, path="events")
    agent, events = await agents.start(sync_settings(page_size=100, batch_size=50, max_attempts=6))
    db = agent.settings.agent.db_path
    [completed] = await events.wait(RecoveryCompleted, timeout=8)
    assert completed.counts["stored"] == MISSED and not events.of(RecoveryFailed)
    [(cursor,)] = await db_rows(db, "SELECT value FROM meta WHERE key = 'central_cursor'")
    assert cursor != ""
    jobs = (await db_rows(db, "SELECT COUNT(*) FROM print_jobs"))[0][0]
    await events.wait(JobPrinted, count=jobs, timeout=15)
    assert (await db_rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"))[0][0] > 0
    assert central.events == {}

    central.clear_faults()
    await central.wait_for(lambda: len(central.events_of("received")) == MISSED, timeout=20)
    await central.wait_for(lambda: len(central.events_of("printed")) == jobs, timeout=20)
    assert {e["order_id"] for e in central.events_of("received")} == {o["id"] for o in orders}
    await asyncio.sleep(0)
    assert central.duplicates == []
