"""DNS rebinding guard: the browser-facing pages answer only to the box's addresses and names.

A web page a staff browser opens can point its own name at the box's address (DNS rebinding); the
browser then treats the box's answers as that page's own and lets its script read them. The Host
header still carries the page's name, so the status page, its panel and its script answer only to an
IP address, localhost, this box's hostname (and its mDNS .local name) or a configured name — the
allow-list Django's ALLOWED_HOSTS and Jupyter's allow_remote_access check keep for the same reason.
/api/ needs the token (a foreign page cannot send it) and /health, /ready and /metrics serve machines
that may use any name, so those are not bound.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

from aiohttp import web

from edge.api.errors import Handler, error_response
from edge.log import Summarised

_MACHINE_PATHS = frozenset({"/health", "/ready", "/metrics"})
_EXAMPLES = 5  # names left out of the log that its next line shows; the rest are only counted


def _split_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8765
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostAllowList:
    def __init__(
        self, allowed: list[str], *, hostname: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        own = (hostname or socket.gethostname()).lower()
        names = {"localhost", own, f"{own}.local", *(a.lower() for a in allowed if not a.startswith("."))}
        self._names = frozenset(names)
        self._suffixes = tuple(a.lower() for a in allowed if a.startswith("."))
        # One kind for every name: a name is whatever a request says, and a new one each time was a line each.
        self._refusals = Summarised("host_not_allowed", clock=clock)
        self._left_out: list[str] = []  # a few of the names refused since the last line

    def allows(self, host: str) -> bool:
        name = _split_port(host.strip()).rstrip(".").lower()
        try:
            ipaddress.ip_address(name)  # an address is the box itself: no other page can stand behind it
            return True
        except ValueError:
            pass
        return name in self._names or name.endswith(self._suffixes) or name.endswith(".localhost")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None or request.path.startswith("/api/") or request.path in _MACHINE_PATHS or self.allows(host):
            return await handler(request)
        self._note_refused(host[:100], request)
        return error_response(
            403,
            "host_not_allowed",
            f"this page does not answer to the name {host[:100]!r}: open it by the box's IP address or hostname, "
            "or add the name to api.allowed_hosts",
        )

    def _note_refused(self, host: str, request: web.Request) -> None:
        if not self._refusals.due("host"):
            if len(self._left_out) < _EXAMPLES and host not in self._left_out:
                self._left_out.append(host)
            self._refusals.note("host")
            return
        others, self._left_out = self._left_out, []
        self._refusals.note(
            "host", host=host, path=request.path, remote=request.remote, **({"other_hosts": others} if others else {})
        )
