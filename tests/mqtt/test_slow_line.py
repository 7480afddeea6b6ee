"""The store's line to the broker is slow (a full uplink, LTE fallback): what waits to be published goes out at the
line's pace, each message about once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from edge.app import Agent
from edge.sim.broker import Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sync import mqtt as mqtt_module
from tests.helpers import api_client, post, wait_until
from tests.mqtt.conftest import EVENTS, STATUS, HoldingProxy, mqtt_section, needs_mosquitto

pytestmark = needs_mosquitto


async def test_a_backlog_of_events_on_a_slow_line_drains_each_event_about_once(
    make_agent: Callable[..., Awaitable[Agent]],
    broker: Broker,
    backend: Backend,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The line goes down while 60 orders print (120 events wait), then comes back slow: each way 0.15 s. Every event
    reaches central, none more than twice. Before (MQTT probe, finding 1): the agent handed a batch of 100 to paho at
    once and gave each PUBACK 10 s from then, but paho keeps 20 in flight, so at a round trip of 2 s the last ones of
    the batch timed out, the whole batch went again, and again: the same 100 events five to seven times each, the
    events after them never. The times here are shrunk by the same factor (PUBACK wait 1 s, round trip 0.3 s)."""
    monkeypatch.setattr(mqtt_module, "_PUBACK_TIMEOUT_S", 1.0)
    relay = HoldingProxy(broker.port)
    relay.delay_s = 0.15
    await relay.start()
    try:
        agent = await make_agent(mqtt=mqtt_section(broker, url=f"mqtt://127.0.0.1:{relay.port}"))
        await wait_until(lambda: b"online" in backend.on(STATUS), what="the agent online")
        await relay.line(False)
        async with api_client(agent) as api:
            for n in range(60):
                assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await printers["kitchen"].wait_for_printed(60, timeout=30)
        await relay.line(True)

        async def drained() -> bool:
            assert agent.mqtt is not None
            return (await agent.mqtt.status())["events_unpublished"] == 0

        await wait_until(drained, 30, what="every event published")
        sent = Counter(e["idempotency_key"] for e in backend.events(EVENTS))
        assert len(sent) >= 120 and max(sent.values()) <= 2, sent.most_common(3)
    finally:
        await relay.stop()
