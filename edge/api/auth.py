"""Bearer-token check for everything under /api/; health and readiness stay open for probes."""

from __future__ import annotations

import hmac

from aiohttp import web

from edge.api.errors import Handler, error_response
from edge.config import Secret

_OPEN_PATHS = ("/health", "/ready", "/metrics")


def auth_middleware(token: Secret) -> object:
    expected = f"Bearer {token.get()}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            if not given:
                return _unauthorized("missing Authorization: Bearer <token> header")
            # Constant-time: a wrong token must not leak how much of it was right.
            if not hmac.compare_digest(given.encode(), expected):
                return _unauthorized("wrong token")
        return await handler(request)

    return check


def _unauthorized(reason: str) -> web.Response:
    response = error_response(401, "unauthorized", reason)
    response.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
    return response
