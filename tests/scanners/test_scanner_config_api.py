"""[scanners.NAME] settings, the GET /api/v1/scans answers, and a clean stop with scanners attached."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.errors import ConfigError
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, api_client

BASE: dict[str, Any] = {
    "agent": {"store_id": "s1"},
    "api": {"token": "t"},
    "printers": {"kitchen": {"type": "file"}},
    "stations": {"kitchen": "kitchen"},
}


def test_scanner_settings_from_file_and_environment() -> None:
    """A scanner table gives typed settings with defaults; EDGE_SCANNERS_<NAME>_<KEY> overrides a key."""
    settings = parse_settings(
        BASE | {"scanners": {"pass-1": {"port": "/dev/ttyACM0", "station": "kitchen"}}},
        env={"EDGE_SCANNERS_PASS_1_BAUDRATE": "115200"},
    )
    scanner = settings.scanners["pass-1"]
    assert (scanner.port, scanner.baudrate, scanner.station, scanner.hand_out) == (
        "/dev/ttyACM0",
        115200,
        "kitchen",
        False,
    )


@pytest.mark.parametrize(
    ("scanners", "message"),
    [
        ({"k": {"station": "kitchen"}}, "config scanners.k.port: is required"),
        (
            {"k": {"port": "/dev/ttyACM0", "station": "grill"}},
            "config scanners.k.station: station 'grill' is not in \\[stations\\]",
        ),
        (
            {"a": {"port": "/dev/ttyACM0"}, "b": {"port": "/dev/ttyACM0"}},
            "config scanners.b.port: /dev/ttyACM0 is already the port of scanner 'a'",
        ),
        ({"k": {"port": "/dev/ttyACM0", "baudrate": -9600}}, "config scanners.k.baudrate: must be greater than 0"),
        ({"k": {"port": "/dev/ttyACM0", "speed": 9600}}, "config scanners.k.speed: unknown key"),
        ({"Kitchen Scanner": {"port": "/dev/ttyACM0"}}, "config scanners.Kitchen Scanner: scanner name must be"),
    ],
)
def test_wrong_scanner_settings_name_the_key(scanners: dict[str, Any], message: str) -> None:
    """Each mistake in a scanner table stops start-up with the key and the problem."""
    with pytest.raises(ConfigError, match=message):
        parse_settings(BASE | {"scanners": scanners})


@pytest.mark.parametrize(("query", "field"), [({"outcome": "great"}, "outcome"), ({"limit": "many"}, "limit")])
async def test_bad_scan_queries_are_422_naming_the_field(
    scan_api: aiohttp.ClientSession, query: dict[str, str], field: str
) -> None:
    """A wrong filter is a 422 that names it, never a 500."""
    async with scan_api.get("/api/v1/scans", params=query) as response:
        assert response.status == 422
        assert (await response.json())["field"] == field


async def test_scans_list_needs_the_token(scan_agent: tuple[Agent, Seen]) -> None:
    """GET /api/v1/scans is behind the API token like every /api/ route."""
    agent, _ = scan_agent
    async with api_client(agent, token=None) as session, session.get("/api/v1/scans") as response:
        assert response.status == 401


async def test_scans_list_shows_each_scanner(scan_api: aiohttp.ClientSession, sims: dict[str, SimScanner]) -> None:
    """Each configured scanner is listed with its port, station and connection; counts cover every outcome."""
    async with scan_api.get("/api/v1/scans") as response:
        body = await response.json()
    assert response.status == 200 and body["scans"] == []
    assert {s["name"]: (s["port"], s["station"], s["connected"]) for s in body["scanners"]} == {
        "kitchen": (str(sims["kitchen"].path), "kitchen", True),
        "bar": (str(sims["bar"].path), "bar", True),
        "counter": (str(sims["counter"].path), None, True),
    }
    assert set(body["counts"]) == {"ticket_done", "order_ready", "handed_out", "already_done", "unknown"}


async def test_stop_with_scanners_reading_is_prompt(make_agent: Any, tmp_path: Path) -> None:
    """Readers blocked in a read notice the stop within their wake interval; the agent stops promptly and the ports are
    closed."""
    sims = [SimScanner(tmp_path / f"tty-{i}") for i in range(2)]
    for sim in sims:
        sim.plug()
    seen = Seen()
    agent = await make_agent(scanners={f"s{i}": {"port": str(sim.path)} for i, sim in enumerate(sims)}, listen=seen)
    try:
        for i in range(2):
            await seen.connected(f"s{i}")
        started = time.monotonic()
        await asyncio.wait_for(agent.stop(), 10)
        assert time.monotonic() - started < 5
        assert not any(reader.port_open for reader in agent.scanners.values())
    finally:
        for sim in sims:
            sim.unplug()
