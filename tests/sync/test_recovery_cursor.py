"""Cursors at page boundaries: ties, empty pages with more to come, and a backend whose cursor does not advance."""

from __future__ import annotations

from collections.abc import Callable

import pytest

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


@pytest.mark.parametrize("dialect", ["null_last_cursor", "empty_cursor_ends"])
async def test_a_last_page_whose_next_cursor_is_null_ends_the_listing_and_the_next_run_asks_from_the_same_place(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, dialect: str
) -> None:
    """Many APIs say "no more" in their own way: a null cursor on the last page (has_more false; the contract says a
    string), or no has_more at all and an empty cursor once nothing more comes. 7 orders in pages of 3 are all stored,
    and the run keeps the cursor it sent for the last page, so the next run asks from there: that page's order comes
    again, present, neither stored nor printed twice, and what came since is stored. Before, every run failed on a
    null cursor (probe_central); before stop 62 a page without has_more was taken for the last, the run "completed"
    with 3 of the 7 and said nothing (the central probe, s04)."""
    setattr(central, dialect, True)
    central.add_orders([make_order(n, prefix="last") for n in range(7)])
    agent, events = await agents.start(sync_settings(page_size=3))
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 7
    assert agent.sync is not None
    central.add_orders([make_order(9, prefix="last")])
    await agent.sync.recovery.trigger(RunTrigger.MANUAL)
    [_, again] = await events.wait(RecoveryCompleted, count=2)
    assert again.counts["stored"] == 1 and again.counts["present"] == 1
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(8, 8)]


@pytest.mark.parametrize("has_more", [True, False], ids=["has_more", "no_has_more"])
async def test_a_cursor_that_does_not_advance_fails_the_run_with_an_alert_naming_it(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink, has_more: bool
) -> None:
    """A backend whose cursor is the last change's second (inclusive, which the contract forbids), five orders in that
    second, pages of 2: the second page answers has_more with the cursor just sent. The run fails at once (a few
    requests, not hundreds), stores nothing, keeps the confirmed cursor, and the alert mail names the cursor. Also
    where the backend leaves has_more out (it pages until the cursor comes back empty): a full page under the cursor
    just sent is not the end. Before stop 68 it was taken for one: the run "completed" with 2 of the 5, at every run,
    and nobody was told (the central probe, finding 1)."""
    central.cursor_mode = "timestamp_inclusive"
    central.empty_cursor_ends = not has_more
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


async def test_has_more_as_a_string_fails_the_run_naming_it_and_it_is_tried_again_soon(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A page that says "has_more": "false" (a string: true for Python, false for the backend's author) fails the run
    with an error naming has_more and its value, and the run is tried again soon, which gets the right answer and
    stores the orders. Before stop 62 (the central probe, s04): "false" was taken as true, the agent asked with the
    same cursor again and failed on a "cursor that does not advance", waiting for the schedule."""
    central.add_orders([make_order(n, prefix="strhm") for n in range(3)])
    central.fail_next(1, 200, body={"orders": [], "next_cursor": "c1", "has_more": "false"}, path="orders")
    _, events = await agents.start(sync_settings())
    [failed] = await events.wait(RecoveryFailed)
    assert "has_more is 'false'" in failed.error, failed.error
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 3


async def test_a_listing_whose_has_more_never_ends_fails_the_run_with_an_alert_instead_of_paging_for_ever(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """A backend that answers every page empty, with has_more and a new cursor each time: the run listed for ever
    (four requests a second at the shipped rate limit, 320,000 a day from one store), completed nothing, and nobody
    was told (the central probe of stop 68, finding 2). Now a run that has been through 100,000 changes without one
    order fails naming it, keeps the confirmed cursor, and the manager is mailed."""
    central.endless_listing = True
    agent, events = await agents.start(sync_settings(page_size=1000, sections=mail_to(sink)))
    [failed] = await events.wait(RecoveryFailed, timeout=20)
    assert "100 pages" in failed.error and "has_more" in failed.error, failed.error
    listed = [r for r in central.requests if r[2].endswith("/orders")]
    assert len(listed) <= 101, f"{len(listed)} list requests"
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*) FROM meta WHERE key = 'central_cursor'") == [(0,)]
    [mail] = await sink.wait_for(1)
    assert "has_more" in mail.get_body(("plain",)).get_content()
