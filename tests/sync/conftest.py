"""Fixtures for sync tests: the central API simulator on loopback and an agent pointed at it with fast timings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.sim.central import CentralSim
from edge.sim.smtp import SmtpSink
from tests.helpers import Recorder

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


class Agents:
    """Starts real agents (through ``make_agent``), each with a Recorder of its events; make_agent stops whatever is
    still running at the end."""

    def __init__(self, make_agent: Callable[..., Awaitable[Agent]]) -> None:
        self._make_agent = make_agent

    async def start(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> tuple[Agent, Recorder]:
        recorder = Recorder()
        agent = await self._make_agent(settings, clock=clock, listen=recorder)
        return agent, recorder

    async def stop(self, agent: Agent) -> None:
        await agent.stop()


@pytest.fixture
def agents(make_agent: Callable[..., Awaitable[Agent]]) -> Agents:
    """Real agents on loopback, stopped after the test."""
    return Agents(make_agent)
