"""A new box's first recovery: what central kept from before the box is history, by the longest a ticket may wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import due_at, make_order
from tests.helpers import db_rows, eventually
from tests.sync.conftest import Agents

DAY_S = 86_400.0


@pytest.mark.parametrize(
    ("staleness", "history", "stored"),
    [({"bar": 240}, 1, 1), ({"kitchen": 0}, 0, 2)],
    ids=["a-station-waits-4-hours", "a-station-never-holds"],
)
async def test_the_history_line_is_the_longest_a_ticket_may_wait_and_none_when_a_station_never_holds(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    staleness: dict[str, float],
    history: int,
    stored: int,
) -> None:
    """An order from 3 hours and one from 10 days before the box's first start. With a station whose tickets may
    wait 4 hours ([staleness]), the 3-hour-old order is still the box's work: stored, its jobs marked COPY (the old
    system may have printed it); the 10-day-old one is history. With a station that never holds a ticket (0),
    nothing is history: the operator wants every ticket printed, whatever its age. Before: the line was
    printing.stale_ticket_min (45 min) alone, and both orders were history in both cases."""
    now = datetime.now(UTC)
    central.add_orders(
        [make_order(1, created_at=now - timedelta(hours=3)), make_order(2, created_at=now - timedelta(days=10))]
    )
    agent, events = await agents.start(sync_settings(sections={"staleness": staleness}))
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["history"], completed.counts["stored"]) == (history, stored)
    copies = await db_rows(agent, "SELECT DISTINCT copy FROM print_jobs")
    assert copies == [(1,)]


@pytest.mark.parametrize(
    ("box_off_s", "set_by_ntp"),
    [(-30 * DAY_S, True), (-30 * DAY_S, False), (DAY_S, False)],
    ids=["a-month-behind-until-ntp", "a-month-behind-ntp-blocked", "a-day-ahead-ntp-blocked"],
)
async def test_a_new_boxs_first_start_is_taken_on_centrals_clock_when_the_box_clock_was_wrong(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, box_off_s: float, set_by_ntp: bool
) -> None:
    """A box without a battery (a Raspberry Pi) boots with the time it last saved; the agent's first start comes
    before NTP sets the clock, or NTP is blocked by the shop's firewall, and central is reached later. Central's
    orders are on its own clock: the line between history and the box's work is the first start on central's
    clock too (its answers' Date, carried on the monotonic clock). An order from 3 days before is history, one from
    10 minutes before a COPY. Before: the line was the box's wrong start time: behind, the 3-day-old order was the
    box's work (its ticket held, its receipt printed); ahead by a day, the order from 10 minutes before was history,
    never printed, and so was every order recovery brought back from the day after the start."""
    now = datetime.now(UTC)
    central.add_orders(
        [make_order(1, created_at=now - timedelta(days=3)), make_order(2, created_at=now - timedelta(minutes=10))]
    )
    await central.set_up(False)  # the shop's line is not up yet
    clock = SteppedClock(wall_offset=box_off_s)
    agent, events = await agents.start(sync_settings(), clock=clock)
    if set_by_ntp:
        clock.step(-box_off_s)
    await central.set_up(True)
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["history"], completed.counts["stored"]) == (1, 1), completed.counts
    jobs = "SELECT DISTINCT o.number, j.copy FROM orders o JOIN print_jobs j ON j.order_id = o.id"
    assert await db_rows(agent, jobs) == [(make_order(2)["number"], 1)]  # ticket and receipt: COPY


@pytest.mark.parametrize("box_off_s", [DAY_S, -30 * DAY_S], ids=["a-day-ahead", "a-month-behind"])
async def test_a_first_start_on_a_wrong_clock_is_put_on_centrals_clock_in_a_later_run_of_the_same_boot(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, box_off_s: float
) -> None:
    """The same, but the first run ends before central ever answered (the line not up at the install; the technician
    restarts the agent) and NTP set the clock meanwhile: the next run of the same boot puts the first start on
    central's clock, by the monotonic time kept for it with the kernel's boot id. Before, only the first run could: a
    day ahead, an order central took after the install was history, never printed; a month behind, a 3-day-old order
    was the box's work (probe_clock D2)."""
    now = datetime.now(UTC)
    old, new = make_order(1, created_at=now - timedelta(days=3)), make_order(2, created_at=now - timedelta(seconds=30))
    await central.set_up(False)
    clock = SteppedClock(wall_offset=box_off_s)
    agent, _ = await agents.start(sync_settings(), clock=clock)
    await agents.stop(agent)
    clock.step(-box_off_s)  # NTP
    central.add_orders([old, new])
    await central.set_up(True)
    agent, events = await agents.start(sync_settings(), clock=clock)
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["history"], completed.counts["stored"]) == (1, 1), completed.counts
    jobs = "SELECT DISTINCT o.number FROM orders o JOIN print_jobs j ON j.order_id = o.id"
    assert await db_rows(agent, jobs) == [(new["number"],)]


async def test_a_pre_order_not_yet_due_is_a_new_boxs_work_not_history(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A box dies; its replacement's first recovery lists an order made two days ago for tomorrow (a catering
    pre-order) and one made two days ago for then. The first is still the kitchen's work: stored, and its ticket
    prints marked COPY (the old box may have printed it; the cook may not have it any more), not held, as it is not
    due yet. The second is history. Before: both were history, never printed: the pre-order's meal was never made
    unless someone remembered it."""
    now = datetime.now(UTC).replace(microsecond=0)
    made = now - timedelta(days=2)
    catering, lunch = make_order(1, created_at=made), make_order(2, created_at=made)
    due_at(catering, now + timedelta(days=1))
    central.add_orders([catering, lunch])
    agent, events = await agents.start(sync_settings())
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["history"], completed.counts["stored"]) == (1, 1), completed.counts
    jobs = "SELECT o.id, j.kind, j.copy, j.state FROM orders o JOIN print_jobs j ON j.order_id = o.id ORDER BY j.id"
    rows = await eventually(
        lambda: db_rows(agent, jobs), lambda rows: rows and all(r[3] == "printed" for r in rows), what="printed"
    )
    assert {(r[0], r[2]) for r in rows} == {(catering["id"], 1)} and "ticket" in {r[1] for r in rows}, rows
