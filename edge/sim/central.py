"""A simulated central API (aiohttp on loopback) that tests can take down, slow, break and throttle."""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from edge.sim.orders import make_order

log = structlog.get_logger()

EVENT_TYPES = ("received", "printed", "failed", "ready", "fulfilled")
MAX_PAGE = 1000


class CentralSim:
    """Implements docs/central-api.md for one store. Every knob applies from the next request.

    ``set_up(False)`` is the line cut: the port stops listening and open keep-alive connections are dropped.
    """

    def __init__(self, store_id: str, *, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store_id = store_id
        self.token = token
        self.host = host
        self.port = port
        self.latency_s = 0.0  # added to every answer
        self.up_at: float | None = None  # time.time() of the last set_up(True)
        self.requests: list[
            tuple[float, str, str, int]
        ] = []  # (monotonic time, method, path, status) of each answered request
        self.events: dict[str, dict[str, Any]] = {}  # accepted status events by idempotency key, first copy kept
        self.duplicates: list[str] = []  # keys of events re-sent after they were accepted
        self.posted: collections.Counter[str] = (
            collections.Counter()
        )  # every key in every events POST that got an answer, accepted or not
        self.reject_keys: set[str] = (
            set()
        )  # events the backend will never take: a batch holding one is refused with 422
        self.reject_types: set[str] = set()
        self._faults: collections.deque[tuple[int, float | None]] = collections.deque()
        self._orders: dict[str, dict[str, Any]] = {}
        self._latest: dict[str, int] = {}  # order id -> change sequence of its current version
        self._log: list[tuple[int, str]] = []  # (sequence, order id), ascending; old versions are skipped when listed
        # Sequences are microseconds since the epoch, so a restarted simulator never hands out a cursor already used.
        self._seq = time.time_ns() // 1000
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.up = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- control ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/health", self._health)
        app.router.add_get("/v1/stores/{store_id}/orders", self._list_orders)
        app.router.add_post("/v1/stores/{store_id}/events", self._post_events)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.set_up(True)

    async def stop(self) -> None:
        self.up = False
        if self._runner is not None:
            await self._runner.cleanup()

    async def set_up(self, up: bool) -> None:
        """Line back (listen again on the same port) or line cut (stop listening, drop open connections)."""
        assert self._runner is not None, "start() first"
        if up and self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await self._site.start()
            self.port = self._runner.addresses[0][1]
            self.up, self.up_at = True, time.time()
            log.info("central_sim_up", url=self.url)
        elif not up and self._site is not None:
            self.up = False
            await self._site.stop()
            self._site = None
            log.info("central_sim_down", url=self.url)

    def fail_next(self, count: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """The next ``count`` API calls (not health) answer ``status``, with Retry-After if given."""
        self._faults.extend([(status, retry_after)] * count)

    def reject_events(self, *, keys: set[str] | None = None, types: set[str] | None = None) -> None:
        """From the next POST on, a batch holding one of these idempotency keys or event types is refused whole with 422."""
        self.reject_keys |= keys or set()
        self.reject_types |= types or set()

    def add_orders(self, orders: list[dict[str, Any]]) -> None:
        """Orders created (or changed) at the backend; each becomes visible after the current cursor."""
        for order in orders:
            self._seq = max(self._seq + 1, time.time_ns() // 1000)
            self._orders[order["id"]] = order
            self._latest[order["id"]] = self._seq
            self._log.append((self._seq, order["id"]))

    def create_orders(self, count: int, *, prefix: str, start: int = 1) -> list[dict[str, Any]]:
        """``count`` ready-made orders with their own ids and numbers, added and returned."""
        orders = [
            make_order(n, prefix=prefix, print_receipt=n % 4 == 0, bar=n % 5 == 0) for n in range(start, start + count)
        ]
        self.add_orders(orders)
        return orders

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e.get("event") == kind]

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

    async def wait_for(self, check: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)

    # --- the API ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self.up and request.transport is not None:
            request.transport.abort()  # a keep-alive connection from before the cut: gone, as on a dead line
            raise web.HTTPServiceUnavailable()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        response = await self._answer(request, handler)
        self.requests.append((time.monotonic(), request.method, request.path, response.status))
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/v1/health":
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "missing or wrong bearer token")
        if request.match_info.get("store_id") != self.store_id:
            return _error(404, "unknown_store", f"no store {request.match_info.get('store_id')!r} here")
        if self._faults:
            status, retry_after = self._faults.popleft()
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            return web.json_response(
                {"error": "simulated", "reason": f"simulated HTTP {status}"}, status=status, headers=headers
            )
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _list_orders(self, request: web.Request) -> web.Response:
        since_raw, limit_raw = request.query.get("since", ""), request.query.get("limit", "100")
        if since_raw and not (since_raw.isascii() and since_raw.isdigit()):
            return _error(400, "invalid_cursor", f"since must be a cursor this API returned, got {since_raw[:40]!r}")
        if not (limit_raw.isascii() and limit_raw.isdigit()) or not 1 <= int(limit_raw) <= MAX_PAGE:
            return _error(400, "invalid_limit", f"limit must be between 1 and {MAX_PAGE}")
        since, limit = int(since_raw or 0), int(limit_raw)
        page: list[dict[str, Any]] = []
        cursor = since
        position = bisect.bisect_right(self._log, (since, "\uffff"))
        while position < len(self._log) and len(page) < limit:
            seq, order_id = self._log[position]
            position += 1
            cursor = seq
            if self._latest[order_id] == seq:  # an older version of an order changed since: only the newest counts
                page.append(self._orders[order_id])
        return web.json_response(
            {"orders": page, "next_cursor": str(cursor) if cursor else since_raw, "has_more": position < len(self._log)}
        )

    async def _post_events(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "malformed_request", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _error(422, "invalid_events", 'body must be {"events": [...]}')
        for n, event in enumerate(events):
            if (
                not isinstance(event, dict)
                or not isinstance(event.get("idempotency_key"), str)
                or event.get("event") not in EVENT_TYPES
            ):
                return _error(
                    422,
                    "invalid_events",
                    f"events[{n}] needs idempotency_key and event (one of {', '.join(EVENT_TYPES)})",
                )
        self.posted.update(e["idempotency_key"] for e in events)
        for n, event in enumerate(events):
            if event["idempotency_key"] in self.reject_keys or event["event"] in self.reject_types:
                return _error(
                    422,
                    "event_not_accepted",
                    f"events[{n}] ({event['idempotency_key']}) is not accepted; nothing in this batch was applied",
                )
        accepted = 0
        for event in events:
            if event["idempotency_key"] in self.events:
                self.duplicates.append(event["idempotency_key"])
                continue
            self.events[event["idempotency_key"]] = event
            accepted += 1
            log.info(
                "central_event",
                store_id=self.store_id,
                key=event["idempotency_key"],
                order_id=event.get("order_id"),
                status=event["event"],
            )
        return web.json_response({"accepted": accepted, "duplicates": len(events) - accepted})


def _error(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status)


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
