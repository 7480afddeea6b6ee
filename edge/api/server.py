"""The API's HTTP server: aiohttp behind a connection guard, so a flood of slow connections cannot starve real requests.

A slow-loris client needs no token: it opens connections and sends a request head that never ends. aiohttp has no
header timeout and keeps idle connections for an hour, and once the process runs out of file descriptors asyncio's
own accept loop logs every failed accept (Python 3.11 retries in a loop that multiplies: 800,000 lines in 75 s).
So the agent accepts connections itself, one at a time, and:
- closes a connection whose request head is not complete ``header_timeout_s`` after its first byte, or after the
  answer to the request it was pipelined behind (408), and one that sends nothing for ``idle_timeout_s`` (what
  nginx's client_header_timeout and keepalive_timeout do);
- holds at most ``max_connections``, lowered to what RLIMIT_NOFILE leaves room for, so accept never runs out of
  file descriptors. A connection beyond that pushes out one waiting without a request in progress, of the address
  holding the most connections (as nginx's limit_conn counts per address: a flood from one host, reconnecting as
  fast as it is pushed out, pushes out only its own, not a till's whose request is a moment behind its connection
  on a slow Wi-Fi); of those, first the one that has waited longest without ever completing a request (a slow-loris
  one), then the longest-idle keep-alive connection (a real client's pool). Only when every connection is busy
  with a request is the newcomer refused, with 503 at once;
- listens with a long kernel queue (it costs no file descriptors), so a real client's connection waits there for
  a moment instead of having its SYN dropped and retried a second later;
- logs what it shed as one summary line at most every 10 s, and an accept that fails for want of descriptors at
  most once per 10 s, never one line per connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import re
import resource
import socket
from collections.abc import Callable
from http import HTTPStatus

import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from edge.api.errors import (
    NO_FRAMING,
    Handler,
    UnsupportedEncodingError,
    error_response,
    unsupported_encoding_response,
)
from edge.clock import Clock
from edge.config import ApiSettings
from edge.log import Summarised

log = structlog.get_logger()

LISTEN_BACKLOG = 4096  # the kernel's queue (capped by net.core.somaxconn); queued connections use no fds of ours
FD_RESERVE = 64  # database and WAL files, printers, scanners, the central API client, SMTP, logs
_SWEEP_S = 0.25
_REPORT_S = 10.0
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY_BODY = b'{"error": "busy", "reason": "too many connections; retry later"}'
_NO_FRAMING_LINES = "".join(f"{name}: {value}\r\n" for name, value in NO_FRAMING.items()).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"%sContent-Length: %d\r\n\r\n%s" % (_NO_FRAMING_LINES, len(_BUSY_BODY), _BUSY_BODY)
)
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n%sContent-Length: 0\r\n\r\n" % _NO_FRAMING_LINES


def connection_cap(configured: int) -> tuple[int, int]:
    """(connections allowed, fd limit): the soft RLIMIT_NOFILE is raised to the hard one first (asyncio uses epoll,
    which has no FD_SETSIZE), then a reserve for everything else comes off it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(8, min(configured, soft - FD_RESERVE)), soft


_CODING_NAMED = re.compile(r"\((\w+)\)")  # aiohttp's "Can not decode content-encoding: brotli (br). ..."


class _JsonErrors(RequestHandler):
    """aiohttp's RequestHandler, whose own answers (a request head it refuses before any handler, the last resort for
    an exception) come in the API's JSON error shape, not text/plain with a caret drawing."""

    __slots__ = ()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # its log line, and its refusal once an answer started
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            answer = error_response(status, "internal", "internal error; see the agent log")
        elif isinstance(exc, ContentEncodingError):  # br or zstd, which aiohttp has no decoder for here
            coding = _CODING_NAMED.search(str(exc))
            answer = unsupported_encoding_response(str(UnsupportedEncodingError(coding[1] if coding else "?")))
        else:  # its first line names what is wrong; a caret drawing of the bytes follows
            reason = (message or HTTPStatus(status).phrase).split("\n", 1)[0].rstrip(": ")
            answer = error_response(status, "malformed_request", reason)
        answer.headers.update(NO_FRAMING)  # no app answers these: its on_response_prepare is not called
        answer.force_close()
        return answer


