"""Fixtures for the API contract tests: the agent with every optional route switched on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge.app import Agent
from edge.sim.central import CentralSim
from tests.helpers import TOKEN


@pytest.fixture
async def central() -> AsyncIterator[CentralSim]:
    """The simulated central API on loopback, with no orders yet."""
    sim = CentralSim("test-store", token=TOKEN)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def full_agent(make_agent: Callable[..., Awaitable[Agent]], central: CentralSim) -> Agent:
    """The real agent with the public status page, a central API (recovery routes live) and one print attempt per
    job."""
    return await make_agent(
        api={"status_page_public": True},
        central={"url": central.url, "token": TOKEN, "start_jitter_s": 0, "probe_max_s": 0.1},
        spool={"max_attempts": 1},
    )
