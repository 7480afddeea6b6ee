"""Shared fixtures: real SQLite files, simulated printers on loopback, the real agent and an HTTP client."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings, parse_settings
from edge.sim.orders import taken_at
from edge.sim.printer import SimPrinter

TOKEN = "test-token-0123456789"
EXAMPLE = json.loads((Path(__file__).parent / "fixtures" / "order-example.json").read_text(encoding="utf-8"))


def fresh(order: dict[str, Any]) -> dict[str, Any]:
    """The order as if taken just now (to the microsecond: tests hold tickets after well under a second).

    Staleness is the order's own age (created_at): the contract example as shipped (22 Nov 2026) is an old order
    that would be held, not printed."""
    return taken_at(order, datetime.now(UTC))


@pytest.fixture
def example_order() -> dict[str, Any]:
    """The backend's contract example as shipped (a fresh copy per test), taken just now (see ``fresh``)."""
    return fresh(copy.deepcopy(EXAMPLE))


def config_dict(data_dir: Path, printers: dict[str, SimPrinter], **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "agent": {"store_id": "test-store", "data_dir": str(data_dir), "language": "de", "log_format": "json"},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "printers": {
            name: {"type": "network", "host": "127.0.0.1", "port": p.port, "width": 48, "status_timeout": 0.5}
            for name, p in printers.items()
        },
        "stations": {"kitchen": "kitchen", "bar": "kitchen"},
        "receipts": {"printer": "front"},
        "spool": {"retry_base_s": 0.05, "retry_max_s": 0.2, "offline_probe_max_s": 0.5},
    }
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture
async def printers(tmp_path: Path) -> AsyncIterator[dict[str, SimPrinter]]:
    """Two simulated network printers, kitchen and front, listening on loopback."""
    sims = {"kitchen": SimPrinter("kitchen"), "front": SimPrinter("front")}
    for sim in sims.values():
        await sim.start()
    yield sims
    for sim in sims.values():
        await sim.stop()


@pytest.fixture
def make_settings(tmp_path: Path, printers: dict[str, SimPrinter]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return parse_settings(config_dict(tmp_path / "data", printers, **overrides), source="test")

    return make


@pytest.fixture
async def make_agent(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Starts real agents: ``await make_agent(settings=None, clock=None, **overrides)``; each is stopped at the end
    unless the test stopped it already."""
    started: list[Agent] = []

    async def make(settings: Settings | None = None, *, clock: Clock | None = None, **overrides: Any) -> Agent:
        a = Agent(settings or make_settings(**overrides), clock=clock or SYSTEM_CLOCK)
        await a.start()
        started.append(a)
        return a

    yield make
    for a in reversed(started):
        await a.stop()


@pytest.fixture
async def agent(make_agent: Callable[..., Awaitable[Agent]]) -> Agent:
    """The real agent: SQLite file in tmp_path, API on a free loopback port, spools to the simulated printers."""
    return await make_agent()


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the agent's API, authenticated."""
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{agent.port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as session:
        yield session
