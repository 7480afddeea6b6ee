"""The outage scenario end to end: orders pile up at the backend while the line is down, the agent catches up."""

from __future__ import annotations

import collections
from collections.abc import Callable

from edge.config import Settings
from edge.events import CentralLinkChanged, RecoveryCompleted, RecoveryStarted
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_rows, key_mark
from tests.sync.conftest import Agents

OUTAGE_ORDERS = 500
PUSHED_BEFORE_CUT = 50


async def test_outage_orders_are_stored_printed_and_reported_exactly_once(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """500 orders made while the line was down (50 of them pushed before the cut): when the line returns, the agent
    stores exactly 500, prints each ticket once, and the backend receives each `printed` event once."""
    agent, events = await agents.start(sync_settings())
    db = agent.settings.agent.db_path
    await events.wait(RecoveryCompleted)  # the first contact's run: nothing to do yet, but it sets the cursor

    await central.set_up(False)
    await events.wait(CentralLinkChanged, where=lambda e: not e.up)
    orders = central.create_orders(OUTAGE_ORDERS, prefix="outage")
    async with api_client(agent) as session:
        for order in orders[:PUSHED_BEFORE_CUT]:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()

    await central.set_up(True)
    completed = (await events.wait(RecoveryCompleted, count=2, timeout=30))[1]
    [started] = [e for e in events.of(RecoveryStarted) if e.run_id == completed.run_id]
    assert started.trigger == "link_back"
    line_back_to_start = started.at - central.up_at
    print(f"line back -> recovery start: {line_back_to_start * 1000:.0f} ms")
    assert line_back_to_start < 5.0  # generous on a shared machine; the real figure is in the benchmark
    assert completed.counts["missing"] == OUTAGE_ORDERS - PUSHED_BEFORE_CUT
    assert completed.counts["present"] == PUSHED_BEFORE_CUT and completed.counts["conflict"] == 0
    assert [e.up for e in events.of(CentralLinkChanged)] == [True, False, True]  # transitions, not samples

    sources = dict(await db_rows(db, "SELECT source, COUNT(*) FROM orders GROUP BY source"))
    assert sources == {"push": PUSHED_BEFORE_CUT, "recovery": OUTAGE_ORDERS - PUSHED_BEFORE_CUT}
    jobs = await db_rows(db, "SELECT id, order_id, kind, station FROM print_jobs")

    await central.wait_for(lambda: len(central.events_of("printed")) >= len(jobs), timeout=60)
    mark = await key_mark(db)
    assert {e["idempotency_key"] for e in central.events_of("printed")} == {
        f"{o}:printed:{j}{mark}" for j, o, _, _ in jobs
    }
    assert {e["order_id"] for e in central.events_of("received")} == {o["id"] for o in orders}
    assert central.duplicates == []  # nothing was sent twice: each event arrived exactly once
    arrival = {key: n for n, key in enumerate(central.events)}
    for j, o, _, _ in jobs:  # in order per order: an order's `received` reached the backend before its `printed`
        assert arrival[f"{o}:received:0{mark}"] < arrival[f"{o}:printed:{j}{mark}"]

    tickets: collections.Counter[tuple[str, str]] = collections.Counter()
    for data in printers["kitchen"].printed:
        doc = decode(data)
        assert "KOPIE / COPY" not in doc.text
        _, _, order_id, station = doc.qr_codes[0].split(":")[:4]
        tickets[(order_id, station)] += 1
    assert tickets == collections.Counter({(o, s): 1 for _, o, kind, s in jobs if kind == "ticket"})
    assert len(printers["front"].printed) == sum(1 for *_, kind, _ in jobs if kind == "receipt")
