"""Fixtures for sync tests: the central API simulator on loopback and an agent pointed at it with fast timings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.sim.central import CentralSim
from tests.helpers import CENTRAL_TOKEN, FAST, Recorder

STORE = "test-store"


@pytest.fixture
async def central() -> AsyncIterator[CentralSim]:
    """The central API simulator for store ``test-store``, up, with no orders yet."""
    sim = CentralSim(STORE, token=CENTRAL_TOKEN)
    await sim.start()
    yield sim
    await sim.stop()


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
