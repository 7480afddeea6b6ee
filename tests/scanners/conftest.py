"""Scanner fixtures: simulated scanners on pseudo-terminals, the real agent reading them, and waiting for what they caused."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.config import Settings
from edge.events import Event, EventBus, ScannerConnectionChanged, ScanRecorded
from edge.sim.orders import make_order
from edge.sim.scanner import SimScanner
from tests.conftest import TOKEN

WAIT_S = 10.0  # generous: two shared cores, several test runs at once


class Seen:
    """Every scan and connection event the agent publishes, with a way to wait for the next ones."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        bus.subscribe(self._on_event, Event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, (ScanRecorded, ScannerConnectionChanged)):
            self.events.append(event)
            self._changed.set()

    @property
    def scans(self) -> list[ScanRecorded]:
        return [e for e in self.events if isinstance(e, ScanRecorded)]

    def connections(self, scanner: str) -> list[bool]:
        return [e.connected for e in self.events if isinstance(e, ScannerConnectionChanged) and e.scanner == scanner]

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; events: {self.events}") from None

    async def scans_count(self, n: int) -> list[ScanRecorded]:
        await self.until(lambda: len(self.scans) >= n, f"{n} scans")
        return self.scans

    async def connected(self, scanner: str, value: bool = True, times: int = 1) -> None:
        await self.until(
            lambda: self.connections(scanner).count(value) >= times, f"scanner {scanner} connected={value} x{times}"
        )


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[dict[str, SimScanner]]:
    """Three simulated scanners, plugged in: kitchen and bar (one station each) and the counter (hands orders out)."""
    scanners = {name: SimScanner(tmp_path / f"tty-{name}") for name in ("kitchen", "bar", "counter")}
    for sim in scanners.values():
        sim.plug()
    yield scanners
    for sim in scanners.values():
        sim.unplug()


def scanner_config(sims: dict[str, SimScanner], **changes: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, dict[str, Any]] = {
        "kitchen": {"port": str(sims["kitchen"].path), "station": "kitchen", "reconnect_max_s": 0.3},
        "bar": {"port": str(sims["bar"].path), "station": "bar", "reconnect_max_s": 0.3},
        "counter": {"port": str(sims["counter"].path), "hand_out": True, "hand_out_gap_s": 0, "reconnect_max_s": 0.3},
    }
    for name, values in changes.items():
        config[name].update(values)
    return config


@pytest.fixture
async def scan_agent(
    make_settings: Callable[..., Settings], sims: dict[str, SimScanner]
) -> AsyncIterator[tuple[Agent, Seen]]:
    """The real agent with the three scanners configured, and everything it has published about them."""
    agent = Agent(make_settings(scanners=scanner_config(sims)))
    seen = Seen(agent.bus)
    await agent.start()
    for name in sims:
        await seen.connected(name)
    yield agent, seen
    await agent.stop()


@pytest.fixture
async def scan_api(scan_agent: tuple[Agent, Seen]) -> AsyncIterator[aiohttp.ClientSession]:
    """An authenticated HTTP client for the scan agent's API."""
    agent, _ = scan_agent
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{agent.port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as session:
        yield session


async def push_order(agent: Agent, seq: int, *, bar: bool = False) -> dict[str, Any]:
    """Store an order through the real intake path (kitchen ticket; with ``bar`` also a bar ticket)."""
    assert agent.deps is not None
    order = make_order(seq, bar=bar)
    await agent.deps.intake.accept(order)
    return order


def db_rows(agent: Agent, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read what is committed, from a second connection of our own."""
    with sqlite3.connect(agent.settings.agent.db_path) as conn:
        return conn.execute(sql, params).fetchall()
