"""A long busy outage's backlog at the printer: stale tickets held, recent ones printed after the pushed ones."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from edge.events import CentralLinkChanged, JobHeld, RecoveryCompleted
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, asap, db_execute, db_rows, post, wait_until
from tests.sync.conftest import Agents

STALE, RECENT, PUSHED = 300, 60, 3


def _created(seq: int, prefix: str, ago: timedelta) -> dict:
    return asap(make_order(seq, prefix=prefix, print_receipt=False, created_at=datetime.now(UTC) - ago))


async def test_an_outage_backlog_holds_its_stale_tickets_in_few_commits_and_prints_the_recent_ones_after_the_pushed(
    central: CentralSim, sync_settings, agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """Four hours of orders missed in an outage come back with the line while the kitchen printer is off, and three
    orders are pushed meanwhile. Once it is on: the pushed tickets first, then every recovered ticket younger than the
    stale age (45 min) once, in arrival order; every older one held (JobHeld each, for the print_job_held alarm), none
    on paper. The holds go in few commits (held_at is the commit's time): before, each stale ticket was held in a
    commit of its own after a look at the whole queue, and at 4,424 stale tickets the kitchen printed nothing for
    95 s (the recovery72 probe, 1d)."""
    agent, events = await agents.start(sync_settings(page_size=500, batch_size=500))
    await events.wait(RecoveryCompleted)
    # An old box: the outage's orders are not "before this database" (no COPY mark, none taken for history).
    await db_execute(
        agent, "UPDATE meta SET value = ? WHERE key = 'may_have_printed_until'", repr(time.time() - 6 * 3600)
    )
    await central.set_up(False)
    await events.wait(CentralLinkChanged, where=lambda e: not e.up)
    stale = [_created(n, "old", timedelta(hours=4) - n * timedelta(hours=3) / STALE) for n in range(STALE)]
    recent = [_created(n, "new", timedelta(minutes=40) - n * timedelta(minutes=39) / RECENT) for n in range(RECENT)]
    central.add_orders(stale + recent)
    printers["kitchen"].set_offline(True)
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    await central.set_up(True)
    await events.wait(RecoveryCompleted, count=2, timeout=60)
    pushed = [_created(n, "push", timedelta(seconds=1)) for n in range(PUSHED)]
    central.add_orders(pushed)  # the till sends central its orders too: it takes their status events
    async with api_client(agent) as api:
        for order in pushed:
            assert (await post(api, order))[0] == 201
    printers["kitchen"].set_offline(False)

    paper = await printers["kitchen"].wait_for_printed(PUSHED + RECENT, timeout=60)
    await wait_until(
        lambda: len(events.of(JobHeld)) >= STALE, 60, f"{STALE} stale tickets held ({len(events.of(JobHeld))})"
    )
    on_paper = [decode(data).qr_codes[0].split(":")[2] for data in paper]
    assert on_paper == [o["id"] for o in pushed + recent], on_paper
    held = await db_rows(
        agent,
        "SELECT o.id, j.held_reason FROM print_jobs j JOIN orders o ON o.id = j.order_id"
        " WHERE j.state = 'held' ORDER BY j.id",
    )
    assert held == [(o["id"], "stale") for o in stale]
    told = events.of(JobHeld)
    assert sorted(e.order_id for e in told) == [o["id"] for o in stale]
    assert all(e.printer == "kitchen" and e.order_number and e.age_s > 45 * 60 for e in told)
    [(commits,)] = await db_rows(agent, "SELECT COUNT(DISTINCT held_at) FROM print_jobs WHERE state = 'held'")
    assert commits <= STALE / 50, f"{STALE} stale tickets held in {commits} commits"
    assert len(printers["kitchen"].printed) == PUSHED + RECENT
