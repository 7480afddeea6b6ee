"""Cursors at page boundaries: ties, empty pages with more to come, and a backend whose cursor does not advance."""

from __future__ import annotations

from collections.abc import Callable

from edge.config import Settings
from edge.events import RecoveryCompleted, RecoveryFailed
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.smtp import SmtpSink
from edge.states import RunTrigger
from tests.helpers import db_rows, mail_to
from tests.sync.conftest import Agents

SECOND = 1_800_000_000  # one change second shared by many orders


async def test_ties_and_empty_pages_at_page_boundaries_store_every_order_once(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """An order changed four times in one second, then five orders in that same second, pages of 2: the first pages
    hold only superseded versions and come back empty with has_more, and ties sit on both sides of every page
    boundary; one run still stores all six orders, each exactly once with one set of jobs."""
    changing = make_order(1, prefix="tie")
    for n in range(4):
        central.add_orders([changing | {"number": f"T-{n}"}], changed_at=SECOND)
    central.add_orders([make_order(n, prefix="tie") for n in range(2, 7)], changed_at=SECOND)
    agent, events = await agents.start(sync_settings(page_size=2))
    [completed] = await events.wait(RecoveryCompleted)
    db = agent.settings.agent.db_path
    assert completed.counts["stored"] == 6 and completed.counts["missing"] == 6
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(6, 6)]
    assert await db_rows(db, "SELECT number FROM orders WHERE id = 'tie_000001'") == [("T-3",)]  # the newest version
    assert (
        await db_rows(db, "SELECT COUNT(*) FROM print_jobs GROUP BY order_id, kind, station HAVING COUNT(*) > 1") == []
    )


async def test_a_last_page_whose_next_cursor_is_null_ends_the_listing_and_the_next_run_asks_from_the_same_place(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Many APIs say "no more" with a null cursor on the last page (has_more false); the contract says a string. The
    run stores the orders and keeps the cursor it sent for that page, so the next run asks from there and stores
    nothing twice. Before, every run failed on that page and its orders were never stored (probe_central)."""
    central.null_last_cursor = True
    central.add_orders([make_order(n, prefix="null") for n in range(5)])
    agent, events = await agents.start(sync_settings(page_size=2))
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 5
    assert agent.sync is not None
    central.add_orders([make_order(9, prefix="null")])
    await agent.sync.recovery.trigger(RunTrigger.MANUAL)
    [_, again] = await events.wait(RecoveryCompleted, count=2)
    assert again.counts["stored"] == 1
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(6, 6)]


async def test_a_cursor_that_does_not_advance_fails_the_run_with_an_alert_naming_it(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """A backend whose cursor is the last change's second (inclusive, which the contract forbids), five orders in that
    second, pages of 2: the second page answers has_more with the cursor just sent. The run fails at once (a few
    requests, not hundreds), stores nothing, keeps the confirmed cursor, and the alert mail names the cursor."""
    central.cursor_mode = "timestamp_inclusive"
    central.add_orders([make_order(n, prefix="loop") for n in range(1, 6)], changed_at=SECOND)
    agent, events = await agents.start(sync_settings(page_size=2, sections=mail_to(sink)))
    [failed] = await events.wait(RecoveryFailed, timeout=10)
    assert str(SECOND) in failed.error and failed.phase == "validation"
    listed = [r for r in central.requests if r[2].endswith("/orders")]
    assert len(listed) <= 3, f"{len(listed)} list requests"
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]
    assert await db_rows(db, "SELECT COUNT(*) FROM meta WHERE key = 'central_cursor'") == [(0,)]
    [mail] = await sink.wait_for(1)
    assert str(SECOND) in mail.get_body(("plain",)).get_content()
