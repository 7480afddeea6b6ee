"""A broker that goes away or hangs is `disconnected` (a warning, /ready 200), not `refused`: restarts in a row are not
a second box with our client id, and a broker that never answers CONNECT is named once in the log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge.app import Agent
from edge.config import parse_settings
from edge.events import Event, MqttConnectionChanged
from edge.sim.broker import Backend, Broker, TlsFiles
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sync.mqtt import build_client
from tests.helpers import api_client, config_dict, db_rows, post, wait_until
from tests.mqtt.conftest import MAIL, STATUS, HoldingProxy, mqtt_section, needs_mosquitto

MakeAgent = Callable[..., Awaitable[Agent]]

pytestmark = needs_mosquitto


async def ready(agent: Agent) -> tuple[int, dict[str, Any]]:
    async with api_client(agent) as api, api.get("/ready") as response:
        return response.status, await response.json()


@pytest.mark.parametrize("path", ["direct", "relay"])
async def test_clean_broker_restarts_in_a_row_are_not_taken_for_a_second_box(
    make_agent: MakeAgent, broker: Broker, backend: Backend, path: str
) -> None:
    """The broker restarted (cleanly, persistence on) four times, each within a few seconds of the agent's connect, as
    an operator or a restart loop does. Mosquitto closes the connection as it does for a session takeover, without a
    reason; but a broker going away no longer answers a connect, another box's connect has not. Before: the third
    restart made the link `refused` ("closed the connection within 5 s of accepting it 3 times in a row: ... a second
    box set up with the same store_id"), /ready 503, an mqtt_refused alert, and the next connect only after
    reconnect_max_s. ``relay``: the broker behind a TCP relay (a cloud broker's load balancer, stunnel, socat), which
    takes connections whether or not a broker is behind it; before, the same false `refused` there (a bare dial
    succeeded)."""
    heard: list[Event] = []
    section = mqtt_section(broker, reconnect_max_s=10)
    relay = HoldingProxy(broker.port)
    if path == "relay":
        await relay.start()
        section["url"] = f"mqtt://127.0.0.1:{relay.port}"
    with structlog.testing.capture_logs() as logs:
        agent = await make_agent(mqtt=section, listen=heard.append, **MAIL)
        await wait_until(lambda: b"online" in backend.on(STATUS), what="the agent online")

        def changes() -> list[MqttConnectionChanged]:
            return [e for e in heard if isinstance(e, MqttConnectionChanged)]

        for n in range(4):
            await asyncio.sleep(1.0)  # well within the 5 s a second box's takeover would show in
            await broker.restart()
            await wait_until(
                lambda n=n: sum(e.connected for e in changes()) >= n + 2 or any(e.refused for e in changes()),
                10,
                what=f"connected again after restart {n + 1}",
            )
            assert not any(e.refused for e in changes()), [e.detail for e in changes() if e.refused]
    assert agent.mqtt is not None and agent.mqtt.state == "connected"
    assert [e for e in logs if e["event"].startswith("mqtt_") and e["log_level"] == "error"] == []
    status, body = await ready(agent)
    assert status == 200, body
    assert await db_rows(agent, "SELECT type FROM alert_groups WHERE type LIKE 'mqtt%'") == []
    await agent.stop()
    if path == "relay":
        await relay.stop()


async def test_a_broker_counts_as_listening_only_when_it_answers_a_connect(
    broker: Broker, tls_files: TlsFiles, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """What tells a broker that went away from another box taking the session (above): the broker still answers a
    connect. Asked with the agent's login, over TLS where the link uses it, and through a relay, which takes the
    connection whether or not a broker is behind it; a refusal is an answer too."""
    relay = HoldingProxy(broker.port)
    await relay.start()

    def listening(**changes: Any) -> bool:
        settings = parse_settings(config_dict(tmp_path / "data", printers, mqtt=mqtt_section(broker, **changes)))
        client = build_client(settings.mqtt, "probe-test", manual_ack=False)
        client.connect_async(settings.mqtt.host, settings.mqtt.port)  # where to dial, as the link's connect sets it
        return client.listening()

    tls = {"url": broker.tls_url, "ca_file": str(tls_files.ca)}
    try:
        assert await asyncio.to_thread(listening)
        assert await asyncio.to_thread(listening, **tls)
        assert await asyncio.to_thread(listening, password="wrong-password")  # refused, but a broker answered
        assert await asyncio.to_thread(listening, url=f"mqtt://127.0.0.1:{relay.port}")
        await broker.stop()
        assert not await asyncio.to_thread(listening, url=f"mqtt://127.0.0.1:{relay.port}")
        assert not await asyncio.to_thread(listening)
    finally:
        await relay.stop()


class SilentBroker:
    """Takes TCP connections and reads what comes, never answering: a hung broker, or a port that is no broker."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()


async def test_a_broker_that_never_answers_connect_is_one_warning_naming_it_and_ready_says_so(
    make_agent: MakeAgent, printers: dict[str, SimPrinter]
) -> None:
    """A broker that accepts the TCP connection and never answers CONNECT: paho gives up after keepalive_s and tells
    on_disconnect, not on_connect_fail. Before: no log line at all, however long it lasted, and /ready's detail read
    "disconnected: disconnected: Client is not connected. Socket: None). ..." (paho's words about its previous
    attempt). Now one warning naming the broker, however often it retries, and a detail a person can read."""
    silent = SilentBroker()
    url = f"mqtt://127.0.0.1:{await silent.start()}"
    try:
        with structlog.testing.capture_logs() as logs:
            agent = await make_agent(mqtt={"url": url, "keepalive_s": 5, "reconnect_max_s": 0.5})
            async with api_client(agent) as api:
                assert (await post(api, make_order(1, prefix="silent", print_receipt=False)))[0] == 201
            await printers["kitchen"].wait_for_printed(1)  # a hung broker holds up neither intake nor printing
            # The third connection comes after two went unanswered: the same failure twice, one line.
            await wait_until(lambda: silent.connections >= 3, 20, what="three connections to the silent broker")
        status, body = await ready(agent)
    finally:
        await silent.stop()
    said = [e for e in logs if e["event"].startswith("mqtt_") and e["log_level"] in ("warning", "error")]
    assert [(e["event"], e["log_level"], e["broker"]) for e in said] == [("mqtt_connect_failed", "warning", url)]
    assert "did not answer CONNECT within 5 s" in said[0]["error"], said
    assert status == 200, body
    assert body["checks"]["mqtt"] == {"ok": True, "detail": f"disconnected: {said[0]['error']}"}
