"""A plain order number names an order of the current business day only, and never a guess between two."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.scanner import SimScanner
from tests.helpers import TOKEN, Seen, db_rows, scanner_config, wait_until

BERLIN = ZoneInfo("Europe/Berlin")
# 02:30 at night in Berlin: the business day (from 04:00) began yesterday morning.
NOW = dt.datetime(2026, 11, 30, 2, 30, tzinfo=BERLIN)


def created(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).astimezone(dt.UTC)


@pytest.fixture
async def night_agent(make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]) -> tuple[Agent, Seen]:
    """The agent in Berlin with its wall clock at NOW and the default business day start (04:00)."""
    clock = SteppedClock(wall_offset=NOW.timestamp() - time.time())
    seen = Seen()
    agent = await make_agent(
        agent={"timezone": "Europe/Berlin"}, scanners=scanner_config(sims), clock=clock, listen=seen
    )
    await seen.connected("kitchen")
    return agent, seen


async def _agent_at_0230_start(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], now: dt.datetime
) -> tuple[Agent, Seen]:
    """The agent in Berlin with its wall clock at ``now`` and its business day from 02:30 (in the hour the spring
    change skips and the autumn one repeats)."""
    seen = Seen()
    agent = await make_agent(
        agent={"timezone": "Europe/Berlin", "business_day_start": "02:30"},
        scanners=scanner_config(sims),
        clock=SteppedClock(wall_offset=now.timestamp() - time.time()),
        listen=seen,
    )
    await seen.connected("kitchen")
    return agent, seen


async def store(agent: Agent, seq: int, when: dt.datetime, **changes: Any) -> dict[str, Any]:
    assert agent.deps is not None
    order = make_order(seq, prefix="bd", created_at=when) | changes
    await agent.deps.intake.accept(order)
    return order


async def ready(agent: Agent) -> set[str]:
    return {r[0] for r in await db_rows(agent, "SELECT order_id FROM order_pickup")}


async def test_a_plain_number_matches_only_todays_business_day_and_refuses_to_guess(
    night_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """At 02:30 the business day began at 04:00 yesterday. A-1042 from 03:50 yesterday belongs to the day before:
    its number alone is refused (today's A-1042 is still being recovered) and nothing is marked ready. Once today's
    A-1042 (23:30) is here, the number names it. Two orders of today with one number: refused, never a guess. The
    order id still names any order."""
    agent, seen = night_agent
    older = await store(agent, 1, created(29, 3, 50), number="A-1042")
    sims["kitchen"].scan("A-1042")
    [first] = await seen.scans_count(1)
    assert first.outcome == "unknown" and await ready(agent) == set()
    [(detail,)] = await db_rows(agent, "SELECT detail FROM scans ORDER BY id DESC LIMIT 1")
    assert "today" in detail and "04:00" in detail

    today = await store(agent, 2, created(29, 23, 30), number="A-1042")
    sims["kitchen"].scan("A-1042")
    second = (await seen.scans_count(2))[1]
    assert (second.outcome, second.order_id) == ("order_ready", today["id"]) and await ready(agent) == {today["id"]}

    await store(agent, 3, created(29, 12), number="A-2000")
    await store(agent, 4, created(30, 1), number="A-2000")
    sims["kitchen"].scan("A-2000")
    third = (await seen.scans_count(3))[2]
    assert third.outcome == "unknown" and await ready(agent) == {today["id"]}
    [(detail,)] = await db_rows(agent, "SELECT detail FROM scans ORDER BY id DESC LIMIT 1")
    assert "2 orders" in detail and "QR" in detail

    sims["kitchen"].scan(older["id"])
    fourth = (await seen.scans_count(4))[3]
    assert (fourth.outcome, fourth.order_id) == ("order_ready", older["id"])


async def test_a_number_read_off_a_ticket_names_the_order_it_shows_and_two_that_print_alike_are_refused(
    night_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Today's order numbered "Ａ-１０４２" (full-width) prints "A-1042": the cook types that and the order is ready.
    Today's B-1043 and "B-10\u200b43" (a zero-width space inside) both print "B-1043": typed, it is refused as two
    of today's numbers are, never a guess. Before: "A-1042" named no order, and "B-1043" typed by the cook who made
    the second made the first ready and told central (the inject81 probe, F1)."""
    agent, seen = night_agent
    wide = await store(agent, 1, created(29, 23), number="\uff21-\uff11\uff10\uff14\uff12")
    sims["kitchen"].scan("A-1042")
    [first] = await seen.scans_count(1)
    assert (first.outcome, first.order_id) == ("order_ready", wide["id"])

    await store(agent, 2, created(29, 23, 10), number="B-1043")
    await store(agent, 3, created(29, 23, 20), number="B-10\u200b43")
    sims["kitchen"].scan("B-1043")
    second = (await seen.scans_count(2))[1]
    assert second.outcome == "unknown" and await ready(agent) == {wide["id"]}
    [(detail,)] = await db_rows(agent, "SELECT detail FROM scans ORDER BY id DESC LIMIT 1")
    assert "2 orders" in detail and "QR" in detail, detail


async def test_a_business_day_start_the_spring_change_skips_begins_the_day_when_the_clock_jumps_past_it(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """Berlin, business day from 02:30, on 29 March 2026 (02:00 CET jumps to 03:00 CEST: 02:30 does not exist that
    day): at 10:00 an order of 03:15 CEST is today's. Before: the missing 02:30 was read with the winter offset, as
    03:30 CEST, and orders of the day's first half hour were refused as older ones."""
    agent, seen = await _agent_at_0230_start(make_agent, sims, dt.datetime(2026, 3, 29, 10, 0, tzinfo=BERLIN))
    order = await store(agent, 1, dt.datetime(2026, 3, 29, 3, 15, tzinfo=BERLIN).astimezone(dt.UTC), number="A-77")
    sims["kitchen"].scan("A-77")
    [scan] = await seen.scans_count(1)
    assert (scan.outcome, scan.order_id) == ("order_ready", order["id"])


def _berlin(month: int, day: int, hour: int, minute: int, *, fold: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=BERLIN, fold=fold)


@pytest.mark.parametrize(
    ("now", "orders", "named"),
    [
        # 29 March, 01:59 CET, a minute before the clock jumps to 03:00 CEST: the day that began yesterday at 02:30
        # runs until the jump, so an order of 01:40 is still today's (before: the day ended at 01:30, "no order").
        (_berlin(3, 29, 1, 59), [_berlin(3, 28, 2, 0), _berlin(3, 29, 1, 40)], 1),
        # 03:05 CEST: the day began at the jump; the number names the order of 03:01, not the one of 01:50 CET (before:
        # the day began at 01:30 CET, "2 orders").
        (_berlin(3, 29, 3, 5), [_berlin(3, 29, 1, 50), _berlin(3, 29, 3, 1)], 1),
        # 25 October, 02:20 CET in the hour that comes twice (the clock went back from 03:00 CEST): the day began at
        # the first 02:30, CEST; the order of 02:35 CEST is today's, yesterday's is not (before: both, "2 orders").
        (_berlin(10, 25, 2, 20, fold=1), [_berlin(10, 24, 12, 0), _berlin(10, 25, 2, 35)], 1),
        # 02:40 CET, after the second 02:30: still the day that began at the first (before: it began again at 02:30
        # CET, and the order of 02:35 CEST was no longer today's, "no order").
        (_berlin(10, 25, 2, 40, fold=1), [_berlin(10, 24, 12, 0), _berlin(10, 25, 2, 35)], 1),
    ],
)
async def test_the_business_day_follows_the_clock_changes(
    make_agent: Callable[..., Awaitable[Agent]],
    sims: dict[str, SimScanner],
    now: dt.datetime,
    orders: list[dt.datetime],
    named: int,
) -> None:
    """Berlin, business day from 02:30 (in the hour the spring change skips and the autumn one repeats): the day
    begins when the clock reaches 02:30, or jumps past it, the first time, whatever the clock shows later that night;
    a plain number names the order of that day only."""
    agent, seen = await _agent_at_0230_start(make_agent, sims, now)
    stored = [await store(agent, n, when.astimezone(dt.UTC), number="A-9") for n, when in enumerate(orders, 1)]
    sims["kitchen"].scan("A-9")
    [scan] = await seen.scans_count(1)
    assert (scan.outcome, scan.order_id) == ("order_ready", stored[named]["id"]), scan


async def test_a_number_shared_with_a_cancelled_order_of_the_day_names_the_live_one(
    night_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A-88 was cancelled at the till and rung again as a new order with the same number: its number names the live
    order (the cancelled one's tickets are void). Before: "2 orders … scan the ticket's QR code"."""
    agent, seen = night_agent
    first = await store(agent, 1, created(29, 23, 0), number="A-88")
    assert agent.deps is not None
    await agent.deps.intake.accept(first | {"revision": 2, "status": "cancelled"})
    second = await store(agent, 2, created(29, 23, 10), number="A-88")
    sims["kitchen"].scan("A-88")
    [scan] = await seen.scans_count(1)
    assert (scan.outcome, scan.order_id) == ("order_ready", second["id"])


async def test_a_number_is_looked_up_in_centrals_business_day_while_the_box_clock_is_years_behind(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """A box booted years behind (no battery clock, NTP not there yet) with a central link: the number on today's
    ticket names today's order, the business day taken on central's clock, which its answers told. Before (clock
    probe F4): "unknown ... in today's business day (since 2021-06-14 04:00)" for an order of today."""
    central = CentralSim("test-store", token=TOKEN)
    await central.start()
    try:
        seen = Seen()
        agent = await make_agent(
            scanners=scanner_config(sims),
            clock=SteppedClock(wall_offset=-2000 * 86400),
            central={"url": central.url, "token": TOKEN, "start_jitter_s": 0, "schedule_interval_s": 0},
            listen=seen,
        )
        await seen.connected("kitchen")
        await wait_until(lambda: central.requests, what="central answered")
        order = await store(agent, 1, dt.datetime.now(dt.UTC), number="A-3001")
        sims["kitchen"].scan("A-3001")
        [scan] = await seen.scans_count(1)
        assert (scan.outcome, scan.order_id) == ("order_ready", order["id"])
    finally:
        await central.stop()


async def test_a_plain_number_names_todays_order_with_it_not_an_older_order_whose_id_it_is(
    night_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A till whose ids are one running integer and whose numbers restart daily: order id "57" (number 3) is two days
    old, today's order "912" has number 57. Scanning "57" marks today's 57 ready; the old order is left. An id still
    names an order of another day when no order of today has it as its number. Before stop 68 (the scanner probe, F4)
    the id won: the two-day-old order was marked ready and central told."""
    agent, seen = night_agent
    await store(agent, 1, created(27, 12), id="57", number="3")
    today = await store(agent, 2, created(29, 23, 30), id="912", number="57")
    sims["kitchen"].scan("57")
    [scan] = await seen.scans_count(1)
    assert (scan.order_id, scan.outcome) == (today["id"], "order_ready")
    assert await ready(agent) == {today["id"]}
    other = await store(agent, 3, created(27, 12, 5), id="58", number="4")
    sims["kitchen"].scan("58")  # no order of today has number 58: the id names the old order
    [_, by_id] = await seen.scans_count(2)
    assert (by_id.order_id, by_id.outcome) == (other["id"], "order_ready")
    assert await ready(agent) == {today["id"], other["id"]}
