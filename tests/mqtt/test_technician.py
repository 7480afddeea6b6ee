"""What the technician sees of the MQTT link: edge doctor, edge status, the status page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edge.api.client import call_agent
from edge.app import Agent
from edge.config import Settings
from edge.ops.technician import doctor, render_status
from edge.sim.broker import Backend, Broker
from edge.sim.orders import make_order
from tests.helpers import api_client, eventually, post, wait_until
from tests.mqtt.conftest import ORDERS, STATUS, mqtt_section, needs_mosquitto

MakeAgent = Callable[..., Awaitable[Agent]]

pytestmark = needs_mosquitto


async def test_doctor_checks_the_broker_login_itself_and_the_agents_link(
    make_agent: MakeAgent, make_settings: Callable[..., Settings], broker: Broker
) -> None:
    """edge doctor logs in to the broker on its own (under another client id, so the agent's session stays) and reports
    the running agent's link; a wrong password fails with the broker's reason."""
    agent = await make_agent(mqtt=mqtt_section(broker))
    await wait_until(lambda: agent.mqtt is not None and agent.mqtt.state == "connected", what="link up")
    checks = {
        c.name: c for c in await doctor(make_settings(api={"port": agent.port}, mqtt=mqtt_section(broker)), call_agent)
    }
    assert checks["mqtt broker"].level == "ok" and broker.url in checks["mqtt broker"].detail
    assert agent.mqtt.state == "connected"  # the doctor's login did not take the agent's session over

    wrong = make_settings(api={"port": agent.port}, mqtt=mqtt_section(broker, password="nope"))
    checks = {c.name: c for c in await doctor(wrong, call_agent)}
    assert checks["mqtt broker"].level == "fail"
    assert (
        "Bad user name or password" in checks["mqtt broker"].detail or "Not authorized" in checks["mqtt broker"].detail
    )

    plain = {c.name: c for c in await doctor(make_settings(api={"port": agent.port}), call_agent)}
    assert plain["mqtt broker"].level == "ok" and "not configured" in plain["mqtt broker"].detail


async def test_status_shows_the_link_and_the_rejected_messages(
    make_agent: MakeAgent, broker: Broker, backend: Backend
) -> None:
    """GET /api/v1/status (edge status, the status page) has the link state, and the messages that were not an order,
    newest first with their reason; edge status prints the link, the latest of them with their reason, and while the
    broker is down since when and how many status events wait (before stop 63, MQTT probe finding 4: only the link's
    state and a count of messages, where the docs promised the rest)."""
    agent = await make_agent(mqtt=mqtt_section(broker))
    # Not "connected" (CONNACK): a message published before the agent's SUBSCRIBE is in place is not queued for it.
    await wait_until(lambda: b"online" in backend.on(STATUS), what="the agent online")
    bad = make_order(1, prefix="bad", print_receipt=False)
    del bad["items"]
    await backend.publish(ORDERS, bad)
    async with api_client(agent) as api:

        async def status() -> dict:
            async with api.get("/api/v1/status") as response:
                return await response.json()

        data = await eventually(status, lambda d: d.get("mqtt", {}).get("rejected"), what="the rejection in the status")
        async with api.get("/api/v1/status/panel") as response:
            panel = await response.text()
    assert data["mqtt"]["state"] == "connected" and data["mqtt"]["broker"] == broker.url
    assert data["mqtt"]["rejected"][0]["order_id"] == bad["id"]
    assert data["mqtt"]["rejected"][0]["error"]["field"] == "items"
    assert "MQTT link" in panel and bad["id"] in panel
    shown = render_status(data, colour=False)
    assert "mqtt link: connected" in shown
    assert bad["id"] in shown and "items" in shown, shown
    await broker.stop()
    async with api_client(agent) as api:
        assert (await post(api, make_order(2, print_receipt=False)))[0] == 201

        async def later() -> dict:
            async with api.get("/api/v1/status") as response:
                return await response.json()

        data = await eventually(
            later, lambda d: d["mqtt"]["state"] != "connected" and d["mqtt"]["events_unpublished"], what="events wait"
        )
    shown = render_status(data, colour=False)
    assert "since" in shown and "status events not yet published" in shown, shown
