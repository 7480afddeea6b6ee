"""The broker no longer has the store's session (restarted without persistence, or it expired it): what central
published meanwhile was never queued for the store. With a [central] link recovery fetches it
(tests/mqtt/test_link.py); without one nothing can, and the manager must hear of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from edge.app import Agent
from edge.sim.broker import Backend, Broker
from edge.sim.orders import make_order
from tests.helpers import db_rows, eventually, wait_until
from tests.mqtt.conftest import MAIL, ORDERS, mqtt_section, needs_mosquitto

pytestmark = needs_mosquitto


async def test_a_session_the_broker_lost_while_the_agent_was_stopped_is_alerted_without_a_central_link(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path
) -> None:
    """MQTT only. The box's first session is no news (info). The agent stops, the broker restarts without
    persistence, central publishes an order (nobody's session queues it), the agent starts: the session is new
    again though this box had one, so the order is lost. One error line names the lost session and that no recovery
    can fetch what was published meanwhile, and the manager's alert (mqtt_session_lost) says what to do. Before (MQTT
    probe, finding 2): one info line saying the orders "are caught up by recovery" (none is set up), /ready 200, no
    alert, and the order never printed."""
    broker = await asyncio.to_thread(Broker, tmp_path / "forgetful", persistence=False)
    await broker.start()
    backend = Backend(broker)
    await backend.connect()
    try:
        with structlog.testing.capture_logs() as first_logs:
            agent = await make_agent(mqtt=mqtt_section(broker), **MAIL)
            await wait_until(lambda: agent.mqtt is not None and agent.mqtt.state == "connected", what="link up")
        settings = agent.settings
        await agent.stop()
        assert [e for e in first_logs if e["event"] == "mqtt_session_lost"] == []
        await broker.restart()
        await backend.publish(ORDERS, make_order(1, prefix="lost", print_receipt=False))
        with structlog.testing.capture_logs() as logs:
            agent = await make_agent(settings)
            await wait_until(lambda: agent.mqtt is not None and agent.mqtt.state == "connected", what="link up")
            await eventually(
                lambda: db_rows(agent, "SELECT type, state FROM alert_groups"),
                lambda rows: ("mqtt_session_lost", "firing") in rows,
                what="the alert",
            )
        lost = [e for e in logs if e["event"] == "mqtt_session_lost"]
        assert len(lost) == 1 and lost[0]["log_level"] == "error", lost
        assert "no recovery" in lost[0]["note"] and "[central]" in lost[0]["note"], lost
        assert not any("caught up by recovery" in str(e) for e in logs)
        assert await db_rows(agent, "SELECT id FROM orders") == []
    finally:
        await backend.close()
        await broker.stop()
