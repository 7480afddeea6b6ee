"""Retention in a store whose status events go out over MQTT only (no [central]): an old order stays until its
events are published, like it stays until they are delivered over HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.broker import Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, days_pass, db_rows, eventually, post, wait_until
from tests.mqtt.conftest import EVENTS, STATUS, mqtt_section, needs_mosquitto

DAYS_31 = 31 * 86400

pytestmark = needs_mosquitto


def published(backend: Backend, order_id: str, event: str) -> bool:
    return any(e.get("order_id") == order_id and e.get("event") == event for e in backend.events(EVENTS))


async def test_an_old_order_whose_events_wait_for_the_broker_is_kept_until_they_are_published(
    make_agent: Callable[..., Awaitable[Agent]], broker: Broker, backend: Backend, printers: dict[str, SimPrinter]
) -> None:
    """MQTT only, retention 30 days. An order whose `printed` event was published goes 31 days on; one printed while
    the broker was down stays (its events would be lost with it) until the broker is back and has them."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, mqtt=mqtt_section(broker), retention={"every_s": 0.2})
    await wait_until(lambda: b"online" in backend.on(STATUS), what="the agent online")
    sent, waiting = (make_order(n, prefix="ret", print_receipt=False) for n in (1, 2))
    async with api_client(agent) as api:
        assert (await post(api, sent))[0] == 201
    await wait_until(lambda: published(backend, sent["id"], "printed"), what="the first order's events published")

    await broker.stop()
    async with api_client(agent) as api:
        assert (await post(api, waiting))[0] == 201
    await printers["kitchen"].wait_for_printed(2)
    later = await days_pass(agent, clock, 31)
    await eventually(
        lambda: db_rows(agent, "SELECT id FROM orders"), lambda rows: sent["id"] not in {r[0] for r in rows}
    )
    assert {r[0] for r in await db_rows(agent, "SELECT id FROM orders")} == {waiting["id"], later}

    await broker.start()
    await wait_until(lambda: published(backend, waiting["id"], "printed"), 30, "the second order's events published")
    await eventually(lambda: db_rows(agent, "SELECT id FROM orders"), lambda rows: rows == [(later,)])
    assert {r[0] for r in await db_rows(agent, "SELECT id FROM seen_orders")} == {sent["id"], waiting["id"], later}
