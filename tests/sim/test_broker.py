"""The simulated broker's own start: a port taken by another process before mosquitto binds it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from edge.sim import broker as broker_module
from edge.sim.broker import Broker, available
from edge.sim.ports import free_port

pytestmark = pytest.mark.skipif(not available(), reason="mosquitto is not installed (apt-get install mosquitto)")


async def test_a_port_taken_before_mosquitto_binds_it_means_other_ports_not_a_failed_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With four test workers, a free port picked at construction was taken by another worker's process before
    mosquitto bound it: the fixture failed with "Address already in use" (seen in a clean-clone CI run). The first
    start now moves to other ports; the broker then listens where it says. (free_port() now keeps its ports from other
    workers; another program can still take one: here the broker's first port is one such a program holds.)"""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))  # bound, not listening: a connection must not reach it instead
    taken = squatter.getsockname()[1]
    picks = iter([taken])
    monkeypatch.setattr(broker_module, "free_port", lambda: next(picks, None) or free_port())
    broker = await asyncio.to_thread(Broker, tmp_path / "broker")
    assert broker.port == taken
    try:
        await broker.start()
        assert broker.port != taken
        _, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.close()
        await writer.wait_closed()
        assert f"listener {broker.port} 127.0.0.1" in (await asyncio.to_thread(broker.config.read_text))
    finally:
        squatter.close()
        await broker.stop()
