"""The agent against the strict simulator's fault modes: slow-drip and truncated bodies, 429 and 503 with
Retry-After, on both the orders and the events endpoint. Every order is stored once, every event arrives once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge.config import Settings
from edge.events import JobPrinted, RecoveryCompleted, RecoveryFailed
from edge.sim.central import CentralSim
from edge.sim.orders import example_order
from tests.helpers import api_client, db_rows, key_mark, post, wait_until
from tests.sync.conftest import Agents

MISSED = 60


@pytest.mark.parametrize(
    "fault",
    ["drip", "truncate", "429", "503"],
)
async def test_recovery_and_reporting_survive_each_fault_mode(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, fault: str
) -> None:
    """Two faults on the orders endpoint (pages of 20) and two on the events endpoint: a body dripping slower than
    the read timeout allows, a body cut off halfway, or 429 / 503 with Retry-After. The run completes with every
    order stored once and printed, and central holds each `received` and `printed` event exactly once."""
    orders = central.create_orders(MISSED, prefix=f"f{fault}")
    for path in ("orders", "events"):
        if fault == "drip":
            central.drip_next(2, chunk=200, interval_s=0.2, path=path)  # ~10 s for a page: over the 1.5 s allowed
        elif fault == "truncate":
            central.truncate_next(2, path=path)
        else:
            central.fail_next(2, int(fault), retry_after=0.3, path=path)
    settings = sync_settings(page_size=20, batch_size=20, connect_timeout_s=0.5, read_timeout_s=1.0)
    agent, events = await agents.start(settings)
    db = agent.settings.agent.db_path
    [completed] = await events.wait(RecoveryCompleted, timeout=30)
    assert completed.counts["stored"] == MISSED and not events.of(RecoveryFailed)
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(MISSED, MISSED)]
    jobs = await db_rows(db, "SELECT id, order_id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs), timeout=30)
    mark = await key_mark(db)
    want = {f"{o['id']}:received:0{mark}" for o in orders} | {f"{o}:printed:{j}{mark}" for j, o in jobs}
    await central.wait_for(lambda: want <= set(central.events), timeout=30)
    assert set(central.events) == want
    # Two cut-off answers in a row may send one batch three times; the keys make the repeats duplicates, not events.
    assert central.posted.most_common(1)[0][1] <= 3


async def test_a_retry_after_date_is_read_on_centrals_clock_not_the_boxs(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Central's clock is an hour behind the box's (or the box's ahead: no battery, a hardware clock kept in local
    time). Busy, it answers the orders list 429 with Retry-After as an HTTP date two seconds ahead on its own clock
    (RFC 9110 10.2.3): the agent waits those two seconds, measured against the answer's own Date, and the run
    completes. Before: the date was read on the box's clock, an hour past: the agent came back at once (13 ms here),
    and a busy spell longer than its six tries failed the run."""
    central.clock_offset_s = -3600
    central.create_orders(3, prefix="skew")
    central.fail_next(2, 429, retry_after=2, retry_after_as_date=True, path="orders")
    _, events = await agents.start(sync_settings(retry_max_s=5.0))
    [completed] = await events.wait(RecoveryCompleted, timeout=15)
    assert completed.counts["stored"] == 3
    lists = [t for t, method, path, _ in central.requests if method == "GET" and path.endswith("/orders")]
    assert lists[1] - lists[0] >= 1.5 and lists[2] - lists[1] >= 1.5, lists


@pytest.mark.parametrize("status", [429, 503])
async def test_the_outbox_sends_nothing_before_the_time_a_busy_central_asked_for(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, status: int
) -> None:
    """Central answers the events endpoint 429 (or 503) with Retry-After: 1.5 until the agent's tries of that call are
    spent. The next order, printed right away, wakes the outbox: its next POST waits out the time central asked for
    (RFC 9110 10.2.3), as every retry does (central knows neither order here: its answer after the wait is beside the
    point). Before, it went 0.2 s later (the central probe helper, 4 of 4): a backend
    that says slow down was asked again at once by every box."""
    first, second = example_order() | {"id": "first"}, example_order() | {"id": "second", "number": "B-2"}
    central.fail_next(2, status, retry_after=1.5, path="events")
    settings = sync_settings(max_attempts=2, retry_max_s=5.0)
    agent, _ = await agents.start(settings)
    async with api_client(agent) as api:
        assert (await post(api, first))[0] == 201
        refused = [status] * 2
        await central.wait_for(lambda: [s for *_, p, s in central.requests if p.endswith("/events")] == refused, 10)
        assert (await post(api, second))[0] == 201
        await central.wait_for(lambda: len([p for _, _, p, _ in central.requests if p.endswith("/events")]) > 2, 20)
    posts = [(t, s) for t, _, p, s in central.requests if p.endswith("/events")]
    last_refusal = max(t for t, s in posts if s == status)
    next_post = min(t for t, s in posts if t > last_refusal)
    assert next_post - last_refusal >= 1.4, posts


