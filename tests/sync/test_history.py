"""A new box's first recovery: what central kept from before the box is history, by the longest a ticket may wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from tests.helpers import db_rows
from tests.sync.conftest import Agents


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
