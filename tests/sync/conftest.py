"""Fixtures for sync tests: the central API simulator on loopback and an agent pointed at it with fast timings."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.events import Event
from edge.sim.central import CentralSim
from edge.sim.smtp import SmtpSink

CENTRAL_TOKEN = "central-token-abcdef123456"
STORE = "test-store"
# Fast but real: probes and retries in tenths of seconds, no start delay, a rate limit high enough for a short run.
FAST = {
    "token": CENTRAL_TOKEN,
    "rate_limit_rps": 200.0,
    "start_jitter_s": 0.0,
    "schedule_interval_s": 0.0,
    "probe_up_s": 0.2,
    "probe_max_s": 0.2,
    "retry_base_s": 0.05,
    "retry_max_s": 0.5,
    "page_size": 100,
    "batch_size": 50,
}


@pytest.fixture
async def central() -> AsyncIterator[CentralSim]:
    """The central API simulator for store ``test-store``, up, with no orders yet."""
    sim = CentralSim(STORE, token=CENTRAL_TOKEN)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """A plain SMTP server on loopback that keeps every mail (no TLS: the alert tests cover that)."""
    server = SmtpSink()
    await server.start()
    yield server
    await server.stop()


def mail_to(sink: SmtpSink) -> dict[str, Any]:
    """Settings sections that send every alert to ``sink`` at once (no group wait)."""
    return {
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        "alerts": {
            "to": ["chef@store.test"],
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "disk_free_min_mb": 0,
            "check_interval_s": 0.2,
        },
    }


@pytest.fixture
def sync_settings(make_settings: Callable[..., Settings], central: CentralSim) -> Callable[..., Settings]:
    def make(*, sections: dict[str, Any] | None = None, **central_overrides: Any) -> Settings:
        """``central_overrides`` go to [central]; ``sections`` holds whole other sections (e.g. ``mail_to(sink)``)."""
        return make_settings(central={**FAST, "url": central.url, **central_overrides}, **(sections or {}))

    return make


class Recorder:
    """Every event the agent's bus publishes, for waiting on and asserting."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(
        self,
        kind: type[Event],
        count: int = 1,
        timeout: float = 20.0,  # noqa: ASYNC109 (a test helper: the timeout is the point)
        where: Callable[[Any], bool] = lambda e: True,
    ) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(found := [e for e in self.of(kind) if where(e)]) < count:  # noqa: ASYNC110 (polls a list)
                await asyncio.sleep(0.02)
        return found


class Agents:
    """Starts real agents, each with a Recorder of its events; whatever is still running is stopped at the end."""

    def __init__(self) -> None:
        self.running: list[Agent] = []

    async def start(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> tuple[Agent, Recorder]:
        agent = Agent(settings, clock=clock)
        recorder = Recorder()
        agent.bus.subscribe(recorder)
        await agent.start()
        self.running.append(agent)
        return agent, recorder

    async def stop(self, agent: Agent) -> None:
        self.running.remove(agent)
        await agent.stop()


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    """Real agents on loopback, stopped after the test."""
    handle = Agents()
    yield handle
    for agent in reversed(handle.running):
        await agent.stop()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read committed state from a second connection, as another process would."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()
