"""A real Mosquitto per test (edge/sim/broker.py) and the backend's own paho client; skipped where it is missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker, TlsFiles, available, make_tls

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
