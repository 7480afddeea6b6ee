"""Staleness is the order's own age (its created_at), not the time we stored it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.events import JobHeld
from edge.sim.central import CentralSim
from edge.sim.orders import due_at, make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, asap, eventually, job_rows, post, print_latency_sum, wait_until
from tests.printing.conftest import YEARS_56, BoxClock


def order_created(seq: int, ago: timedelta) -> dict:
    """An order for as soon as possible (no due time: one due later than the stale age is not held before it)."""
    return asap(make_order(seq, print_receipt=False, created_at=datetime.now(UTC).replace(microsecond=0) - ago))


async def test_an_old_order_pushed_now_is_held_and_shown_as_held_while_a_fresh_one_prints(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """An order created 3 h ago arrives now (a backend restored from backup, a sender that retried for hours): its
    ticket is held, listed as held by the API and the status page, and alerted (JobHeld); a fresh order prints."""
    held: list[JobHeld] = []
    agent.bus.subscribe(held.append, JobHeld)
    old, fresh = order_created(1, timedelta(hours=3)), order_created(2, timedelta(seconds=5))
    with capture_logs() as logs:
        assert (await post(api, old))[0] == 201
        assert (await post(api, fresh))[0] == 201
        printed = await printers["kitchen"].wait_for_printed(1)
        await asyncio.sleep(0.3)
        assert len(printers["kitchen"].printed) == 1 and fresh["number"] in printed[0].decode("cp858")
        await eventually(
            lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs"),
            lambda rows: sorted(rows) == [(old["id"], "held"), (fresh["id"], "printed")],
        )
    # The technician's log says it once, with the age it had.
    assert [(e["device_id"], e["age_s"] // 3600) for e in logs if e["event"] == "job_held"] == [("kitchen", 3)]
    async with api.get("/api/v1/jobs", params={"state": "held"}) as response:
        assert [j["order_id"] for j in (await response.json())["jobs"]] == [old["id"]]
    async with api.get("/api/v1/status") as response:
        assert [j["order_id"] for j in (await response.json())["held_jobs"]] == [old["id"]]
    assert [e.order_id for e in held] == [old["id"]] and 3 * 3600 <= held[0].age_s < 3 * 3600 + 60


async def test_a_pre_order_taken_overnight_prints_when_the_printer_comes_on_before_its_due_time(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """A web shop takes orders overnight for the next day while the store is closed and the kitchen printer off. At
    09:00 the printer comes on: an order made at 22:00 for 12:00 prints, it is not late (a ticket early is not a ticket
    gone stale); one made at 22:00 for 08:30, or with no due time, is held as before. Before: every pre-order of the
    night was held for the manager to release each morning (its age, 11 h, over the 45 min stale age)."""
    now = datetime.now(UTC).replace(microsecond=0)
    made = now - timedelta(hours=11)

    def order(seq: int, due: datetime | None) -> dict:
        return due_at(make_order(seq, print_receipt=False, created_at=made), due)

    lunch, breakfast, soon = order(1, now + timedelta(hours=3)), order(2, now - timedelta(minutes=30)), order(3, None)
    printers["kitchen"].set_offline(True)
    for o in (lunch, breakfast, soon):
        assert (await post(api, o))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    printers["kitchen"].set_offline(False)
    printed = await printers["kitchen"].wait_for_printed(1)
    assert lunch["number"] in printed[0].decode("cp858")
    await eventually(
        lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [(lunch["id"], "printed"), (breakfast["id"], "held"), (soon["id"], "held")],
    )
    await asyncio.sleep(0.3)
    assert len(printers["kitchen"].printed) == 1


async def test_what_is_never_held_prints_however_long_past_its_due_time(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """A stale age of 0 means never held: receipts by default, and a station set so ([staleness] bar = 0). An order
    made 3 hours ago and due 2.5 hours ago comes now: its kitchen ticket is held; its bar ticket and its receipt print
    (a due time never makes a hold of what is never held)."""
    agent = await make_agent(stations={"kitchen": "kitchen", "bar": "front"}, staleness={"bar": 0})
    order = make_order(1, bar=True, created_at=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    due_at(order, datetime.now(UTC) - timedelta(hours=2.5))
    order["print_receipt"] = True
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
    await printers["front"].wait_for_printed(2)
    await eventually(
        lambda: job_rows(agent, "SELECT kind, station, state FROM print_jobs ORDER BY id"),
        lambda rows: (
            sorted(rows) == [("receipt", None, "printed"), ("ticket", "bar", "printed"), ("ticket", "kitchen", "held")]
        ),
    )


@pytest.mark.parametrize("ahead", [timedelta(hours=2), timedelta(days=400)])
async def test_an_order_from_the_future_prints(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter], ahead: timedelta
) -> None:
    """created_at ahead of the box clock (central's clock ahead, or ours behind) counts as age 0: it prints."""
    order = make_order(1, print_receipt=False, created_at=datetime.now(UTC).replace(microsecond=0) + ahead)
    assert (await post(api, order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")


async def test_a_box_booted_in_1970_prints_fresh_orders_and_still_holds_one_that_waited_too_long(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """The box clock says 1970: every order seems to come from the future, so fresh ones print; a ticket that then
    waits longer than its stale age for an offline printer is still held (its wait is on the monotonic clock)."""
    box_clock.step(-YEARS_56)
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})  # the clock moves past it
    async with api_client(agent) as api:
        assert (await post(api, order_created(1, timedelta(seconds=5))))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
        printers["kitchen"].set_offline(True)
        assert (await post(api, order_created(2, timedelta(seconds=5))))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw it off
        box_clock.advance(61)  # a minute passes with the printer off: longer than the stale age
        printers["kitchen"].set_offline(False)
        await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "held"], timeout=6)


