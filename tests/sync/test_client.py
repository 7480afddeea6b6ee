"""The central API client against the simulator: retries, Retry-After, the request-rate ceiling, what is not retried."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from edge.clock import RemoteClock
from edge.config import CentralSettings, Secret
from edge.errors import CentralApiError
from edge.sim.central import CentralSim
from edge.sim.ports import free_port
from edge.sync.client import CentralClient, CentralUnreachableError
from tests.sync.conftest import CENTRAL_TOKEN, FAST, STORE

MakeClient = Callable[..., Awaitable[CentralClient]]


@pytest.fixture
async def make_client(central: CentralSim) -> AsyncIterator[MakeClient]:
    """Clients for the simulator with the fast test timings, overridable per test."""
    made: list[CentralClient] = []

    async def make(**overrides: Any) -> CentralClient:
        client = CentralClient(
            CentralSettings(**{**FAST, "url": central.url, "token": Secret(CENTRAL_TOKEN), **overrides}), STORE
        )
        await client.start()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_retry_after_is_honoured_on_429(central: CentralSim, make_client: MakeClient) -> None:
    """Two 429s with Retry-After: 0.3 s: the client waits at least that long each time, then gets the page."""
    central.create_orders(3, prefix="r")
    central.fail_next(2, 429, retry_after=0.3)
    client = await make_client()
    started = time.monotonic()
    orders, cursor, more = await asyncio.wait_for(client.orders_since("", 10), timeout=10)
    assert time.monotonic() - started >= 0.6
    assert [o["id"] for o in orders] == ["r_000001", "r_000002", "r_000003"] and cursor and not more
    assert [status for *_, status in central.requests] == [429, 429, 200]


async def test_a_burst_of_500s_is_survived(central: CentralSim, make_client: MakeClient) -> None:
    """Three 500s in a row, then an answer: the call succeeds and the batch is accepted once."""
    [order] = central.create_orders(1, prefix="o")
    central.fail_next(3, 500)
    client = await make_client()
    key = f"{order['id']}:received:0"
    await asyncio.wait_for(
        client.post_events([{"idempotency_key": key, "order_id": order["id"], "event": "received", "at": 1.0}]),
        timeout=10,
    )
    assert [status for *_, status in central.requests] == [500, 500, 500, 200]
    assert list(central.events) == [key]


async def test_gives_up_after_max_attempts_naming_the_status(central: CentralSim, make_client: MakeClient) -> None:
    """When every attempt fails the error names the URL and the last status; no more than max_attempts are made."""
    central.fail_next(10, 503)
    client = await make_client(max_attempts=3)
    with pytest.raises(CentralApiError, match="HTTP 503"):
        await asyncio.wait_for(client.orders_since("", 10), timeout=10)
    assert len(central.requests) == 3


async def test_a_wrong_token_is_not_retried(central: CentralSim, make_client: MakeClient) -> None:
    """401 is our mistake, not the backend's: one request, an error that says 401."""
    client = await make_client(token=Secret("wrong-token-0000"))
    with pytest.raises(CentralApiError, match="HTTP 401"):
        await asyncio.wait_for(client.orders_since("", 10), timeout=10)
    assert len(central.requests) == 1


async def test_no_answer_is_an_unreachable_error(central: CentralSim, make_client: MakeClient) -> None:
    """With the line cut the client reports the central API as unreachable after its attempts."""
    await central.set_up(False)
    client = await make_client(max_attempts=2)
    with pytest.raises(CentralUnreachableError, match="no answer"):
        await asyncio.wait_for(client.orders_since("", 10), timeout=10)


async def test_request_rate_never_exceeds_the_limit(central: CentralSim, make_client: MakeClient) -> None:
    """40 calls fired at once with a 20 requests/s limit: the simulator never sees more than 20 in any second."""
    client = await make_client(rate_limit_rps=20.0)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(client.orders_since("", 1) for _ in range(40))), timeout=15)
    assert time.monotonic() - started >= 1.9  # 40 requests evenly spaced at 50 ms
    assert len(central.requests) == 40 and central.mean_rate() <= 20.0 * 1.02
    # Sent 50 ms apart; arrival times jitter a little on a loaded machine, so allow one extra arrival per window.
    assert central.max_requests_in(1.0) <= 21


