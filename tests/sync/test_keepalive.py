"""A backend that closes kept-alive connections after a few idle seconds (Node's http server: keepAliveTimeout, 5 s
by default): a request that goes out on one as its close comes the other way finds it gone, unanswered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from structlog.testing import capture_logs

from edge.config import Settings
from edge.events import CentralLinkChanged
from edge.sim.central import CentralSim
from edge.sync.client import CentralClient
from tests.helpers import api_client, post, wait_until
from tests.sync.conftest import STORE, Agents


async def test_a_backend_closing_idle_connections_costs_no_retry_warning_and_no_outage(
    agents: Agents, sync_settings: Callable[..., Settings], central: CentralSim, example_order: dict
) -> None:
    """Two orders with a pause longer than central's idle timer between their events: the second order's events meet
    the close on the kept-alive connection. They are sent again at once on a new connection, quietly: no
    `central_retry` warning, no probe, the link never down. Before, that one race cost a warning line in the journal
    and a retry after the backoff, on every backend with a short keep-alive (26 of 150 POSTs in a probe timed to
    race one)."""
    central.strict = False  # the orders come in over HTTP, not from central
    central.idle_close_s = 0.3
    agent, recorder = await agents.start(sync_settings(probe_up_s=30.0))
    assert agent.sync is not None
    limiter = agent.sync.client._limiter
    turns = 0
    take_turn = limiter.acquire

    async def counted() -> None:
        nonlocal turns
        turns += 1
        await take_turn()

    async with api_client(agent) as api:
        with capture_logs() as logs:
            first, second = dict(example_order, id="ord_keep_1"), dict(example_order, id="ord_keep_2", number="A-2")
            assert (await post(api, first))[0] == 201
            await wait_until(lambda: any(e["order_id"] == "ord_keep_1" for e in central.events.values()))
            await asyncio.sleep(0.5)  # central's idle timer runs out on the kept-alive connection; the agent is idle
            limiter.acquire = counted  # type: ignore[method-assign]
            answered, dropped = len(central.requests), central.closed_idle
            assert (await post(api, second))[0] == 201
            await wait_until(lambda: any(e["order_id"] == "ord_keep_2" for e in central.events.values()))
    assert central.closed_idle >= 1  # the race happened
    sent = len(central.requests) - answered + central.closed_idle - dropped
    assert turns == sent  # the request sent again took its turn at the rate limit
    assert [e for e in logs if e["event"] == "central_retry"] == []
    assert [e for e in recorder.of(CentralLinkChanged) if not e.up] == []


async def test_a_request_that_meets_several_connections_closed_for_idling_is_sent_on_until_one_answers(
    central: CentralSim, sync_settings: Callable[..., Settings]
) -> None:
    """Three calls at once leave three kept-alive connections; central closes all three for idling. The next call
    meets a closed one, then the next closed one: it is sent on quietly until a live (new) connection answers. Before,
    the second stale connection made it a failed attempt: a `central_retry` warning and a backoff (a CI run saw it)."""
    central.strict = False
    central.latency_s = 0.2  # the three calls overlap, each on its own connection
    client = CentralClient(sync_settings().central, STORE)
    await client.start()
    try:
        await asyncio.gather(*(client.orders_since("", 10) for _ in range(3)))
        central.latency_s = 0.0
        central.idle_close_s = 0.3
        await asyncio.sleep(0.5)
        dropped = central.closed_idle
        with capture_logs() as logs:
            await asyncio.wait_for(client.orders_since("", 10), timeout=5)
        assert central.closed_idle - dropped >= 2  # it met more than one closed connection
        assert [e for e in logs if e["event"] == "central_retry"] == []
    finally:
        await client.close()
