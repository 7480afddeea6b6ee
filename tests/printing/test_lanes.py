"""Fresh orders print before a recovered backlog; recovered orders that are old by their own created_at are held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import eventually, job_rows, post, wait_until


async def test_a_fresh_push_prints_before_the_recovered_backlog_and_old_recovered_orders_are_held(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """After an outage, recovery stores 5 orders taken 10 minutes ago and one taken 3 hours ago; then a fresh order is
    pushed. When the printer is back the pushed ticket prints first, then the recovered ones oldest first, and the
    3-hour-old one is held (staleness is the order's own age)."""
    assert agent.deps is not None
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(5):
        await agent.deps.intake.accept(
            make_order(n, prefix="rec", print_receipt=False, created_at=now - timedelta(minutes=10)), source="recovery"
        )
    await agent.deps.intake.accept(
        make_order(9, prefix="rec", print_receipt=False, created_at=now - timedelta(hours=3)), source="recovery"
    )
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    pushed = make_order(1, prefix="push", print_receipt=False)
    assert (await post(api, pushed))[0] == 201
    kitchen.set_offline(False)
    printed = await kitchen.wait_for_printed(6)
    order_ids = [decode(p).qr_codes[0].split(":")[2] for p in printed]
    assert order_ids == [pushed["id"]] + [f"rec_{n:06d}" for n in range(5)]
    await eventually(
        lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs"),
        lambda rows: (
            dict(rows)
            == {pushed["id"]: "printed", "rec_000009": "held"} | {f"rec_{n:06d}": "printed" for n in range(5)}
        ),
    )