async def test_a_person_released_or_reprinted_old_order_prints(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """An old order's held ticket prints when a person releases it; a reprint a person asks for prints too (marked
    COPY), however old the order is: asking counts as releasing."""
    old = order_created(1, timedelta(hours=3))
    assert (await post(api, old))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "held")
    (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
    async with api.post(f"/api/v1/jobs/{job_id}/release") as response:
        assert response.status == 200
    await printers["kitchen"].wait_for_printed(1)
    async with api.post(f"/api/v1/orders/{old['id']}/reprint") as response:
        assert response.status == 201
    copy = await printers["kitchen"].wait_for_printed(2)
    assert b"KOPIE / COPY" in copy[1]
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "printed"])


async def test_a_held_ticket_released_after_a_clock_step_reports_the_time_it_really_waited(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A ticket waits a minute for an offline printer and is held as stale; NTP then steps the box clock back 8 hours;
    a person releases it and it prints. Its print latency (/metrics) is the minute and more it waited, on the
    monotonic clock (before: 0, taken again from the stepped wall clock once the hold had forgotten its wait)."""
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})
    async with api_client(agent) as api:
        printers["kitchen"].set_offline(True)
        assert (await post(api, order_created(1, timedelta(seconds=5))))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
        box_clock.advance(61)
        printers["kitchen"].set_offline(False)
        await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "held", timeout=6)
        box_clock.step(-8 * 3600)
        (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
        async with api.post(f"/api/v1/jobs/{job_id}/release") as response:
            assert response.status == 200
        await printers["kitchen"].wait_for_printed(1)
        await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")
        assert 61 <= await print_latency_sum(api, "kitchen") < 120


@pytest.mark.parametrize(
    ("box_off", "then_step"),
    [(3600, 0), (-2 * 3600, 0), (3600, -3600)],
    ids=["box-an-hour-ahead", "box-two-hours-behind", "box-put-right-after-central-told-the-time"],
)
async def test_with_a_central_link_ages_are_taken_on_centrals_clock_whatever_the_box_clock_says(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    box_clock: BoxClock,
    box_off: float,
    then_step: float,
) -> None:
    """created_at is central's time, so the box tells an order's age on central's clock, as central's answers give
    it (their Date header, carried on the monotonic clock): a box clock an hour ahead (a hardware clock kept in local
    time) no longer holds every fresh ticket as an hour old (before: held), one two hours behind no longer prints an
    order central resends 70 minutes late as if new (before: printed), and NTP putting the box right after central
    told the time changes nothing."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    await central.start()
    try:
        box_clock.step(box_off)
        with capture_logs() as logs:
            agent = await make_agent(
                clock=box_clock,
                central={
                    "url": central.url,
                    "token": central.token,
                    "start_jitter_s": 0.0,
                    "schedule_interval_s": 0.0,
                    "probe_max_s": 0.2,
                },
            )
            await wait_until(lambda: agent.sync is not None and agent.sync.monitor.up, what="central answering")
        # The technician's hint, once: how far the box is off.
        [off] = [e["box_minus_theirs_s"] for e in logs if e["event"] == "box_clock_off"]
        assert abs(off - box_off) <= 2
        box_clock.step(then_step)
        fresh, late = order_created(1, timedelta(seconds=5)), order_created(2, timedelta(minutes=70))
        async with api_client(agent) as api:
            assert (await post(api, fresh))[0] == 201
            assert (await post(api, late))[0] == 201
        printed = await printers["kitchen"].wait_for_printed(1)
        assert fresh["number"] in printed[0].decode("cp858")
        await eventually(
            lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs"),
            lambda rows: sorted(rows) == [(fresh["id"], "printed"), (late["id"], "held")],
        )
        assert len(printers["kitchen"].printed) == 1
    finally:
        await central.stop()


@pytest.mark.parametrize("link", [False, True], ids=["alone", "with-central"])
async def test_a_fresh_ticket_waiting_across_a_restart_is_not_held_for_a_clock_that_was_wrong(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, link: bool
) -> None:
    """A fresh order waits for the kitchen printer while the box clock is wrong (1970: no battery, NTP not there yet);
    the agent restarts (an upgrade, a crash) after the clock stepped, and the printer is back: the ticket is seconds
    old and prints. Before, its wait was taken from the wall clock at the restart (56 years) and it was held as stale,
    with a central link too, whose clock said it was seconds old."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    await central.start()
    link_cfg = {"url": central.url, "token": central.token, "start_jitter_s": 0.0, "schedule_interval_s": 0.0}
    sections = {"central": link_cfg | {"probe_max_s": 0.2}} if link else {}
    try:
        box_clock.step(-YEARS_56)
        agent = await make_agent(clock=box_clock, **sections)
        printers["kitchen"].set_offline(True)
        fresh = order_created(1, timedelta(seconds=5))
        async with api_client(agent) as api:
            assert (await post(api, fresh))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
        await agent.stop()
        box_clock.step(YEARS_56)
        printers["kitchen"].set_offline(False)
        agent = await make_agent(clock=box_clock, **sections)
        printed = await printers["kitchen"].wait_for_printed(1, timeout=6)
        assert fresh["number"] in printed[0].decode("cp858")
        await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)])
    finally:
        await central.stop()


def _held_in_log(logs: list[dict]) -> int:
    """Held tickets the log named (`job_held`) or counted (`jobs_held`)."""
    return sum(e.get("count", 1) for e in logs if e["event"] in ("job_held", "jobs_held"))


async def test_an_outage_backlog_of_stale_tickets_names_a_few_in_the_log_and_counts_the_rest(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """300 orders of the last 4 hours wait while the kitchen printer is off, with 5 fresh ones behind them. Once it is
    on: every old ticket is held, the fresh ones print, and the technician's log names the first few held tickets and
    counts the rest in a line or two pointing to where all of them are listed. Before: one `job_held` warning per
    ticket, 4,424 lines for one outage on the box's SD card (the recovery72 probe)."""
    stale = [order_created(n, timedelta(hours=4) - n * timedelta(hours=3) / 300) for n in range(300)]
    fresh = [order_created(300 + n, timedelta(seconds=5)) for n in range(5)]
    printers["kitchen"].set_offline(True)
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # its status poll saw it off
    for order in stale + fresh:
        assert (await post(api, order))[0] == 201
    with capture_logs() as logs:
        printers["kitchen"].set_offline(False)
        await printers["kitchen"].wait_for_printed(len(fresh), timeout=30)
        # Every stale ticket held, no fresh one.
        await eventually(
            lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs ORDER BY id"),
            lambda rows: rows == [(o["id"], "held") for o in stale] + [(o["id"], "printed") for o in fresh],
            timeout=30,
        )
        await wait_until(lambda: _held_in_log(logs) >= len(stale), what="every held ticket named or counted in the log")
    named = [e for e in logs if e["event"] == "job_held"]
    summaries = [e for e in logs if e["event"] == "jobs_held"]
    assert len(named) + len(summaries) <= 10, f"{len(named)} job_held and {len(summaries)} jobs_held lines"
    assert [e["order_id"] for e in named] == [o["id"] for o in stale[: len(named)]] and named
    assert len(named) + sum(e["count"] for e in summaries) == len(stale), summaries
    assert all(e["device_id"] == "kitchen" and "edge jobs --held" in e["see"] for e in summaries), summaries
    assert max(e["oldest_age_s"] for e in summaries) // 60 in range(220, 240), summaries
    assert all(60 * 45 < e["newest_age_s"] <= e["oldest_age_s"] for e in summaries), summaries


async def test_stale_orders_arriving_one_by_one_are_named_a_few_a_minute_and_the_rest_counted(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A sender works off hours of old orders one by one while the kitchen printer is on: each ticket is held as it
    comes, alone or a few at a time. The log names the first 5 of the minute, counts the next ones when the spool
    first falls idle and the rest once the minute is over (said when it next falls idle, here after a fresh order
    printed): 7 lines for 300 tickets, not 300."""
    agent = await make_agent(clock=box_clock)
    stale = [order_created(n, timedelta(hours=3)) for n in range(300)]
    with capture_logs() as logs:
        async with api_client(agent) as api:
            for order in stale:
                assert (await post(api, order))[0] == 201
            await eventually(
                lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs ORDER BY id"),
                lambda rows: rows == [(o["id"], "held") for o in stale],
            )
            # A fresh ticket printed: the spool, one task, has logged the holds it committed before it (CI at b2ab575:
            # the minute moved between the last hold's commit and its log, and it was named in the next minute).
            assert (await post(api, order_created(300, timedelta(seconds=5))))[0] == 201
            await printers["kitchen"].wait_for_printed(1)
            box_clock.advance(61)
            assert (await post(api, order_created(301, timedelta(seconds=5))))[0] == 201
            await printers["kitchen"].wait_for_printed(2)
            await wait_until(
                lambda: _held_in_log(logs) >= len(stale), what="every held ticket named or counted in the log"
            )
    named = [e["order_id"] for e in logs if e["event"] == "job_held"]
    counts = [e["count"] for e in logs if e["event"] == "jobs_held"]
    assert named == [o["id"] for o in stale[:5]], f"{len(named)} job_held lines"
    # Said at the first idle after the 5 names, then not before the minute is over (one at once, if the spool never
    # fell idle while they came).
    assert sum(counts) == len(stale) - 5 and len(counts) <= 2, counts


async def test_held_tickets_counted_but_not_yet_said_are_said_at_the_stop(
    make_agent: Callable[..., Awaitable[Agent]], box_clock: BoxClock
) -> None:
    """Tickets held within the minute after a count was said wait for the next minute's idle; the agent stops before
    it: the stop says their count, so no held ticket is missing from the log."""
    agent = await make_agent(clock=box_clock)
    first = [order_created(n, timedelta(hours=3)) for n in range(10)]
    later = [order_created(10 + n, timedelta(hours=3)) for n in range(7)]
    with capture_logs() as logs:
        async with api_client(agent) as api:
            for order in first:
                assert (await post(api, order))[0] == 201
            await eventually(
                lambda: job_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE state = 'held'"),
                lambda rows: rows == [(len(first),)],
            )
            advanced = False
            try:
                await wait_until(lambda: _held_in_log(logs) >= len(first), 3, "the first ten named or counted")
            except AssertionError:
                # A loaded machine: the spool fell idle between two of them and said a count, and the rest wait for
                # the minute (CI at 4091f5b): moved past it, the next idle says them, and later ones wait anew. The
                # minute of names starts anew too: the first few later ones are named at once (CI at a3ac70e).
                box_clock.advance(61)
                advanced = True
                await wait_until(lambda: _held_in_log(logs) >= len(first), what="the first ten named or counted")
            for order in later:
                assert (await post(api, order))[0] == 201
            await eventually(
                lambda: job_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE state = 'held'"),
                lambda rows: rows == [(len(first) + len(later),)],
            )
            await asyncio.sleep(0.5)  # the spool falls idle: within the minute, the count waits
            later_ids = {order["id"] for order in later}
            named_later = sum(e["event"] == "job_held" and e["order_id"] in later_ids for e in logs)
            assert named_later == 0 or advanced, logs
            assert _held_in_log(logs) == len(first) + named_later, logs
        await agent.stop()
    counts = [e["count"] for e in logs if e["event"] == "jobs_held"]
    assert _held_in_log(logs) == len(first) + len(later), counts
    assert counts[-1] == len(later) - named_later and counts[-1] > 0, counts
