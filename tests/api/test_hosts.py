"""DNS rebinding: a web page a staff browser opens cannot read the status page through a name of its own."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.errors import ConfigError
from tests.helpers import TOKEN

BROWSER_PATHS = ("/", "/status/panel", "/static/status.js")


async def get(agent: Agent, path: str, host: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{agent.port}{path}", headers={"Host": host, **headers}) as response:
            await response.read()
            return response.status


async def test_status_page_refuses_a_foreign_host_name(agent: Agent) -> None:
    """A rebinding page at evil.example (its name now resolving to the box) gets 403 for the page, its panel and its
    script; the box's own addresses and names still get the page."""
    port = agent.port
    for path in BROWSER_PATHS:
        for host in (
            f"evil.example:{port}",
            "evil.example",
            f"127.0.0.1.evil.example:{port}",
            f"LOCALHOST.evil:{port}",
        ):
            assert await get(agent, path, host) == 403, (path, host)
        for host in (
            f"127.0.0.1:{port}",
            f"192.168.1.50:{port}",  # the box's LAN address, typed by the technician
            f"[::1]:{port}",
            f"localhost:{port}",
            f"{socket.gethostname()}:{port}",
            f"{socket.gethostname()}.local:{port}",  # mDNS
        ):
            assert await get(agent, path, host) == 200, (path, host)


async def test_machines_and_the_token_api_are_not_host_bound(agent: Agent) -> None:
    """Central behind a proxy and monitoring may use any name: /api/ (token) and /health, /ready, /metrics answer."""
    host = "store-17.vpn.example:443"
    assert await get(agent, "/api/v1/printers", host, Authorization=f"Bearer {TOKEN}") == 200
    for path in ("/health", "/ready", "/metrics"):
        assert await get(agent, path, host) == 200, path


async def test_configured_names_are_allowed(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """api.allowed_hosts adds names (a leading dot: any subdomain) for a proxy or a DNS name the technician uses."""
    agent = await make_agent(api={"allowed_hosts": ["edge.berlin-mitte.example", ".stores.example"]})
    assert await get(agent, "/", "edge.berlin-mitte.example") == 200
    assert await get(agent, "/", "EDGE.Berlin-Mitte.example:8765") == 200
    assert await get(agent, "/", "b17.stores.example") == 200
    assert await get(agent, "/", "stores.example.evil") == 403


async def refuse_names(agent: Agent, names: list[str]) -> None:
    """GET / under each name, on one kept-alive connection (a flood is fast), each answered 403."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        for name in names:
            async with client.get(f"http://127.0.0.1:{agent.port}/", headers={"Host": name}) as response:
                assert response.status == 403, name


async def test_a_flood_of_names_not_allowed_writes_a_few_log_lines_not_one_each(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """Something on the LAN asks for / under a new name each time (no token needed): the refusals are one
    `host_not_allowed` line per 10 s with a few of the names and how many more, not a line each. Before stop 81 each
    new name was a kind of its own: one warning per request, and every name kept in memory for good (100,000
    requests: 100,000 lines, 24 MB of log, +23 MB of memory; the security81 probe, F1)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    names = [f"h{i:05d}.rebind.example" for i in range(300)]
    with capture_logs() as logs:
        await refuse_names(agent, names[:150])
        clock.advance(11)
        await refuse_names(agent, names[150:])
    lines = [line for line in logs if line["event"] == "host_not_allowed"]
    assert len(lines) == 2, lines[:5]
    first, second = lines
    assert first["host"] == names[0] and "more_since_last" not in first
    assert second["host"] == names[150] and second["more_since_last"] == 149
    assert second["other_hosts"] == names[1:6]  # a few examples of the names left out, not all of them


def test_allowed_hosts_must_be_names(make_settings: Callable[..., Settings]) -> None:
    """An entry with a port, a scheme or a wildcard stops the start naming the key."""
    for bad in ("edge.example:8765", "http://edge.example", "*.example", ""):
        with pytest.raises(ConfigError) as caught:
            make_settings(api={"allowed_hosts": [bad]})
        assert caught.value.key == "api.allowed_hosts"
