"""A real Mosquitto per test (edge/sim/broker.py) and the backend's own paho client; skipped where it is missing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker, TlsFiles, available, make_tls
from edge.sim.ports import free_port

PREFIX = "edge/test-store"  # the default topic prefix of the test config (store_id test-store)
ORDERS, EVENTS, STATUS = f"{PREFIX}/orders", f"{PREFIX}/events", f"{PREFIX}/status"
# For the modules whose tests start a broker (pytestmark = needs_mosquitto): skipped, saying why, where it is missing.
needs_mosquitto = pytest.mark.skipif(not available(), reason="mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA with a server certificate for localhost and a client certificate (openssl CLI)."""
    if not available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; CI does)")
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def broker(tmp_path: Path, tls_files: TlsFiles) -> AsyncIterator[Broker]:
    """Mosquitto with a plain listener (backend and most agents) and a TLS one, persistence on."""
    if not available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; CI does)")
    b = await asyncio.to_thread(Broker, tmp_path / "broker", tls=tls_files)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def backend(broker: Broker) -> AsyncIterator[Backend]:
    """The backend's client, listening on the store's events and status topics with a persistent session (what
    arrives while the broker restarts is kept for it)."""
    client = Backend(broker, subscribe=[EVENTS, STATUS], client_id="central-consumer")
    await client.connect()
    yield client
    await client.close()


def mqtt_section(broker: Broker, **changes: Any) -> dict[str, Any]:
    return {"url": broker.url, "username": AGENT_USER, "password": AGENT_PASSWORD, **changes}


# Alerts on, the relay nowhere: the alert groups are what these tests read (mail delivery is tests/alerts' business).
MAIL: dict[str, Any] = {
    "smtp": {"host": "127.0.0.1", "port": 9, "security": "none", "sender": "edge@example.com"},
    "alerts": {"to": ["manager@example.com"], "critical_group_wait_s": 0},
}


class HoldingProxy:
    """TCP between the agent and the broker that can hold what the agent sends: its PUBACKs then never reach the
    broker, as when the process dies right after its commit. Held bytes are dropped with the connection.
    ``line(False)`` is the store's line to the broker cut: open connections reset, new ones refused. ``delay_s``: each
    way, what is sent arrives that much later, in order (a slow uplink's round trip: LTE fallback, a full line)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.hold = False
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._up = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def line(self, up: bool) -> None:
        self._up = up
        if not up:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, agent_r: asyncio.StreamReader, agent_w: asyncio.StreamWriter) -> None:
        try:
            if not self._up:
                raise ConnectionRefusedError
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the line is down, or the broker: the agent's connection dies as it would
            agent_w.transport.abort()
            return

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, holdable: bool) -> None:
            loop = asyncio.get_running_loop()
            late: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

            async def arrive() -> None:  # each chunk delay_s after it was sent, in order, however many are on the way
                while (item := await late.get()) is not None:
                    await asyncio.sleep(max(0.0, item[0] - loop.time()))
                    w.write(item[1])
                    await w.drain()

            arriving = asyncio.ensure_future(arrive())
            with contextlib.suppress(ConnectionError):
                while data := await r.read(65536):
                    if holdable and self.hold:
                        continue  # swallowed: the agent thinks it sent them
                    late.put_nowait((loop.time() + self.delay_s, data))
                late.put_nowait(None)
                await arriving
            arriving.cancel()
            w.close()

        tasks = [
            asyncio.ensure_future(pump(agent_r, broker_w, True)),
            asyncio.ensure_future(pump(broker_r, agent_w, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:  # line(False) cancels the pumps
            for task in tasks:
                task.cancel()
            if self._up:
                agent_w.close()
            else:
                agent_w.transport.abort()  # a line cut: the agent hears a reset, not a broker's orderly close
            broker_w.close()
