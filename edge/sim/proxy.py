"""A simulated forward proxy on loopback, the way a store network's outbound proxy (Squid, a firewall's web proxy)
serves a box that may not reach the internet itself.

Modelled on RFC 9110 and Squid, not on what our client sends:
- names are resolved by the proxy, not the box: ``routes`` maps the names it knows to loopback addresses, and a
  name it cannot resolve gets 502 (Squid's ``ERR_DNS_FAIL`` answers 503; both mean "not through me");
- ``https://`` goes through a ``CONNECT host:port`` tunnel (RFC 9110 9.3.6), ``http://`` as a request in absolute
  form (RFC 9112 3.2.2) that the proxy sends on in origin form, without the ``Proxy-*`` headers;
- with ``user`` set, a request without the right ``Proxy-Authorization: Basic`` gets 407 with
  ``Proxy-Authenticate`` (RFC 9110 11.7) and nothing goes on.
One simplification: each forwarded http request gets a connection of its own (``Connection: close``), as a proxy
may do; tunnels stay open as long as both ends keep them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

from edge.sim.ports import free_port

_HEAD_LIMIT = 16384


class ProxySim:
    def __init__(self, routes: dict[str, tuple[str, int]], *, user: str = "", password: str = "") -> None:
        self.routes = routes
        self.user, self.password = user, password
        self.port = free_port()
        self.tunnels: list[str] = []  # host:port of every CONNECT let through
        self.connect_heads: list[str] = []  # every CONNECT request's head as received: all a proxy sees of https
        self.forwarded: list[str] = []  # request lines of every http request sent on (absolute form, as received)
        self.refused: list[str] = []  # request lines answered 407
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._open.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEAD_LIMIT:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, version = request_line.split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
        if method == "CONNECT":
            self.connect_heads.append(head.decode("latin-1"))
        if self.user and not self._authorized(headers):
            self.refused.append(request_line)
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="store"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
            )
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        elif target.startswith("http://"):
            authority, _, path = target[len("http://") :].partition("/")
            host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        else:  # origin form: someone took the proxy for a server
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        address = self.routes.get(f"{host}:{port}") or self.routes.get(host)
        if address is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*address)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        try:
            if method == "CONNECT":
                self.tunnels.append(target)
                writer.write(f"{version} 200 Connection established\r\n\r\n".encode("latin-1"))
                await writer.drain()
            else:
                self.forwarded.append(request_line)
                kept = [
                    f"{name}: {value}"
                    for name, value in headers
                    if not name.lower().startswith("proxy-") and name.lower() != "connection"
                ]
                origin = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""])
                up_writer.write(origin.encode("latin-1"))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    def _authorized(self, headers: list[tuple[str, ...]]) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return any(name.lower() == "proxy-authorization" and value == expected for name, value in headers)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes one way until the source ends; then the sink's write side ends too (half close, as a proxy does)."""
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