def _host_of(address: object) -> str:
    """The client's host from a socket address (IPv4 or IPv6 tuple; '' for anything else, a Unix socket)."""
    return str(address[0]) if isinstance(address, tuple) and address else ""


class _Connection(asyncio.Protocol):
    """Sits between the socket and aiohttp's RequestHandler and notes when the connection waits for a request."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], RequestHandler]) -> None:
        self._guard = guard
        self._factory = factory
        self.inner: RequestHandler | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = ""  # the client's address
        self.busy = 0  # requests in a handler right now
        self.request: web.Request | None = None  # the one in a handler, while there is one
        self.served = 0  # requests answered on this connection
        self.waiting_since = guard.now()
        self.head_started: float | None = None  # first byte of a request head not yet complete
        # Its last request ended with its body whole, so aiohttp's parser sits between requests, perhaps on the start
        # of a head pipelined behind it: bytes that came before the answer, which started no head clock here.
        self.pipelined_head_possible = False
        self.half_closed = False  # the client is done sending: nothing more comes after the answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _host_of(transport.get_extra_info("peername"))
        self.inner = self._factory()
        self.inner.__class__ = _JsonErrors  # aiohttp's handler, its refusals in our JSON (no state of its own)
        self.inner.connection_made(transport)
        self._guard.add(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_started is None:
            self.head_started = self._guard.now()
            self.pipelined_head_possible = False  # its clock runs from now, as any head's
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool:
        """The client is done sending. Idle, the connection closes now (nothing more can come); with a request on
        its way or in a handler, it stays open for the answer and closes after it: some senders close their side
        once the request is out (`nc -N`, socat, embedded stacks), and TCP still carries the answer back (asyncio
        closes the transport when this returns False, and the request lost its answer)."""
        if self.inner is None:
            return False
        self.inner.eof_received()
        if not self.busy and self.head_started is None:
            return False
        self.half_closed = True  # its answer closes the connection (see ConnectionGuard.middleware)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def holds_a_head(self) -> bool:
        """Whether aiohttp's parser holds the start of a request head. It cannot say without making a request of what
        it holds (feed_eof), which ends it: asked only when that head is out of time and the connection closes if so;
        between two requests, with nothing of a next one, feed_eof does nothing."""
        self.pipelined_head_possible = False
        parser = getattr(self.inner, "_parser", None)
        if parser is None:
            return False
        try:
            return parser.feed_eof() is not None
        except Exception:  # what it holds is no whole request (no Host yet, a name cut short): a head all the same
            return True

    def eviction_rank(self) -> tuple[bool, float]:
        """Lower goes first: connections that never completed a request before idle keep-alive ones (a real client's
        pooled connection), each the longest-waiting first; a newcomer's head is on its way, so it goes last."""
        return self.served > 0, self.waiting_since

    def receiving(self) -> bool:
        """In a handler that still waits for the rest of its request's body."""
        return self.request is not None and not self.request.content.is_eof()

    def shed(self, answer: bytes = b"", *, flush: bool = False) -> None:
        """Closes the connection: after ``answer`` (and whatever is written already, with ``flush``), else at once."""
        if self.transport is None or self.transport.is_closing():
            return
        if answer:
            self.transport.write(answer)
        if answer or flush:
            self.transport.close()
        else:
            self.transport.abort()


