"""What an MQTT store's order costs the SD card at a store's pace: the agent as its own process under
scripts/slowfsync.c's counter, orders from a real broker one at a time, its events published back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.sim.broker import Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import FsyncCounter, agent_process, db_rows, toml, wait_until
from tests.mqtt.conftest import EVENTS, ORDERS, mqtt_section, needs_mosquitto

pytestmark = needs_mosquitto
COUNT = 6


async def test_at_a_stores_pace_an_mqtt_order_with_its_events_costs_three_fsyncs(
    tmp_path: Path, printers: dict[str, SimPrinter], broker: Broker, backend: Backend, fsyncs: FsyncCounter
) -> None:
    """The order stored (then PUBACKed), its ticket claimed, its ticket printed: three fsyncs. Its two events,
    published on their own at this pace, move the outbox cursor without an fsync of their own: a cursor a power cut
    takes back publishes them again, which QoS 1 allows anyway (central deduplicates by key). Before: five."""
    link = toml({"mqtt": mqtt_section(broker)})
    agent = agent_process(tmp_path, printers, store_id="test-store", extra=f"\n{link}", env=fsyncs.env)
    db = tmp_path / "data" / "edge.db"
    orders = [make_order(n, prefix="pace", print_receipt=False) for n in range(COUNT + 1)]

    async def stored(n: int) -> bool:
        return (await db_rows(db, "SELECT COUNT(*) FROM orders"))[0][0] >= n

    def settled(order: dict[str, object]) -> bool:  # received and printed, published
        return sum(e["idempotency_key"].startswith(f"{order['id']}:") for e in backend.events(EVENTS)) >= 2

    await agent.start()
    try:
        # Sent until it arrives: an order published before the agent's first SUBSCRIBE lands is not queued for it.
        for _ in range(40):
            await backend.publish(ORDERS, orders[0])
            await asyncio.sleep(0.25)
            if await stored(1):
                break
        # The first ticket of a start loads the printing stack: under a full run's load its events took over 10 s once.
        await wait_until(lambda: settled(orders[0]), 30, "the first order's events")
        before = fsyncs.count()
        for order in orders[1:]:
            await backend.publish(ORDERS, order)
            await wait_until(lambda o=order: settled(o), 10, f"{order['id']}'s events")
        synced = fsyncs.count() - before
    finally:
        await agent.close()
    assert COUNT <= synced <= 3 * COUNT + 2, f"{synced} fsyncs for {COUNT} orders"
