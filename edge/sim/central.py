"""A simulated central API (aiohttp on loopback): the strictest backend docs/central-api.md allows, with fault modes.

It is modelled on what a real backend behind a gateway does, not on what our client expects:
- cursors are opaque, signed positions in a change log (the pattern of Stripe's ``starting_after`` and Google's
  AIP-158 ``page_token``): a cursor it did not issue, one of another store, or one from before a restore is a 400;
- a page is one bounded scan of the change log (AIP-158: "a page may hold fewer results than asked for, even
  none, while more follow"), so superseded versions make short and empty pages with ``has_more`` true;
- change times have one-second resolution (a SQL ``DATETIME``), so ties are common; the cursor is never a time;
- an idempotency key reused with another body is refused (the IETF draft "The Idempotency-Key HTTP Header
  Field", section 2.7: 422), and with ``in_progress_conflicts`` one whose first request is still being
  processed too (the same section: 409, "retry later"; Stripe answers so); events are validated (type, time, the
  order belongs to the store), a batch is applied whole or not at all, and size limits answer 413 as a gateway does
  (aiohttp's ``client_max_size``);
- a gateway's rate limit (``capacity_rps``) answers 429 with Retry-After (RFC 6585 section 4, RFC 9110 10.2.3), and
  its body limit (``gateway_max_body``, nginx's ``client_max_body_size``) 413 with its own HTML page.
Fault modes: error statuses with Retry-After, latency, slow-drip and truncated bodies, a cut line, a slow line (every
answer's bytes at so many a second), and (to test the agent's defences) the broken timestamp cursors a naive backend
hands out.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import email.utils
import hashlib
import hmac
import json
import math
import secrets
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from aiohttp import web

from edge.sim.orders import make_order
from edge.sim.ports import PortHold

log = structlog.get_logger()
# Central runs on another machine, so its clock is not the box's: it dates its answers (the Date header every HTTP
# server with a clock sends, RFC 9110 6.6.1) by the real time plus its clock_offset_s, even while a test steps the
# box's clock by patching time.time().
_OWN_CLOCK = time.time

EVENT_TYPES = ("received", "printed", "failed", "ready", "fulfilled", "updated", "cancelled")
MAX_PAGE = 1000  # orders per page (limit)
MAX_EVENTS = 500  # events per POST
MAX_BODY = 1024 * 1024  # bytes per request body
# What nginx answers for a body over its client_max_body_size: HTML, none of the contract's JSON.
_NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_NGINX_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# The IETF draft "The Idempotency-Key HTTP Header Field", section 2.7's example of a key still being processed
_DRAFT_IN_PROGRESS = {
    "type": "https://developer.example.com/idempotency",
    "title": "A request is outstanding for this Idempotency-Key",
    "detail": "A request with the same Idempotency-Key for the same operation is being processed or is outstanding.",
}
# The refusals that say "this event, never": the only answers an agent may mark an event rejected for.
PERMANENT_ERRORS = ("invalid_event", "unknown_order", "idempotency_key_reused")

CursorMode = Literal["position", "timestamp_inclusive", "timestamp_exclusive"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class _Fault:
    """One planned misbehaviour for the next matching API call."""

    kind: Literal["status", "drip", "truncate"]
    path: str | None  # "orders", "events" or None for any API call; "health" for the probe (faulted only so)
    status: int = 500
    retry_after: float | None = None
    retry_after_as_date: bool = False  # Retry-After as an HTTP date on central's clock, not in seconds
    body: Any = None  # JSON to answer instead of the simulated error; bytes: sent as they are, as content_type
    content_type: str = "application/octet-stream"
    chunk: int = 64  # drip: bytes per write
    interval_s: float = 0.1  # drip: pause between writes
    after: int = 0  # matching calls answered normally before this one misbehaves

    def matches(self, path: str) -> bool:
        return self.path is None or path.endswith("/" + self.path)


@dataclasses.dataclass
class StoreState:
    """Everything the backend holds for one store."""

    store_id: str
    orders: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    latest: dict[str, int] = dataclasses.field(default_factory=dict)  # order id -> log position of its newest version
    log: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (change second, order id), append-only
    events: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # accepted, by key, first copy
    duplicates: list[str] = dataclasses.field(default_factory=list)  # keys re-sent after they were accepted
    posted: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # every key answered
    reject_keys: set[str] = dataclasses.field(default_factory=set)
    reject_types: set[str] = dataclasses.field(default_factory=set)
    refused_orders: dict[str, int] = dataclasses.field(default_factory=dict)  # order id -> status its events get
    resent: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # log position -> old version listed
    in_progress: set[str] = dataclasses.field(default_factory=set)  # keys of events POSTs being processed now
    # Orders central cancelled itself (cancel_orders) -> the event of the order it cancels once taken (None: at once)
    cancels: dict[str, str | None] = dataclasses.field(default_factory=dict)


class CentralSim:
    """Implements docs/central-api.md for one store (more with ``add_store``). Every knob applies from the next request.

    ``set_up(False)`` is the line cut: the port stops listening and open keep-alive connections are dropped.
    ``strict=False`` accepts events for orders it does not know (a store whose orders come from elsewhere).
    ``tls`` serves HTTPS with that server context, as a real backend does; changing it takes effect at the next
    ``set_up(True)`` (a backend whose certificate was renewed, or replaced by one the box does not trust).
    """

    def __init__(
        self,
        store_id: str,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store_id = store_id
        self.tls = tls
        self.token = token
        self.host = host
        self.port = port
        self.strict = strict
        self.latency_s = 0.0  # added to every answer
        self.clock_offset_s = 0.0  # central's clock against the real time (a backend whose clock is off)
        # Answers served by a cache in front of central, made this long ago: dated then, with Age (RFC 9111 5.1).
        self.cached_for_s = 0
        self.health_latency_s = 0.0  # added to health answers only (a slow dependency check behind /v1/health)
        # Added to an events POST per event in it: a backend that writes each one (a big backlog's batch takes long)
        self.event_latency_s = 0.0
        # A key of an events POST still being processed, sent again meanwhile, is answered 409 {"error":
        # "request_in_progress"}: the IETF draft "The Idempotency-Key HTTP Header Field", section 2.7 (a request
        # retried while the first with its key is outstanding), as Stripe answers; False: the copy is processed too.
        self.in_progress_conflicts = False
        # How that 409 is written: "code" as above; "problem": as the draft's own example, application/problem+json
        # with a type, a title and a detail, no code the agent knows
        self.in_progress_style = "code"
        # A backend that keeps each order's state: once it took an order's `cancelled`, a new event of the order (a
        # later `printed` of its STORNO, say) goes backwards and its batch is answered 409 {"error": "order_cancelled"}
        self.order_states = False
        self._gateway_timeouts: collections.deque[float] = collections.deque()  # see gateway_timeouts_next
        self._background: set[asyncio.Task[web.Response]] = set()
        # Every JSON answer starts with a UTF-8 byte order mark, as some Windows and old ASP.NET stacks write it
        # (RFC 8259 8.1: a sender must not add one; a reader may ignore it)
        self.bom = False
        self._events_delays: collections.deque[float] = collections.deque()  # see slow_next_events
        # The last page's next_cursor is null (has_more false), a common API style the contract does not use
        self.null_last_cursor = False
        # No has_more: the listing ends when the cursor comes back empty (Slack's and many others' style), which the
        # contract does not use
        self.empty_cursor_ends = False
        # has_more for ever, each page empty under a new cursor: a backend whose filter drops every order while its
        # cursor still moves (the central probe of stop 68 met one that never ended)
        self.endless_listing = False
        # Text replacements made in each page of orders as written: a backend whose serializer writes what Python's
        # json cannot be made to (a key twice in one object)
        self.page_edits: list[tuple[str, str]] = []
        # Zero counts left out of the events answer ({"accepted": 3}): a backend serialised with protojson
        # (grpc-gateway) omits fields at their default unless told otherwise; the contract says both
        self.omit_zero_counts = False
        # The events side learns of an order this long after it was added (a read replica behind the order service,
        # a queue between them): its events are answered 422 unknown_order meanwhile.
        self.events_lag_s = 0.0
        self._known_at: dict[str, float] = {}  # order id -> monotonic time the events side knows it from
        # How the counts are written: "int" (the contract), "string" (protojson writes int64 fields as strings,
        # {"accepted": "3"}), "float" (a backend that counts in floats, 3.0)
        self.count_style: Literal["int", "string", "float"] = "int"
        # Down for maintenance: every request, health included, answered 503 with this Retry-After (seconds), as a
        # gateway in front of a backend being upgraded does (RFC 9110 15.6.4); None: serving.
        self.maintenance_retry_after: float | None = None
        # The shop line's speed towards the box, in bytes a second (None: loopback's): every answer's body arrives at
        # this rate, as over a 512 kbit/s ADSL line or LTE fallback (64,000) from a backend that does not gzip.
        self.line_bytes_per_s: float | None = None
        self._capacity_rps: float | None = None
        # A reverse proxy in front of central with a smaller body limit than central's own (nginx's
        # client_max_body_size, 1 MiB by default and often set lower): a request whose body is longer is answered 413
        # with the proxy's HTML page before central sees it (None: no such limit).
        self.gateway_max_body: int | None = None
        self.gateway_refused: list[int] = []  # the body sizes (bytes) it answered 413 for
        # A backend that closes a kept-alive connection this long after its last answer, as Node's http server does
        # (server.keepAliveTimeout, 5 s by default; gunicorn's keepalive, 2 s): a request that goes out on it as the
        # close comes the other way gets no answer and finds the connection gone. Modelled as that race, every time:
        # a request on a connection idle this long is dropped unanswered (None: aiohttp's own 75 s, no test's wait).
        self.idle_close_s: float | None = None
        self.closed_idle = 0  # requests dropped so
        self._answered_at: weakref.WeakKeyDictionary[asyncio.Transport, float] = weakref.WeakKeyDictionary()
        self.cursor_mode: CursorMode = "position"  # the other two are the broken cursors the contract forbids
        self.up_at: float | None = None  # time.time() of the last set_up(True)
        self.requests: list[tuple[float, str, str, int]] = []  # (monotonic time, method, path, status) answered
        self.list_limits: list[int] = []  # the limit of each list request, in order (what a run asked for)
        self.stores: dict[str, StoreState] = {store_id: StoreState(store_id)}
        self._owner: dict[str, str] = {}  # order id -> store id
        self._faults: collections.deque[_Fault] = collections.deque()
        self._secret = secrets.token_bytes(16)
        self._epoch = secrets.token_hex(4)  # a new one after a restore: older cursors are refused
        self._expired_status = 400  # what refuses them (restore_backup)
        self._bucket = 0.0
        self._bucket_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = PortHold()  # the port, while the line is cut
        self.up = False

    @property
    def capacity_rps(self) -> float | None:
        """A gateway's limit over every request (a token bucket with a one-second burst); beyond it 429."""
        return self._capacity_rps

    @capacity_rps.setter
    def capacity_rps(self, rps: float | None) -> None:
        self._capacity_rps = rps
        self._bucket, self._bucket_at = (rps or 0.0), time.monotonic()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # The first store's state, as the single-store tests read it.
    @property
    def events(self) -> dict[str, dict[str, Any]]:
        return self.stores[self.store_id].events

    @property
    def duplicates(self) -> list[str]:
        return self.stores[self.store_id].duplicates

    @property
    def posted(self) -> collections.Counter[str]:
        return self.stores[self.store_id].posted

    # --- control ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        app.router.add_get("/v1/health", self._health)
        app.router.add_get("/v1/stores/{store_id}/orders", self._list_orders)
        app.router.add_post("/v1/stores/{store_id}/events", self._post_events)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.set_up(True)

    async def stop(self) -> None:
        self.up = False
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self._port.release()

    async def set_up(self, up: bool) -> None:
        """Line back (listen again on the same port) or line cut (stop listening, drop open connections; the port
        stays ours meanwhile, so no other test's server answers the agent on it)."""
        assert self._runner is not None, "start() first"
        if up and self._site is None:
            self._site = web.TCPSite(
                self._runner, self.host, self.port, ssl_context=self.tls, reuse_address=True, backlog=1024
            )
            await self._site.start()
            self._port.release()
            self.port = self._runner.addresses[0][1]
            self.up, self.up_at = True, time.time()
            log.info("central_sim_up", url=self.url)
        elif not up and self._site is not None:
            self.up = False
            await self._site.stop()
            self._site = None
            self._port.hold(self.host, self.port)
            log.info("central_sim_down", url=self.url)

    def add_store(self, store_id: str) -> StoreState:
        return self.stores.setdefault(store_id, StoreState(store_id))

    def restore_backup(self, *, status: int = 400) -> None:
        """The backend's database was restored (or reset): every cursor handed out before is refused, with 400 as the
        contract says, or 410 Gone as sync APIs answer a sync token they expired (Google Calendar's, Microsoft Graph's
        delta links)."""
        self._epoch = secrets.token_hex(4)
        self._expired_status = status

    def fail_next(
        self,
        count: int,
        status: int = 500,
        *,
        retry_after: float | None = None,
        retry_after_as_date: bool = False,
        body: Any = None,
        path: str | None = None,
        after: int = 0,
        content_type: str = "application/octet-stream",
    ) -> None:
        """The next ``count`` API calls (not health unless ``path`` is "health"; only ``path`` "orders" or "events" if
        given), once ``after`` more of them were answered normally, answer ``status``, with Retry-After if given
        (seconds, or that much later as an HTTP date on central's clock) and ``body`` instead of a simulated error if
        given (JSON; a str is sent as HTML: with 200, a captive portal's page, or JSON cut off; bytes as they are, as
        ``content_type``: a gateway's page in Latin-1 labelled UTF-8, a charset nobody knows)."""
        fault = _Fault("status", path, status, retry_after, retry_after_as_date, body, content_type, after=after)
        self._faults.extend([fault] * count)

    def clear_faults(self) -> None:
        """Forget every planned fault: the next calls are answered normally."""
        self._faults.clear()

    def drip_next(self, count: int, *, chunk: int = 64, interval_s: float = 0.1, path: str | None = None) -> None:
        """The next ``count`` API calls answer normally, but the body trickles: ``chunk`` bytes per ``interval_s``."""
        self._faults.extend([_Fault("drip", path, chunk=chunk, interval_s=interval_s)] * count)

    def slow_next_events(self, count: int, seconds: float) -> None:
        """The next ``count`` events POSTs are applied and answered only after ``seconds`` (a backend busy for a
        moment): one the box gave up waiting for is applied all the same."""
        self._events_delays.extend([seconds] * count)

    def gateway_timeouts_next(self, count: int, *, apply_after_s: float) -> None:
        """The next ``count`` events POSTs reach central, which applies them ``apply_after_s`` later; the gateway in
        front (nginx's proxy_read_timeout, an API gateway's 29 s) gives up first and answers 504 with its own page."""
        self._gateway_timeouts.extend([apply_after_s] * count)

    def truncate_next(self, count: int, *, path: str | None = None) -> None:
        """The next ``count`` API calls are answered (and applied), but the connection closes halfway through."""
        self._faults.extend([_Fault("truncate", path)] * count)

    def reject_events(
        self, *, keys: set[str] | None = None, types: set[str] | None = None, store: str | None = None
    ) -> None:
        """From the next POST on, a batch holding one of these keys or event types is refused whole with 422."""
        state = self.stores[store or self.store_id]
        state.reject_keys |= keys or set()
        state.reject_types |= types or set()

    def refuse_orders(self, order_ids: set[str], *, status: int = 410, store: str | None = None) -> None:
        """From the next POST on, a batch holding an event of one of these orders is refused whole with ``status``, as a
        backend answers for an order it archived or deleted: 410 or 409 ``{"error": "order_gone"}``, 422 as a web
        framework's validation error (``{"detail": [...]}``, none of the contract's codes). Nothing of it is applied.
        With 200, the batch's other events are taken and the answer's counts leave these out, naming them in a
        ``rejected`` list (a common API style the contract does not use)."""
        self.stores[store or self.store_id].refused_orders |= dict.fromkeys(order_ids, status)

    def accept_orders(self, order_ids: set[str], *, store: str | None = None) -> None:
        """The refusal of ``refuse_orders`` lifted (the order restored at central): their events are taken again."""
        for order_id in order_ids:
            self.stores[store or self.store_id].refused_orders.pop(order_id, None)

    def events_side_catches_up(self) -> None:
        """The events side (behind by ``events_lag_s``, a replica back up) knows every order added so far, now."""
        now = time.monotonic()
        self._known_at = {order_id: min(at, now) for order_id, at in self._known_at.items()}

    def cancel_orders(self, order_ids: set[str], *, after: str | None = None, store: str | None = None) -> None:
        """Central cancels these orders itself (a guest cancelled in the app, the box not told yet): at once or, with
        ``after``, as soon as it has taken that event of the order (``"received"``: the guest cancels just after the
        box said it has the order). From then on a new event of one of them but a ``cancelled`` is answered 409
        ``order_cancelled``, as under ``order_states`` after the box's own ``cancelled``; nothing of its batch is
        applied."""
        self.stores[store or self.store_id].cancels |= dict.fromkeys(order_ids, after)

    def add_orders(
        self, orders: list[dict[str, Any]], *, store: str | None = None, changed_at: int | None = None
    ) -> None:
        """Orders created (or changed) at the backend for a store; each becomes visible after the current cursor.

        ``changed_at`` (unix seconds) sets the change time, e.g. to make several changes share one second."""
        state = self.stores[store or self.store_id]
        second = int(time.time()) if changed_at is None else changed_at
        for order in orders:
            self._owner[order["id"]] = state.store_id
            self._known_at.setdefault(order["id"], time.monotonic() + self.events_lag_s)
            state.orders[order["id"]] = order
            state.latest[order["id"]] = len(state.log)
            state.log.append((second, order["id"]))

    def resend(self, order: dict[str, Any], *, store: str | None = None) -> None:
        """An old version of an order listed again after its newer one, as it is (the contract says each order comes in
        its latest version, but a change log that keeps old versions, app servers whose clocks disagree, or a job that
        re-sends orders lists one out of turn). The order's latest version stays what it was."""
        state = self.stores[store or self.store_id]
        state.resent[len(state.log)] = order
        state.log.append((int(time.time()), order["id"]))

    def create_orders(
        self, count: int, *, prefix: str, start: int = 1, store: str | None = None
    ) -> list[dict[str, Any]]:
        """``count`` ready-made orders with their own ids and numbers, added and returned."""
        orders = [
            make_order(n, prefix=prefix, print_receipt=n % 4 == 0, bar=n % 5 == 0) for n in range(start, start + count)
        ]
        self.add_orders(orders, store=store)
        return orders

    def events_of(self, kind: str, store: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.stores[store or self.store_id].events.values() if e.get("event") == kind]

    def statuses(self) -> list[int]:
        return [status for *_, status in self.requests]

    def max_requests_in(self, window_s: float = 1.0) -> int:
        """The most requests answered within any half-open window [t, t + window_s) (sliding), to check a rate limit."""
        times = sorted(t for t, *_ in self.requests)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    def mean_rate(self) -> float:
        """Requests per second between the first and the last answered request."""
        times = sorted(t for t, *_ in self.requests)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    async def wait_for(self, check: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109 (tests' helper)
        """Poll ``check`` (state of this simulator or of an agent's database) until true."""
        async with asyncio.timeout(timeout):
            while not check():  # noqa: ASYNC110 (what is checked has no event to wait on)
                await asyncio.sleep(0.02)

    # --- cursors ------------------------------------------------------------------------------

    def _cursor(self, store_id: str, position: int) -> str:
        data = base64.urlsafe_b64encode(
            json.dumps({"s": store_id, "e": self._epoch, "p": position}, separators=(",", ":")).encode()
        ).decode()
        return f"{data}.{hmac.new(self._secret, data.encode(), hashlib.sha256).hexdigest()[:32]}"

    def _position(self, store_id: str, cursor: str) -> int | web.Response:
        """The log position a cursor stands for, or the 400 that says why it is not one."""
        data, _, signature = cursor.partition(".")
        expected = hmac.new(self._secret, data.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _error(400, "invalid_cursor", f"since is not a cursor this API issued: {cursor[:40]!r}")
        fields = json.loads(base64.urlsafe_b64decode(data))
        if fields["s"] != store_id:
            return _error(400, "invalid_cursor", f"since is a cursor of another store ({fields['s']!r})")
        if fields["e"] != self._epoch:
            return _error(
                self._expired_status,
                "cursor_expired",
                "since was issued before the backend's data was restored; list from the start",
            )
        return int(fields["p"])

    # --- the API ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.transport is not None and (not self.up or self._idled_out(request.transport)):
            # A keep-alive connection from before the cut (gone, as on a dead line) or one this backend closed for
            # idling: no answer, the connection reset.
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        response = await self._answer(request, handler)
        dated = _OWN_CLOCK() + self.clock_offset_s - self.cached_for_s
        response.headers["Date"] = email.utils.formatdate(dated, usegmt=True)
        if self.cached_for_s:
            response.headers["Age"] = str(self.cached_for_s)
        self.requests.append((time.monotonic(), request.method, request.path, response.status))
        if request.transport is not None:
            self._answered_at[request.transport] = time.monotonic()
        if self.bom and isinstance(response, web.Response) and response.content_type.endswith("json"):
            response.body = b"\xef\xbb\xbf" + bytes(response.body or b"")  # type: ignore[arg-type]
        if self.line_bytes_per_s and isinstance(response, web.Response) and response.body:
            # Twenty writes a second, each what the line carries in a twentieth of one.
            chunk = max(1, int(self.line_bytes_per_s / 20))
            return await _trickle(request, response, chunk=chunk, interval_s=0.05)
        return response

    def _idled_out(self, transport: asyncio.Transport) -> bool:
        """Whether this request came on a connection the backend closed for idling (``idle_close_s``); counted."""
        answered = self._answered_at.get(transport)
        if answered is None or self.idle_close_s is None or time.monotonic() - answered < self.idle_close_s:
            return False
        self.closed_idle += 1
        return True

    def _over_capacity(self) -> float | None:
        """Seconds until the gateway takes another request, None while it has room (a token bucket, 1 s burst)."""
        rps = self._capacity_rps
        if rps is None:
            return None
        now = time.monotonic()
        self._bucket = min(rps, self._bucket + (now - self._bucket_at) * rps)
        self._bucket_at = now
        if self._bucket >= 1.0:
            self._bucket -= 1.0
            return None
        return (1.0 - self._bucket) / rps

    async def _over_gateway_limit(self, request: web.Request) -> web.Response | None:
        """The proxy's 413 for a body over ``gateway_max_body``, as nginx answers it; None for one it lets through."""
        if self.gateway_max_body is None or not request.body_exists:
            return None
        size = request.content_length
        if size is None:  # chunked: the proxy counts what arrives
            try:
                size = len(await request.read())
            except web.HTTPRequestEntityTooLarge:
                size = MAX_BODY + 1
        if size <= self.gateway_max_body:
            return None
        self.gateway_refused.append(size)
        return web.Response(text=_NGINX_413, status=413, content_type="text/html")

    def _retry_after(self, seconds: float, *, as_date: bool) -> dict[str, str]:
        """The header either way RFC 9110 10.2.3 allows: a delay, or a date on this server's own clock."""
        if as_date:
            return {"Retry-After": email.utils.formatdate(_OWN_CLOCK() + self.clock_offset_s + seconds, usegmt=True)}
        return {"Retry-After": f"{seconds:g}"}

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (refused := await self._over_gateway_limit(request)) is not None:
            return refused
        if self.maintenance_retry_after is not None:
            later = self._retry_after(self.maintenance_retry_after, as_date=False)
            return web.json_response({"error": "maintenance", "reason": "back soon"}, status=503, headers=later)
        if (wait := self._over_capacity()) is not None:
            return _error(429, "rate_limited", "too many requests", retry_after=max(1, math.ceil(wait)))
        health = request.path == "/v1/health"
        if not health and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "missing or wrong bearer token")
        if not health and request.match_info.get("store_id") not in self.stores:
            return _error(404, "unknown_store", f"no store {request.match_info.get('store_id')!r} here")
        fault = next((f for f in self._faults if f.matches(request.path) and (f.path == "health") == health), None)
        if fault is None:
            return await handler(request)
        if fault.after:
            fault.after -= 1
            return await handler(request)
        self._faults.remove(fault)
        if fault.kind == "status":
            headers: dict[str, str] | None = None
            if fault.retry_after is not None:
                headers = self._retry_after(fault.retry_after, as_date=fault.retry_after_as_date)
            if isinstance(fault.body, bytes):
                return web.Response(
                    body=fault.body,
                    status=fault.status,
                    headers={**(headers or {}), "Content-Type": fault.content_type},
                )
            if isinstance(fault.body, str):  # a proxy's or gateway's page, not the backend's JSON
                return web.Response(text=fault.body, status=fault.status, headers=headers, content_type="text/html")
            body = fault.body if fault.body is not None else {"error": "simulated", "reason": f"HTTP {fault.status}"}
            return web.json_response(body, status=fault.status, headers=headers)
        response = await handler(request)
        assert isinstance(response, web.Response) and response.body is not None
        return await _deliver_badly(request, response, fault)

    async def _health(self, request: web.Request) -> web.Response:
        if self.health_latency_s:
            await asyncio.sleep(self.health_latency_s)
        return web.json_response({"status": "ok"})

    async def _list_orders(self, request: web.Request) -> web.Response:
        state = self.stores[request.match_info["store_id"]]
        since, limit_raw = request.query.get("since", ""), request.query.get("limit", "100")
        if not (limit_raw.isascii() and limit_raw.isdigit()) or not 1 <= int(limit_raw) <= MAX_PAGE:
            return _error(400, "invalid_limit", f"limit must be between 1 and {MAX_PAGE}")
        limit = int(limit_raw)
        self.list_limits.append(limit)
        if self.endless_listing:
            return web.json_response({"orders": [], "next_cursor": secrets.token_hex(8), "has_more": True})
        if self.cursor_mode != "position":
            return self._list_by_time(state, since, limit)
        position = self._position(state.store_id, since) if since else 0
        if isinstance(position, web.Response):
            return position
        if position > len(state.log):
            return _error(400, "invalid_cursor", "since points past the end of this store's changes")
        # One bounded scan: `limit` log entries, of which superseded versions are left out.
        end = min(position + limit, len(state.log))
        page = [
            state.resent.get(n) or state.orders[oid]
            for n, (_, oid) in enumerate(state.log[position:end], position)
            if state.latest[oid] == n or n in state.resent
        ]
        more = end < len(state.log)
        cursor = None if self.null_last_cursor and not more else self._cursor(state.store_id, end)
        ends = (
            {"next_cursor": cursor if more else ""}
            if self.empty_cursor_ends
            else {"next_cursor": cursor, "has_more": more}
        )
        text = json.dumps({"orders": page, **ends})
        for old, new in self.page_edits:
            text = text.replace(old, new)
        return web.Response(text=text, content_type="application/json")

    def _list_by_time(self, state: StoreState, since: str, limit: int) -> web.Response:
        """The cursor the contract forbids: the last change's second, inclusive (repeats) or exclusive (skips)."""
        after = int(since) if since.isdigit() else -1
        inclusive = self.cursor_mode == "timestamp_inclusive"
        changes = sorted(
            (second, oid)
            for n, (second, oid) in enumerate(state.log)
            if state.latest[oid] == n and (second >= after if inclusive else second > after)
        )
        page = changes[:limit]
        cursor = str(page[-1][0]) if page else since
        more = len(changes) > limit
        ends = (
            {"next_cursor": cursor if more else ""}
            if self.empty_cursor_ends
            else {"next_cursor": cursor, "has_more": more}
        )
        return web.json_response({"orders": [state.orders[oid] for _, oid in page], **ends})

    async def _post_events(self, request: web.Request) -> web.Response:
        state = self.stores[request.match_info["store_id"]]
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "body_too_large", f"a request body may hold at most {MAX_BODY} bytes")
        except ValueError:
            return _error(400, "malformed_request", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _error(400, "malformed_request", 'body must be {"events": [...]}')
        if len(events) > MAX_EVENTS:
            return _error(413, "batch_too_large", f"at most {MAX_EVENTS} events per request, got {len(events)}")
        keys = {e["idempotency_key"] for e in events if _has_key(e)}
        if self.in_progress_conflicts and keys & state.in_progress:
            if self.in_progress_style == "problem":
                return web.json_response(_DRAFT_IN_PROGRESS, status=409, content_type="application/problem+json")
            return _error(
                409, "request_in_progress", "a request with one of these idempotency keys is still being processed"
            )
        state.in_progress |= keys
        if self._gateway_timeouts:
            task = asyncio.create_task(self._apply_after(state, events, keys, self._gateway_timeouts.popleft()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return web.Response(text=_NGINX_504, status=504, content_type="text/html")
        delay = self.event_latency_s * len(events) + (self._events_delays.popleft() if self._events_delays else 0)
        return await self._apply_after(state, events, keys, delay)

    async def _apply_after(self, state: StoreState, events: list[Any], keys: set[str], seconds: float) -> web.Response:
        """The batch applied ``seconds`` from now, its keys in progress meanwhile."""
        try:
            if seconds:
                await asyncio.sleep(seconds)
            return self._apply_events(state, events)
        finally:
            state.in_progress -= keys

    def _apply_events(self, state: StoreState, events: list[Any]) -> web.Response:
        """The batch validated and applied whole, or refused whole; the contract's answer either way."""
        for n, event in enumerate(events):
            if problem := self._check_event(state, event):
                error, reason = problem
                key = event.get("idempotency_key") if isinstance(event, dict) else None
                state.posted.update(e["idempotency_key"] for e in events if _has_key(e))
                return _refusal(error, f"events[{n}]: {reason}; nothing in this batch was applied", n, key)
        state.posted.update(e["idempotency_key"] for e in events)
        for n, event in enumerate(events):
            if (status := state.refused_orders.get(event["order_id"])) not in (None, 200):
                return _order_gone(status, event["order_id"], n)
        for n, event in enumerate(events):
            if event["idempotency_key"] in state.reject_keys or event["event"] in state.reject_types:
                return _refusal(
                    "invalid_event",
                    f"events[{n}] ({event['idempotency_key']}) is not accepted; nothing in this batch was applied",
                    n,
                    event["idempotency_key"],
                )
        if (self.order_states or state.cancels) and (refusal := _after_cancel(state, events, self.order_states)):
            return refusal
        accepted, rejected = 0, []
        for event in events:
            if state.refused_orders.get(event["order_id"]) == 200:
                rejected.append({"idempotency_key": event["idempotency_key"], "error": "order_gone"})
                continue
            if event["idempotency_key"] in state.events:
                state.duplicates.append(event["idempotency_key"])
                continue
            state.events[event["idempotency_key"]] = event
            accepted += 1
            log.info(
                "central_event",
                store_id=state.store_id,
                key=event["idempotency_key"],
                order_id=event.get("order_id"),
                status=event["event"],
            )
        counts = {"accepted": accepted, "duplicates": len(events) - accepted - len(rejected)}
        if self.omit_zero_counts:
            counts = {key: n for key, n in counts.items() if n}
        style: Callable[[int], Any] = {"int": int, "string": str, "float": float}[self.count_style]
        return web.json_response(
            {**{key: style(n) for key, n in counts.items()}, **({"rejected": rejected} if rejected else {})}
        )

    def _check_event(self, state: StoreState, event: Any) -> tuple[str, str] | None:
        """(error code, reason) when the backend will never take this event; None when it is fine."""
        if not isinstance(event, dict):
            return "invalid_event", "not an object"
        key = event.get("idempotency_key")
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            return "invalid_event", "idempotency_key must be a string of 1-200 characters"
        if event.get("event") not in EVENT_TYPES:
            return "invalid_event", f"event must be one of {', '.join(EVENT_TYPES)}"
        at = event.get("at")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
            return "invalid_event", "at must be unix seconds (a finite number, not negative)"
        if event["event"] in ("printed", "failed") and (
            isinstance(event.get("job_id"), bool) or not isinstance(event.get("job_id"), int)
        ):
            return "invalid_event", f"a {event['event']} event needs job_id (an integer)"
        order_id = event.get("order_id")
        if not isinstance(order_id, str):
            return "invalid_event", "order_id must be a string"
        owner = self._owner.get(order_id)
        if owner is not None and owner != state.store_id:
            return "unknown_order", f"order {order_id!r} belongs to another store"
        if self.strict and (owner is None or time.monotonic() < self._known_at[order_id]):
            return "unknown_order", f"no order {order_id!r} for store {state.store_id!r}"
        first = state.events.get(key)
        if self.strict and first is not None and first != event:
            return "idempotency_key_reused", f"idempotency_key {key!r} was used before with another body"
        return None


def _after_cancel(state: StoreState, events: list[dict[str, Any]], order_states: bool) -> web.Response | None:
    """The 409 for a batch holding a new event of an order cancelled before it (in the batch or earlier): by the box's
    ``cancelled`` (with ``order_states``) or by central itself (``cancel_orders``); None when every event fits its
    order's state. Nothing of such a batch is applied."""

    def cancels(event: dict[str, Any]) -> bool:
        """Whether the order is cancelled once this event of it is taken."""
        kind = event["event"]
        return (order_states and kind == "cancelled") or state.cancels.get(event["order_id"], "") == kind

    cancelled = {order_id for order_id, after in state.cancels.items() if after is None}
    cancelled |= {e["order_id"] for e in state.events.values() if cancels(e)}
    for n, event in enumerate(events):
        new = event["idempotency_key"] not in state.events
        if new and event["event"] != "cancelled" and event["order_id"] in cancelled:
            reason = f"order {event['order_id']} is cancelled; events[{n}] ({event['event']}) goes backwards"
            body = {
                "error": "order_cancelled",
                "reason": reason,
                "index": n,
                "idempotency_key": event["idempotency_key"],
            }
            return web.json_response(body, status=409)
        if cancels(event):
            cancelled.add(event["order_id"])
    return None


def _has_key(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("idempotency_key"), str)


async def _deliver_badly(request: web.Request, response: web.Response, fault: _Fault) -> web.StreamResponse:
    """The real answer, but trickled out slowly or cut off halfway with the full Content-Length promised."""
    if fault.kind == "drip":
        return await _trickle(request, response, chunk=fault.chunk, interval_s=fault.interval_s)
    body = bytes(response.body)  # type: ignore[arg-type]  # a json_response body is bytes
    stream = web.StreamResponse(status=response.status, headers={"Content-Type": response.content_type})
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return stream


async def _trickle(
    request: web.Request, response: web.Response, *, chunk: int, interval_s: float
) -> web.StreamResponse:
    """The answer ``chunk`` bytes per ``interval_s``, its headers as they were; a box that gives up waiting and hangs
    up ends it."""
    body = bytes(response.body)  # type: ignore[arg-type]  # a json_response body is bytes
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    try:
        for start in range(0, len(body), chunk):
            await stream.write(body[start : start + chunk])
            await asyncio.sleep(interval_s)
        await stream.write_eof()
    except ConnectionError:
        pass
    return stream


def _error(status: int, error: str, reason: str, *, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


def _order_gone(status: int, order_id: str, index: int) -> web.Response:
    """An archived order's events, refused the way real backends do it: not the contract's permanent refusal."""
    if status == 422:  # FastAPI / pydantic: the framework's own validation error, no "error" code
        detail = [{"loc": ["body", "events", index, "order_id"], "msg": f"order {order_id} is archived"}]
        return web.json_response({"detail": detail}, status=status)
    reason = f"order {order_id} was archived; nothing in this batch was applied"
    return web.json_response({"error": "order_gone", "reason": reason}, status=status)


def _refusal(error: str, reason: str, index: int, key: str | None) -> web.Response:
    """The contract's permanent refusal: which event, and why; the agent marks that event rejected."""
    body = {"error": error, "reason": reason, "index": index, "idempotency_key": key}
    return web.json_response(body, status=422)


async def serve(*, port: int, store_id: str, orders: int, token: str, host: str = "127.0.0.1") -> None:
    """`edge sim central`: N ready-made orders for one store; logs every status event it receives."""
    sim = CentralSim(store_id, token=token, host=host, port=port)
    sim.create_orders(orders, prefix=f"{store_id}-{int(time.time())}")
    await sim.start()
    print(json.dumps({"central": sim.url, "store_id": store_id, "orders": orders, "token": token}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