class ConnectionGuard:
    """Header and idle timeouts and the connection cap, on the agent's monotonic clock."""

    def __init__(self, *, cap: int, header_timeout_s: float, idle_timeout_s: float, clock: Clock) -> None:
        self.cap = cap
        self._header_timeout_s = header_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._open: dict[_Connection, None] = {}  # an insertion-ordered set
        self._by_handler: dict[RequestHandler, _Connection] = {}
        self._per_peer: collections.Counter[str] = collections.Counter()  # open connections per client address
        self.starting = 0  # accepted sockets whose transport is still being set up
        self.shed_counts = {"evicted": 0, "refused": 0, "header_timeout": 0, "idle_timeout": 0, "accept_failed": 0}
        self._reported = dict(self.shed_counts)
        self._next_report = 0.0

    def now(self) -> float:
        return self._clock.mono()

    @property
    def open(self) -> int:
        return len(self._open)

    def make_room(self, peer: str) -> bool:
        """Before accepting one more from ``peer``: at the cap, push out the best candidate; False when every
        connection is busy."""
        if len(self._open) + self.starting < self.cap:
            return True
        # A newcomer pushes out its own host's connections, or those of a host holding at least as many: a flood
        # pushes out only its own, never the till's one connection whose request is a moment behind it.
        held = self._per_peer[peer]
        waiting = [c for c in self._open if not c.busy and (c.peer == peer or self._per_peer[c.peer] >= held)]
        if not waiting:
            # A busy one whose handler still waits for its body, of a host holding more than the newcomer's does and
            # one more: a host that holds every connection with bodies it never finishes (a kiosk with the token gone
            # wrong) does not lock the till out; a host's own newcomer never pushes out its other requests.
            waiting = [c for c in self._open if c.receiving() and self._per_peer[c.peer] > held + 1]
        if not waiting:
            self.shed_counts["refused"] += 1
            return False
        victim = min(waiting, key=lambda c: (-self._per_peer[c.peer], c.eviction_rank()))
        self.shed_counts["evicted"] += 1
        self.forget(victim)
        # One with a request on its way (in part, or whole and not yet in a handler, or its body still coming) gets
        # the newcomer's 503, so its sender retries (nothing of it was taken); an idle one is closed: an answer it
        # never asked for would be read as its next request's.
        victim.shed(_BUSY if victim.head_started is not None or victim.busy else b"")
        return True

    def add(self, conn: _Connection) -> None:
        self._open[conn] = None
        self._per_peer[conn.peer] += 1
        if conn.inner is not None:
            self._by_handler[conn.inner] = conn

    def forget(self, conn: _Connection) -> None:
        if conn not in self._open:
            return
        del self._open[conn]
        self._per_peer[conn.peer] -= 1
        if not self._per_peer[conn.peer]:
            del self._per_peer[conn.peer]
        if conn.inner is not None:
            self._by_handler.pop(conn.inner, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled: a busy connection is never pushed out."""
        conn = self._by_handler.get(request.protocol) if isinstance(request.protocol, RequestHandler) else None
        if conn is None:
            return await handler(request)
        conn.busy += 1
        conn.head_started = None
        conn.pipelined_head_possible = False
        conn.request = request
        try:
            response = await handler(request)
            if conn.half_closed:  # aiohttp would keep it open after the answer, idle, until the idle timeout
                response.force_close()
            if response.status == 408:  # a trickled body: answer and close now, not after aiohttp's 10 s lingering
                await response.prepare(request)
                await response.write_eof()
                conn.shed(flush=True)
            return response
        finally:
            conn.busy -= 1
            conn.request = None
            conn.served += 1
            conn.waiting_since = self.now()
            # with a body left unread aiohttp drains it first (its lingering close), and the parser is not between
            # requests until it has
            conn.pipelined_head_possible = request.content.is_eof()

    async def sweep(self) -> None:
        """Every quarter second: time out slow heads and idle connections; now and then one summary line."""
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = self.now()
            for conn in list(self._open):
                if conn.busy:
                    continue
                if self._head_out_of_time(conn, now):
                    self.shed_counts["header_timeout"] += 1
                    self.forget(conn)
                    conn.shed(_TIMEOUT)
                elif conn.head_started is None and now - conn.waiting_since > self._idle_timeout_s:
                    self.shed_counts["idle_timeout"] += 1
                    self.forget(conn)
                    conn.shed()
            self.report(now)

    def _head_out_of_time(self, conn: _Connection, now: float) -> bool:
        if conn.head_started is not None:
            return now - conn.head_started > self._header_timeout_s
        # a head pipelined behind the last request: its time runs from that request's answer
        waited = now - conn.waiting_since
        return conn.pipelined_head_possible and waited > self._header_timeout_s and conn.holds_a_head()

    def report(self, now: float) -> None:
        if now < self._next_report or self.shed_counts == self._reported:
            return
        self._next_report = now + _REPORT_S
        shed = {k: v - self._reported[k] for k, v in self.shed_counts.items()}
        self._reported = dict(self.shed_counts)
        log.warning("api_connections_shed", **shed, open=len(self._open), cap=self.cap, per_s=_REPORT_S)


async def _listen(host: str, port: int) -> list[socket.socket]:
    """One listening socket per address ``host`` resolves to (as asyncio's create_server does), on one port."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets[0] is not sock:  # port 0: every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _ProtocolLines(logging.Handler):
    """aiohttp's own log (requests it refuses before any handler: a malformed head, a broken chunked body; a body it
    cannot decode, met again when it drains what the handler left) as our lines: a refused request is one summarised
    warning (each was an 11-line traceback, a flood of them a megabyte on the SD card); anything else keeps its
    traceback, in our format."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._refused = Summarised("api_bad_request")

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        # RequestPayloadError (a body labelled gzip that is not) is the sender's fault too, already answered 400
        if isinstance(error, (HttpProcessingError, RequestPayloadError)):
            self._refused.note(type(error).__name__, error=str(error)[:200])
        else:
            log.error("api_protocol_error", message=record.getMessage(), exc_info=record.exc_info)


_PROTOCOL_LOG = logging.getLogger("edge.api.protocol")
_PROTOCOL_LOG.propagate = False
_PROTOCOL_LOG.addHandler(_ProtocolLines())


class ApiServer:
    """aiohttp's AppRunner serving connections that our own accept loop hands it through the guard."""

    def __init__(self, app: web.Application, settings: ApiSettings, *, clock: Clock) -> None:
        self._settings = settings
        cap, self.fd_limit = connection_cap(settings.max_connections)
        self.guard = ConnectionGuard(
            cap=cap,
            header_timeout_s=settings.header_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            clock=clock,
        )
        self._clock = clock
        app.middlewares.insert(0, self.guard.middleware)
        # aiohttp's own keep-alive timer (default 3,630 s) closes an idle connection too; ours is the same length.
        self.runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=settings.idle_timeout_s,
            logger=_PROTOCOL_LOG,
            auto_decompress=False,  # read_body undoes every coding itself, strictly (see errors._codings_to_undo)
        )
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak ones)
        self._next_accept_log = 0.0

    async def start(self) -> int:
        """Listens and returns the port."""
        await self.runner.setup()
        self._sockets = await _listen(self._settings.host, self._settings.port)
        self._tasks = [asyncio.create_task(self._accept(s), name="api-accept") for s in self._sockets]
        self._tasks.append(asyncio.create_task(self.guard.sweep(), name="api-connection-guard"))
        log.info(
            "api_connection_limits",
            max_connections=self.guard.cap,
            fd_limit=self.fd_limit,
            header_timeout_s=self._settings.header_timeout_s,
            body_timeout_s=self._settings.body_timeout_s,
            idle_timeout_s=self._settings.idle_timeout_s,
        )
        port: int = self._sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (aiohttp's shutdown), stop the guard."""
        tasks = [*self._tasks, *self._starting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        await self.runner.cleanup()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = self.runner.server
        assert server is not None
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as err:
                if err.errno not in _OUT_OF_FDS:
                    continue  # the peer gave up before we took it (ECONNABORTED and the like)
                self._accept_failed(err)
                await asyncio.sleep(0.1)  # the descriptors come back as connections close
                continue
            if not self.guard.make_room(_host_of(address)):
                with contextlib.suppress(OSError):
                    sock.send(_BUSY)
                sock.close()
            else:  # set up beside the next accept, as asyncio's own server does
                self.guard.starting += 1
                task = asyncio.create_task(self._connect(sock, server))
                self._starting.add(task)
                task.add_done_callback(self._started)
            # sock_accept returns at once while the queue is full: let the loop run (and close the pushed-out socket)
            await asyncio.sleep(0)

    async def _connect(self, sock: socket.socket, server: web.Server) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: _Connection(self.guard, server), sock)
        except OSError:
            sock.close()

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        self.guard.starting -= 1

    def _accept_failed(self, err: OSError) -> None:
        self.guard.shed_counts["accept_failed"] += 1
        now = self._clock.mono()
        if now >= self._next_accept_log:
            self._next_accept_log = now + _REPORT_S
            log.error(
                "api_accept_failed",
                error=str(err),
                open=self.guard.open,
                hint="out of file descriptors: raise LimitNOFILE or lower api.max_connections",
            )
