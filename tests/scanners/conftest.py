"""Scanner fixtures: simulated scanners on pseudo-terminals, the real agent reading them, and waiting for what they
caused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from edge.app import Agent
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, api_client, scanner_config


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[dict[str, SimScanner]]:
    """Three simulated scanners, plugged in: kitchen and bar (one station each) and the counter (hands orders out)."""
    scanners = {name: SimScanner(tmp_path / f"tty-{name}") for name in ("kitchen", "bar", "counter")}
    for sim in scanners.values():
        sim.plug()
    yield scanners
    for sim in scanners.values():
        sim.unplug()


@pytest.fixture
async def scan_agent(make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]) -> tuple[Agent, Seen]:
    """The real agent with the three scanners configured, and everything it has published about them."""
    seen = Seen()
    agent = await make_agent(scanners=scanner_config(sims), listen=seen)
    for name in sims:
        await seen.connected(name)
    return agent, seen


@pytest.fixture
async def scan_api(scan_agent: tuple[Agent, Seen]) -> AsyncIterator[aiohttp.ClientSession]:
    """An authenticated HTTP client for the scan agent's API."""
    async with api_client(scan_agent[0]) as session:
        yield session
