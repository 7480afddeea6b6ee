"""Retention: old orders go once nothing about them is left to do, whatever became of their jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog

from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, days_pass, db_rows, eventually, job_rows, post

DAYS_31 = 31 * 86400


async def push(agent: Agent, orders: list[dict[str, Any]]) -> None:
    async with api_client(agent) as session:
        for order in orders:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()


async def settle_jobs(agent: Agent, printers: dict[str, SimPrinter], orders: list[dict[str, Any]]) -> None:
    """The first order's kitchen ticket dies (the printer hangs up on it, one attempt allowed; tried once more when
    the next prints whole, and dead again), the others print; then the third order's ticket is discarded and the
    fourth's held, as a person would via the printing API."""
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs ORDER BY id"),
        lambda rows: [r[0] for r in rows] == ["dead"] + ["printed"] * (len(orders) - 1),
        what="the first dead, the others printed",
    )

    def arrange() -> None:  # in a thread: a blocking write on the loop would stall the agent's own writer
        with sqlite3.connect(agent.settings.agent.db_path, timeout=10) as conn:
            conn.execute("UPDATE print_jobs SET state = 'discarded' WHERE order_id = ?", (orders[2]["id"],))
            conn.execute("UPDATE print_jobs SET state = 'held' WHERE order_id = ?", (orders[3]["id"],))

    await asyncio.to_thread(arrange)


def orders_for(prefix: str) -> list[dict[str, Any]]:
    return [make_order(n, prefix=prefix, print_receipt=False) for n in range(1, 5)]


async def wait_until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met in 10 s")


