"""A store network whose only way out is its web proxy (central.proxy): the MQTT link goes through it too, in a CONNECT
tunnel (RFC 9110 9.3.6), as the central API's calls do; the box itself cannot even resolve the broker's name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from edge.app import Agent
from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.proxy import ProxySim
from tests.helpers import db_rows, eventually, wait_until
from tests.mqtt.conftest import ORDERS, STATUS, needs_mosquitto

MakeAgent = Callable[..., Awaitable[Agent]]

pytestmark = needs_mosquitto

_BROKER_NAME = "mqtt.central.invalid"  # .invalid never resolves (RFC 6761): only the proxy knows where it is


@contextlib.asynccontextmanager
async def _proxy_for(broker: Broker) -> AsyncIterator[ProxySim]:
    """The store's proxy, with a login; the only one that knows where the broker is."""
    proxy = ProxySim({_BROKER_NAME: ("127.0.0.1", broker.port)}, user="shop", password="pr0xy-pass")
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def _agent_behind(make_agent: MakeAgent, proxy: ProxySim, broker: Broker, password: str) -> Agent:
    return await make_agent(
        mqtt={"url": f"mqtt://{_BROKER_NAME}:{broker.port}", "username": AGENT_USER, "password": AGENT_PASSWORD},
        central={"proxy": proxy.url, "proxy_user": "shop", "proxy_password": password},
    )


async def test_orders_come_over_mqtt_through_the_shops_proxy_with_its_login(
    make_agent: MakeAgent, broker: Broker, backend: Backend, printers: dict[str, SimPrinter]
) -> None:
    """central.proxy set, with a login: the agent's MQTT link opens a CONNECT tunnel to the broker through the proxy,
    sends the proxy's Basic login in it, goes online and prints an order published to it (before: the link dialled the
    broker itself, could not resolve its name, and no order came)."""
    async with _proxy_for(broker) as proxy:
        agent = await _agent_behind(make_agent, proxy, broker, "pr0xy-pass")
        await wait_until(lambda: b"online" in backend.on(STATUS), what="the agent online through the proxy")
        order = make_order(1, prefix="proxied", print_receipt=False)
        await backend.publish(ORDERS, order)
        await printers["kitchen"].wait_for_printed(1)
        await eventually(
            lambda: db_rows(agent, "SELECT id, source FROM orders"), lambda r: r == [(order["id"], "mqtt")]
        )
        assert proxy.tunnels and all(t == f"{_BROKER_NAME}:{broker.port}" for t in proxy.tunnels)
        assert proxy.refused == []


async def test_a_proxy_that_wants_another_login_is_named_in_the_links_state(
    make_agent: MakeAgent, broker: Broker, printers: dict[str, SimPrinter]
) -> None:
    """The proxy refuses the tunnel (407: the box's proxy password is wrong): the MQTT link is not connected and says
    which proxy refused and which settings hold its login, as the central link does for the same proxy."""
    async with _proxy_for(broker) as proxy:
        agent = await _agent_behind(make_agent, proxy, broker, "wrong")
        link = agent.mqtt
        assert link is not None
        await wait_until(lambda: "407" in link.detail, what="the refusal in the link's state")
        assert link.state != "connected" and proxy.url in link.detail and "central.proxy_user" in link.detail
        assert proxy.tunnels == [] and proxy.refused
