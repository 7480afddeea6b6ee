"""Calls the running agent's own API, as every `edge` command that acts through the agent does."""

from __future__ import annotations

from typing import Any

from edge.config import Settings
from edge.errors import EdgeError


async def call_agent(settings: Settings, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON answer) of one request to the agent on this box; EdgeError naming the URL if it does not answer."""
    import aiohttp  # here: the commands that never call the agent (config check, backup, migrate) start ~0.15 s sooner

    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    url = f"http://{host}:{settings.api.port}{path}"
    headers = {"Authorization": f"Bearer {settings.api.token.get()}"}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise EdgeError(
            f"agent API at {url} did not answer ({err or type(err).__name__}); is the agent running?"
        ) from None
