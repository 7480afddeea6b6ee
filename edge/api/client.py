"""Calls the running agent's own API, as every `edge` command that acts through the agent does."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.parse
from typing import Any

from edge.api.signing import signature_headers
from edge.config import Settings, signing_key
from edge.errors import EdgeError
from edge.ops.lock import DataDirLock

_TIMEOUT_S = 10.0


async def call_agent(settings: Settings, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON object answered) of one request to the agent on this box; EdgeError naming the URL if it does not
    answer, or answers what the agent never does. Python's own HTTP client, in a thread: one request on loopback needs
    no more, and a command that only asks the agent something (the health timer's, every minute) then never loads
    aiohttp (~0.2 s of CPU)."""
    host, port = agent_address(settings)
    # An id or printer name as typed (Küche, "A 1001") is a path segment, not the URL's own characters.
    path = urllib.parse.quote(path, safe="/?&=%:")
    address = f"{f'[{host}]' if ':' in host else host}:{port}"
    url = f"http://{address}{path}"
    headers = {"Authorization": f"Bearer {settings.api.token.get()}"}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    if settings.api.signing_secrets:  # where signatures are the only credential (no token), the box's own are needed
        headers |= signature_headers(signing_key(settings.api.signing_secrets[0]), data or b"")
    try:
        status, text = await asyncio.to_thread(_request, host, port, method, path, data, headers)
    except (OSError, http.client.HTTPException) as err:
        raise EdgeError(
            f"agent API at {url} did not answer ({err or type(err).__name__}); is the agent running?"
        ) from None
    try:
        answer = json.loads(text) if text.strip() else None
    except ValueError:  # a web page: a router's, another service's on a mistyped api.port
        answer, what = None, "not JSON"
    else:
        what = "an empty answer" if not text.strip() else f"JSON {type(answer).__name__}, not an object"
    if isinstance(answer, dict):  # every answer of the agent's is one
        return status, answer
    # Another service's JSON (null, a list) crashed the health timer before it could mail (the docs probe, D1)
    raise EdgeError(not_the_agent(address, status, what))


def agent_address(settings: Settings) -> tuple[str, int]:
    """(host, port) to ask the running agent at: where it listens, as it noted beside its lock; api.host and api.port
    where none runs or noted them. They differ while an edit of either in edge.toml waits for the restart: the health
    timer asked the new ones and mailed "agent not running" while orders printed (the config80 probe, F8; the
    verify80 probe, V1). An agent on every address is asked on loopback."""
    host, port = DataDirLock.running_address(settings.agent.data_dir) or (settings.api.host, settings.api.port)
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), port


def not_the_agent(where: str, status: int, what: str) -> str:
    """The one line for another program answering on api.port (a router's page, another service's JSON), for every
    command that asks the agent, the health timer and the doctor."""
    return f"{where} answers, but not as the edge agent (HTTP {status}, {what}): is api.port another program's?"


def _request(
    host: str, port: int, method: str, path: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT_S)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()
