"""DNS rebinding: a web page a staff browser opens cannot read the status page through a name of its own."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from edge.app import Agent
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


def test_allowed_hosts_must_be_names(make_settings: Callable[..., Settings]) -> None:
    """An entry with a port, a scheme or a wildcard stops the start naming the key."""
    for bad in ("edge.example:8765", "http://edge.example", "*.example", ""):
        with pytest.raises(ConfigError) as caught:
            make_settings(api={"allowed_hosts": [bad]})
        assert caught.value.key == "api.allowed_hosts"
