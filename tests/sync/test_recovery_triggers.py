"""A trigger that comes while a run is active: joined, followed by a fresh run, or starting a run that only waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge.config import Settings
from edge.events import CentralLinkChanged, RecoveryCompleted, RecoveryFailed, RecoveryStarted
from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_rows, eventually, orders_stored, slow_fsync
from tests.sync.conftest import Agents


async def test_orders_central_took_in_an_outage_while_a_run_was_storing_are_recovered_after_it(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The line goes down and comes back while a run stores its backlog (listed already); central took two orders
    meanwhile. The link-back trigger does not join that run, which will not list again: a fresh run follows it and
    the two print. Before, the trigger joined, and they waited for the schedule (15 min) or the next outage
    (probe_chaos_central)."""
    backlog = central.create_orders(40, prefix="back")
    slow_fsync(monkeypatch, 0.05)  # one order per transaction, each fsync slow: storing the backlog takes seconds
    agent, events = await agents.start(sync_settings(batch_size=1))
    db = agent.settings.agent.db_path
    await eventually(lambda: db_rows(db, "SELECT state FROM recovery_runs"), lambda rows: rows == [("processing",)])
    await central.set_up(False)
    await events.wait(CentralLinkChanged, where=lambda e: not e.up)
    late = central.create_orders(2, prefix="late")
    await central.set_up(True)
    await events.wait(CentralLinkChanged, where=lambda e: e.up and e.at > central.up_at)
    assert await db_rows(db, "SELECT id, state FROM recovery_runs") == [(1, "processing")]  # the case in question
    want = {o["id"] for o in backlog + late}
    await orders_stored(db, want, timeout=8, what="the orders central took during the second outage stored")
    await printers["kitchen"].wait_for_printed(len(want))
    await events.wait(RecoveryCompleted, count=2)
    runs = await db_rows(db, "SELECT trigger, state FROM recovery_runs ORDER BY id")
    assert runs == [("startup", "completed"), ("link_back", "completed")], runs


@pytest.mark.parametrize("trigger", ["link_back", "manual"])
async def test_the_line_coming_back_starts_a_run_waiting_out_its_retry_now_not_after_the_backoff(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, trigger: str
) -> None:
    """A run failed on a busy central (503), the next one waits out retry_max_s (10 s here; 30 s doubling up to 15
    min shipped). The line goes down and comes back meanwhile (or a person presses "sync now"): that run starts now
    (after start_jitter_s, 0 here) and brings the orders. Before, the trigger joined the waiting run and recovery
    began when the backoff ended (probe_chaos_central: 7 s at retry_max_s = 1)."""
    missed = central.create_orders(3, prefix="busy")
    central.fail_next(2, 503, retry_after=0.1, path="orders")
    agent, events = await agents.start(sync_settings(max_attempts=2, retry_max_s=10.0))
    [failed] = await events.wait(RecoveryFailed)
    if trigger == "link_back":
        await central.set_up(False)
        await events.wait(CentralLinkChanged, where=lambda e: not e.up)
        await central.set_up(True)
        await events.wait(CentralLinkChanged, where=lambda e: e.up and e.at > central.up_at)
    else:
        async with api_client(agent) as session, session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202 and (await response.json())["joined"] is True
    [completed] = await events.wait(RecoveryCompleted, timeout=3)  # the backoff had 8 s and more left
    assert completed.run_id == failed.run_id + 1 and completed.counts["stored"] == len(missed)
    assert [s.trigger for s in events.of(RecoveryStarted)] == ["startup", "startup"]