async def test_without_a_central_api_dead_discarded_and_printed_orders_are_purged_with_their_outbox_rows(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """No central API: outbox rows can never be delivered, so they do not keep orders. 31 days on, the orders whose
    jobs printed, died or were discarded are gone with their jobs and outbox rows; the one with a held ticket
    (waiting for a person) stays. Their ids stay on record as seen."""
    clock = SteppedClock()
    orders = orders_for("keep")
    printers["kitchen"].drop_job_containing = orders[0]["number"].encode()
    agent = await make_agent(clock=clock, spool={"max_attempts": 1}, retention={"every_s": 0.2})
    await push(agent, orders)
    await eventually(
        lambda: db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE state = 'dead'"), lambda rows: rows == [(1,)]
    )
    await settle_jobs(agent, printers, orders)
    later = await days_pass(agent, clock, 31)
    kept = {orders[3]["id"], later}  # the held one, and the order of the day
    await eventually(lambda: db_rows(agent, "SELECT id FROM orders"), lambda rows: {r[0] for r in rows} == kept)
    assert {r[0] for r in await db_rows(agent, "SELECT DISTINCT order_id FROM outbox")} == kept
    assert {r[0] for r in await db_rows(agent, "SELECT DISTINCT order_id FROM print_jobs")} == kept
    assert {r[0] for r in await db_rows(agent, "SELECT id FROM seen_orders")} == {o["id"] for o in orders} | {later}


async def test_with_a_central_api_dead_and_discarded_orders_go_once_their_events_are_delivered(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """With a central API, the dead job's `failed` event and every other event are delivered first; then the orders
    whose jobs died or were discarded are purged like printed ones."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    await central.start()
    try:
        clock = SteppedClock()
        orders = orders_for("sent")
        printers["kitchen"].drop_job_containing = orders[0]["number"].encode()
        central.add_orders(orders)
        agent = await make_agent(
            clock=clock,
            spool={"max_attempts": 1},
            retention={"every_s": 0.2},
            central={"url": central.url, "token": central.token, "start_jitter_s": 0, "rate_limit_rps": 100},
        )
        await eventually(
            lambda: db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE state = 'dead'"), lambda rows: rows == [(1,)]
        )
        await settle_jobs(agent, printers, orders)
        await wait_until(lambda: len(central.events_of("failed")) == 1)
        await eventually(
            lambda: db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
            lambda rows: rows == [(0,)],
        )
        later = await days_pass(agent, clock, 31)
        await eventually(
            lambda: db_rows(agent, "SELECT id FROM orders"),
            lambda rows: {r[0] for r in rows} == {orders[3]["id"], later},
        )
    finally:
        await central.stop()


async def test_retention_forgets_settled_alert_groups_and_reported_mqtt_rejects(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """Two tables retention used to forget, so they grew for as long as the box ran: alert groups (one per order for
    central's refusals, `central_refused_events:<order id>`) and rejected MQTT messages. 31 days on, a group resolved,
    told and quiet goes, and so does a reject already reported on the events topic; a group still firing, one whose
    "resolved" is not told yet and a reject not yet reported stay, as do a settled group and a reject of today."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, retention={"every_s": 0.2})
    now = clock.wall()
    group = (
        "INSERT INTO alert_groups(key, type, subject, severity, state, notified, first_at, changed_at,"
        " fires_since_mail) VALUES (?, 'central_refused_events', ?, 'warning', ?, ?, ?, ?, ?)"
    )
    reject = (
        "INSERT INTO mqtt_rejects(received_at, topic, payload, error, published_at) VALUES (?, 'o', x'00', '{}', ?)"
    )

    def write() -> None:  # in a thread: a blocking write on the loop would stall the agent's own writer
        with sqlite3.connect(agent.settings.agent.db_path, timeout=10) as conn:
            for order, state, notified, untold in (
                ("settled", "resolved", "resolved", 0),
                ("firing", "firing", "firing", 0),
                ("untold", "resolved", "firing", 0),
                ("unmailed", "resolved", "resolved", 1),
            ):
                conn.execute(group, (f"central_refused_events:{order}", order, state, notified, now, now, untold))
            conn.execute(reject, (now, now))  # reported
            conn.execute(reject, (now, None))  # not yet

    await asyncio.to_thread(write)
    clock.step(DAYS_31)

    def write_young() -> None:
        with sqlite3.connect(agent.settings.agent.db_path, timeout=10) as conn:
            conn.execute(
                group, ("central_refused_events:young", "young", "resolved", "resolved", *[clock.wall()] * 2, 0)
            )
            conn.execute(reject, (clock.wall(), clock.wall()))

    await asyncio.to_thread(write_young)
    await eventually(
        lambda: db_rows(agent, "SELECT subject FROM alert_groups ORDER BY subject"),
        lambda rows: rows == [("firing",), ("unmailed",), ("untold",), ("young",)],
    )
    await eventually(
        lambda: db_rows(agent, "SELECT published_at IS NULL FROM mqtt_rejects ORDER BY id"),
        lambda rows: rows == [(1,), (0,)],
    )


YEARS_12 = 12 * 365 * 86400  # a failing RTC's 2038, far beyond retention.seen_days (400)


@pytest.mark.parametrize("dated_2099", [False, True], ids=["", "beside-an-order-dated-2099"])
async def test_a_box_clock_far_ahead_for_one_retention_run_does_not_forget_what_printed(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict[str, Any],
    printers: dict[str, SimPrinter],
    dated_2099: bool,
) -> None:
    """The box clock jumps 12 years ahead (a failing RTC, a bad time source) while retention runs, then is put right.
    Retention holds back on a clock that far ahead of the newest order's own time: the order and its seen record
    stay, so the same order sent again afterwards is answered 200 duplicate and prints nothing a second time. The same
    when one stored order is dated 2099 (a sender's wrong date): an order's time counts at most a day past our receipt
    of it. Before, that one order lifted the bound, and today's orders were purged (probe_clock D4)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, retention={"every_s": 0.2})
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        if dated_2099:
            future = example_order | {"id": "ord_2099", "number": "F-1", "created_at": "2099-06-01T12:00:00Z"}
            assert (await post(api, future))[0] == 201
        await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows), what="printed")
        on_paper, jobs = {name: len(p.printed) for name, p in printers.items()}, await job_rows(agent)
        with structlog.testing.capture_logs() as logs:
            clock.step(YEARS_12)
            done = {"retention_clock_ahead", "seen_orders_forgotten"}  # held back (fixed) or forgot it all (the bug)

            async def retention_ran() -> bool:
                return any(line["event"] in done for line in logs)

            await eventually(retention_ran, bool, what="a retention run on the jumped clock")
            clock.step(-YEARS_12)
        status, body = await post(api, example_order)
        assert (status, body["status"]) == (200, "duplicate"), body
        assert await job_rows(agent) == jobs  # no new ticket queued, none printed again
    assert {name: len(p.printed) for name, p in printers.items()} == on_paper


YEARS_56 = 56 * 365 * 86400  # back to 1970: a box without a battery-backed clock, before NTP


async def test_an_order_taken_while_the_box_clock_was_in_1970_is_kept_after_ntp_puts_it_right(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """The box boots in 1970 and takes an order before NTP steps the clock: its received_at says 1970. Retention
    right after the step purges nothing taken today (the order's own created_at is today): the order stays, for a
    change or a cancel to find, and so does its seen record."""
    clock = SteppedClock(wall_offset=-YEARS_56)
    agent = await make_agent(clock=clock, retention={"every_s": 3600})
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows), what="printed")
    assert agent._housekeeping is not None
    assert await agent._housekeeping.purge() == 0  # on the 1970 clock: nothing is old
    clock.step(YEARS_56)  # NTP
    assert await agent._housekeeping.purge() == 0
    assert await db_rows(agent, "SELECT id FROM orders") == [(example_order["id"],)]
    assert await db_rows(agent, "SELECT id FROM seen_orders") == [(example_order["id"],)]


async def test_a_cancel_kept_while_the_box_clock_was_in_1970_is_kept_after_ntp_puts_it_right(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """A cancel comes before its order while the box clock says 1970; NTP steps it; retention runs; then the order
    comes: it is stored cancelled and prints nothing. A kept cancel has only our receipt time, and one from before 2024
    was written by a clock that was wrong: it counts from the first retention run that knows better. Before, that run
    forgot the cancel at once (56 years old), and the cancelled order printed (probe_clock D3)."""
    clock = SteppedClock(wall_offset=-YEARS_56)
    agent = await make_agent(clock=clock, retention={"every_s": 3600})
    order_id = example_order["id"]
    async with api_client(agent) as api:
        async with api.post(f"/api/v1/orders/{order_id}/cancel", json={"revision": 2, "reason": "storniert"}) as r:
            assert r.status == 202, await r.text()
        clock.step(YEARS_56)  # NTP
        assert agent._housekeeping is not None
        await agent._housekeeping.purge()
        assert await db_rows(agent, "SELECT order_id FROM pending_cancels") == [(order_id,)]
        status, body = await post(api, example_order)
    assert (status, body["status"]) == (200, "cancelled"), body
    assert all(p.printed == [] for p in printers.values())


async def test_a_purged_orders_id_is_remembered_for_seen_days_after_its_purge_not_after_its_receipt(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """retention.seen_days 10, days 30: an order printed, purged 31 days on, and sent again right after is a
    duplicate (nothing stored, nothing printed); 9 days after the purge it still is; 11 days after, it is forgotten.
    Before, seen_days counted from the order's receipt: the pass that purged it forgot it too, and sent again it was
    stored and printed as a new order (probe days F3)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, retention={"every_s": 3600, "days": 30, "seen_days": 10})
    assert agent._housekeeping is not None
    order = make_order(1, prefix="kept", print_receipt=False)
    await push(agent, [order])
    await printers["kitchen"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda r: r == [("printed",)])

    async def seen() -> set[str]:
        return {r[0] for r in await db_rows(agent, "SELECT id FROM seen_orders")}

    async def sent_again() -> tuple[int, str]:
        async with api_client(agent) as api:
            status, body = await post(api, order)
        return status, body["status"]

    later = await days_pass(agent, clock, 31)
    assert await agent._housekeeping.purge() == 1
    assert await db_rows(agent, "SELECT id FROM orders") == [(later,)]
    assert await sent_again() == (200, "duplicate")
    await days_pass(agent, clock, 9, prefix="nine")
    await agent._housekeeping.purge()
    assert order["id"] in await seen()
    assert await sent_again() == (200, "duplicate")
    assert await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE order_id = ?", order["id"]) == [(0,)]
    await days_pass(agent, clock, 2, prefix="eleven")
    await agent._housekeeping.purge()
    assert order["id"] not in await seen()
    await printers["kitchen"].wait_for_printed(4)  # the last day's order prints after its 201
    assert len(printers["kitchen"].printed) == 4  # the order once, and each day's order