async def test_answers_cut_short_are_asked_again_for_smaller_pages_and_the_run_completes(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A gateway cuts big answers off (its buffer or read timeout): the orders endpoint's next three answers stop
    halfway with the full Content-Length promised. Each cut page is asked again at once for half as many orders, as a
    page too slow to arrive whole is, and the run completes with every order stored once. Before stop 68 a cut answer
    was "no answer": tried again at the same size, the run failed after three tries, and the next run, 15 minutes
    later, met the same gateway (the central probe, finding 3)."""
    central.create_orders(MISSED, prefix="cut")
    central.truncate_next(3, path="orders")
    agent, events = await agents.start(sync_settings(page_size=40, max_attempts=3))
    [completed] = await events.wait(RecoveryCompleted, timeout=30)
    assert completed.counts["stored"] == MISSED and not events.of(RecoveryFailed)
    assert central.list_limits[:4] == [40, 20, 10, 10], central.list_limits
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(MISSED, MISSED)]


_CLOUDFLARE_521 = (
    "<!DOCTYPE html><html><head><title>example.com | 521: Web server is down</title></head><body>"
    "<h1>Web server is down</h1><span>Error code 521</span></body></html>"
)


@pytest.mark.parametrize("status", [520, 521, 523, 599])
async def test_a_gateway_status_the_box_does_not_know_is_retried_as_a_500(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, status: int
) -> None:
    """Cloudflare answers 520-527 of its own while the backend restarts (a deploy); RFC 9110 15: a status a client
    does not know is the x00 of its class, here 500, which the agent retries. Before (the central72 probe, 1): not
    retried; the run after an outage failed, the orders central took meanwhile waited for the next scheduled run
    (15 minutes) and the manager got a critical mail."""
    central.create_orders(3, prefix=f"cf{status}")
    central.fail_next(1, status, body=_CLOUDFLARE_521, path="orders")
    _, events = await agents.start(sync_settings())
    [completed] = await events.wait(RecoveryCompleted, timeout=15)
    assert completed.counts["stored"] == 3 and not events.of(RecoveryFailed)


@pytest.mark.parametrize("status", [501, 505, 511])
async def test_a_5xx_that_says_the_request_can_never_work_is_not_retried(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, status: int
) -> None:
    """501 Not Implemented, 505 and 511 Network Authentication Required (a captive portal) say the same request will
    not work in a moment either: the run fails at once and says so, as before."""
    central.fail_next(3, status, path="orders")
    _, events = await agents.start(sync_settings(max_attempts=3))
    [failed] = await events.wait(RecoveryFailed, timeout=15)
    assert f"HTTP {status}" in failed.error
    assert [s for *_, p, s in central.requests if p.endswith("/orders")] == [status]


async def test_a_backend_that_starts_its_json_with_a_byte_order_mark_is_understood(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Some Windows and old ASP.NET stacks start their JSON with a UTF-8 byte order mark; RFC 8259 8.1 lets a reader
    ignore it. Every answer so, health, listings and events: the run completes, every event is delivered once. Before
    (the central72 probe, 3): "answer is not JSON" everywhere; the link was down, no run completed, and the events
    central had applied were sent again every few seconds."""
    central.bom = True
    central.create_orders(3, prefix="bom")
    agent, events = await agents.start(sync_settings())
    [completed] = await events.wait(RecoveryCompleted, timeout=15)
    assert completed.counts["stored"] == 3 and not events.of(RecoveryFailed)
    jobs = await db_rows(agent.settings.agent.db_path, "SELECT id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs), timeout=15)
    await central.wait_for(lambda: len(central.events) == 3 + len(jobs), timeout=15)

    async def none_pending() -> bool:
        sql = "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"
        return await db_rows(agent.settings.agent.db_path, sql) == [(0,)]

    # the answer marks them delivered a moment after central took them (under load: 2 still unmarked)
    await wait_until(none_pending, timeout=15, what="every event marked delivered")
    assert central.duplicates == []
