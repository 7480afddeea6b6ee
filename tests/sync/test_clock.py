"""A wall clock stepped during a recovery run (NTP after a cold boot) does not distort what the run measures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import RecoveryCompleted, RecoveryStarted
from edge.sim.central import CentralSim
from tests.helpers import db_rows
from tests.sync.conftest import Agents


async def test_a_clock_step_during_a_run_leaves_its_duration_true(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The wall clock jumps an hour forward in the middle of a run: the completed run's duration (event and metric)
    is the seconds it took, and its records carry the new wall time."""
    central.create_orders(5, prefix="ntp")
    central.latency_s = 0.3
    clock = SteppedClock()
    agent, events = await agents.start(sync_settings(page_size=2), clock=clock)
    await events.wait(RecoveryStarted)
    await asyncio.sleep(0.4)
    clock.step(3600)
    [completed] = await events.wait(RecoveryCompleted)
    assert 0 < completed.duration_s < 60
    [(finished,)] = await db_rows(agent.settings.agent.db_path, "SELECT finished_at FROM recovery_runs")
    assert finished > clock.wall() - 60  # written with the agent's (stepped) clock
