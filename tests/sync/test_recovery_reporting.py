"""Storing and printing recovered orders never waits for the events endpoint; reporting them catches up later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import JobPrinted, RecoveryCompleted, RecoveryFailed
from edge.sim.central import CentralSim
from edge.sim.smtp import SmtpSink
from tests.helpers import db_rows, mail_to
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


async def test_a_run_failed_by_a_hiccup_of_central_that_the_planned_retry_heals_is_no_mail(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central's listing answers 500 for a while after the line is back (its backend warming up; health answers):
    the run fails, and the agent plans the next one after retry_max_s itself. The alarm waits for that run's
    outcome, which brings the orders: no mail at all. Before (the recovery78 probe, F1): a critical "Nachholen
    verpasster Bestellungen fehlgeschlagen … den Techniker informieren" at once, then its all-clear."""
    missed = {order["id"] for order in central.create_orders(2, prefix="hic")}
    central.fail_next(6, 500, path="orders")  # every try of one run's first listing call
    agent, events = await agents.start(sync_settings(sections=mail_to(sink)))
    await events.wait(RecoveryFailed, timeout=15)
    await events.wait(RecoveryCompleted, timeout=15)
    assert {order_id for (order_id,) in await db_rows(agent, "SELECT id FROM orders")} == missed
    await asyncio.sleep(1.5)  # alert checks every 0.2 s, the group's interval: a mail would be out
    assert [str(m["Subject"]) for m in sink.messages] == []


async def test_a_central_that_keeps_failing_the_runs_is_mailed_once_its_retries_have_had_their_minutes(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """The other side: runs that keep failing are mailed once the failures have gone on for the five minutes the
    alarm waits, not held for as long as retries are planned."""
    clock = SteppedClock()
    central.create_orders(1, prefix="bad")
    central.fail_next(10_000, 500, path="orders")
    _, events = await agents.start(sync_settings(sections=mail_to(sink)), clock=clock)
    await events.wait(RecoveryFailed, count=2, timeout=15)
    await asyncio.sleep(0.5)
    assert sink.messages == []  # young failures, a retry planned: waited for
    clock.advance(300)
    [mail] = await sink.wait_for(1, timeout=30)
    assert "Nachholen" in str(mail["Subject"]), mail["Subject"]
    central.clear_faults()