async def test_a_call_central_cuts_is_sent_again_only_in_its_turn_at_the_rate_limit() -> None:
    """A backend (or a gateway in front of it) that closes the connection without answering: every send of the call
    waits its turn at rate_limit_rps, the agent's own "once more at once" included. Before, aiohttp re-sent a cut GET
    by itself at once, below the limiter (its connection retry, RFC 9112 9.3.1.1), so a page or a health probe
    reached a struggling backend two or three times within milliseconds (central chaos harness, seeds 3 and 10)."""
    arrivals: list[float] = []

    async def cut(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        assert request.transport is not None
        request.transport.abort()
        raise web.HTTPServiceUnavailable()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cut)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rps = 4.0
    settings = {**FAST, "url": f"http://127.0.0.1:{port}", "token": Secret(CENTRAL_TOKEN), "rate_limit_rps": rps}
    client = CentralClient(CentralSettings(**{**settings, "max_attempts": 2}), STORE)
    await client.start()
    try:
        with pytest.raises(CentralUnreachableError):
            await asyncio.wait_for(client.orders_since("", 10), timeout=10)
        with pytest.raises(CentralUnreachableError):
            await asyncio.wait_for(client.health(), timeout=10)
    finally:
        await client.close()
        await runner.cleanup()
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    # Sent 0.25 s apart; half that allows for a late arrival on a loaded machine (a re-send came within 1-3 ms).
    assert len(arrivals) >= 3 and min(gaps) >= 0.5 / rps, gaps


async def test_a_long_retry_after_is_capped_at_retry_max_s(central: CentralSim, make_client: MakeClient) -> None:
    """A 503 with Retry-After: 3600 does not park the call for an hour: the wait is capped at retry_max_s (0.5 s)."""
    central.create_orders(1, prefix="cap")
    central.fail_next(1, 503, retry_after=3600, path="orders")
    client = await make_client()
    orders, _, _ = await asyncio.wait_for(client.orders_since("", 10), timeout=5)
    assert [o["id"] for o in orders] == ["cap_000001"] and central.statuses() == [503, 200]


@pytest.mark.parametrize(
    ("status", "body"),
    [(202, {"status": "queued"}), (207, {"results": []}), (200, {"accepted": 0}), (200, {"ok": True}), (204, None)],
)
async def test_only_the_contract_success_answer_acknowledges_events(
    central: CentralSim, make_client: MakeClient, status: int, body: object
) -> None:
    """An events POST counts as acknowledged only on 200 {"accepted": n, "duplicates": m} with n + m events: a 202, a
    207, a 204 or a 200 that accounts for fewer events is an error, so the caller keeps the events pending."""
    [order] = central.create_orders(1, prefix="ack")
    central.fail_next(1, status, body=body, path="events")
    client = await make_client(max_attempts=1)
    event = {"idempotency_key": "ack:1", "order_id": order["id"], "event": "received", "at": 1.0}
    with pytest.raises(CentralApiError, match=f"HTTP {status}"):
        await client.post_events([event])
    await client.post_events([event])
    assert list(central.events) == ["ack:1"]


@pytest.mark.parametrize("cached_for_s", [0, 600])
async def test_centrals_time_is_read_from_the_date_of_its_answers_and_their_age(
    central: CentralSim, cached_for_s: int
) -> None:
    """Central's clock is its answers' Date, plus their Age when a cache in front of it served one made earlier
    (RFC 9111 5.1): ten minutes in a cache do not make central's clock ten minutes slow (before: 600 s off)."""
    central.clock_offset_s, central.cached_for_s = 7200.0, cached_for_s  # central's clock two hours ahead
    central_time = RemoteClock("central")
    settings = CentralSettings(**{**FAST, "url": central.url, "token": Secret(CENTRAL_TOKEN)})
    client = CentralClient(settings, STORE, central_time=central_time)
    await client.start()
    try:
        await client.health()
    finally:
        await client.close()
    theirs = central_time.wall()
    assert theirs is not None and abs(theirs - (time.time() + 7200)) < 2
