"""The agent with simulated printers: status polling, stale tickets held until a person acts, failover to a backup."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.clock import Clock, SteppedClock
from edge.config import parse_settings
from edge.events import JobHeld, JobRedirected, PrinterStatusChanged
from edge.printing import driver
from edge.printing.decode import decode
from edge.sim.printer import PaperSpeed, SimPrinter
from edge.sim.smtp import SmtpSink
from edge.transports.tcp import TcpTransport
from tests.helpers import (
    api_client,
    asap,
    config_dict,
    db_rows,
    eventually,
    job_rows,
    mail_to,
    orders,
    post,
    status_reads,
    wait_until,
)


@pytest.fixture
async def start_agent(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> AsyncIterator[Callable[..., Any]]:
    """Starts agents with config overrides (``printer_options`` per printer name), each with an API client; make_agent
    stops them at the end."""

    async def start(
        printer_options: dict[str, dict[str, Any]] | None = None, clock: Clock | None = None, **overrides: Any
    ) -> tuple[Agent, aiohttp.ClientSession]:
        raw = config_dict(tmp_path / "data", printers, **overrides)
        for name, options in (printer_options or {}).items():
            raw["printers"][name].update(options)
        agent = await make_agent(parse_settings(raw, source="test"), clock=clock)
        session = api_client(agent)
        sessions.append(session)
        return agent, session

    sessions: list[aiohttp.ClientSession] = []
    yield start
    for session in sessions:
        await session.close()


def tickets_only(example: dict, count: int) -> list[dict]:
    return orders(example, count, receipt=False)


async def test_idle_printer_is_polled_and_state_changes_are_events(
    start_agent: Callable[..., Any], printers: dict[str, SimPrinter]
) -> None:
    """With no jobs at all, the status poll finds paper out (one event), then paper back (one event)."""
    agent, _ = await start_agent(printer_options={"kitchen": {"status_poll_s": 0.2}})
    events: list[PrinterStatusChanged] = []
    agent.bus.subscribe(events.append, PrinterStatusChanged)
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "online", timeout=5)
    printers["kitchen"].paper_out = True
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out", timeout=5)
    printers["kitchen"].paper_out = False
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "online", timeout=5)
    kitchen = [(e.old, e.new) for e in events if e.printer == "kitchen"]
    assert kitchen == [("unknown", "online"), ("online", "paper_out"), ("paper_out", "online")]
    assert printers["kitchen"].jobs == []  # status queries only, never a job byte


@pytest.mark.parametrize("flag", ["paper_out", "cover_open"])
async def test_fault_pauses_then_resumes_within_two_seconds(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter], flag: str
) -> None:
    """Paper out or cover open: the job waits with no attempt spent and nothing goes dead; fixed: it prints within 2
    s."""
    agent, api = await start_agent()
    kitchen = printers["kitchen"]
    setattr(kitchen, flag, True)
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag)
    await status_reads(kitchen, 2)  # several probes while paused
    assert await job_rows(agent) == [("queued", 0, 0)]
    setattr(kitchen, flag, False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await kitchen.wait_for_printed(1, timeout=5)
    assert loop.time() - start < 2.0
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)])


async def test_silent_printer_is_unknown_and_still_prints(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A printer that never answers DLE EOT: state unknown (not "paper OK"), and the ticket prints anyway."""
    printers["kitchen"].answer_status = False
    agent, api = await start_agent()
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    printed = await printers["kitchen"].wait_for_printed(1, timeout=10)
    assert decode(printed[0]).qr_codes == ["edge:v1:ord_000:kitchen"]
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)])
    assert agent.spoolers["kitchen"].state.value == "unknown"


async def test_a_printer_that_never_answers_status_prints_a_rush_without_waiting_on_every_ticket(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Some printers, and one-way print servers, never answer DLE EOT. Every ticket waited for a reply before it and
    another after it, each status_timeout long (3 s a ticket at the default 1.5 s): ten tickets of a rush asked 20
    times and took at least 10 s here at 0.5 s. A printer that has never answered and stayed silent twice is taken
    for one that cannot: its tickets go without asking (the idle poll still asks), and the technician is told once."""
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    agent, api = await start_agent()
    with capture_logs() as logs:
        for order in tickets_only(example_order, 10):
            assert (await post(api, order))[0] == 201
        await kitchen.wait_for_printed(10, timeout=30)
    # The first ticket's two, then none per ticket: a few more at most, from the status poll (every status_poll_s, also
    # in a rush), never one or two per ticket.
    assert kitchen.status_asked < 10
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)] * 10)
    assert [e["device_id"] for e in logs if e["event"] == "printer_silent"] == ["kitchen"]


async def test_a_rush_faster_than_a_printer_without_status_prints_is_no_outage_and_mails_nobody(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """Tickets sent without asking (a printer that never answers status) come faster than paper does; its network
    interface serves one connection and keeps three waiting (Epson's UB-E02 Technical Reference Guide, 4.5), and
    refuses a fourth. Refused while our own tickets may still be queued in it, it is busy, not gone: the ticket waits
    its turn. Before: 12 tickets at 250 mm/s took the printer offline and back 4 times, and the manager got a
    critical mail "printer not reachable" while it printed all along."""
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    kitchen.speed = PaperSpeed()
    agent, api = await start_agent(**mail_to(sink))  # every alert mailed at once
    changes: list[PrinterStatusChanged] = []
    agent.bus.subscribe(changes.append, PrinterStatusChanged)
    for order in tickets_only(example_order, 12):
        assert (await post(api, order))[0] == 201
    await kitchen.wait_for_printed(12, timeout=60)
    await asyncio.sleep(1)  # room for a late mail
    assert [c.new for c in changes if c.printer == "kitchen" and c.new == "offline"] == []
    assert [m["Subject"] for m in sink.messages] == []


async def test_a_printer_without_status_that_loses_power_after_a_rush_is_offline_once_four_tickets_could_print(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter], monkeypatch: Any
) -> None:
    """Its interface holds four connections at most (one served, three waiting: UB-E02 TRG 4.5), so after a rush no
    more than four of our tickets can still be in it: refused longer than those take, it is gone, whatever the rush's
    length. Before: it waited until the whole rush would have printed at the slowest printer's pace (after 20
    tickets, minutes at the real pace) while the next ticket waited for a printer that had lost its power. The slowest
    printer is ten times quicker here, so the test takes seconds, not minutes."""
    monkeypatch.setattr(driver, "_SLOW_PRINTER_LINES_PER_S", 30.0)
    monkeypatch.setattr(driver, "_SLOW_PRINTER_CUT_S", 0.1)
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    kitchen.speed = PaperSpeed(mm_per_s=1000)  # still quicker than that slowest printer: the rush queues in it
    agent, api = await start_agent(printer_options={"kitchen": {"status_timeout": 0.2}})
    rush, late = tickets_only(example_order, 21)[:20], tickets_only(example_order, 21)[20]
    for order in rush:
        assert (await post(api, order))[0] == 201
    await kitchen.wait_for_printed(20, timeout=30)
    job_s = driver.PrinterDriver("t", TcpTransport("t", "127.0.0.1", 1), status_timeout=0.2)._job_time(
        kitchen.printed[-1]
    )
    kitchen.set_offline(True)  # its power is pulled: the connections it still had waiting are gone with it
    off = time.monotonic()
    assert (await post(api, late))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline", timeout=20 * job_s)
    took = time.monotonic() - off
    # Four tickets' time, twice that on a loaded machine; before, the rush's twenty.
    assert took < 8 * job_s + 1, (took, job_s)


async def test_stale_ticket_is_held_until_released_or_discarded(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Printer off longer than the stale age: when it returns, nothing prints; held jobs wait for release (prints, with
    the
    date) or discard (never prints), and each hold is an event."""
    clock = SteppedClock()
    agent, api = await start_agent(printing={"stale_ticket_min": 1}, clock=clock)  # the clock moves past it
    held: list[JobHeld] = []
    agent.bus.subscribe(held.append, JobHeld)
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    first, second = tickets_only(asap(example_order), 2)
    for order in (first, second):
        assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw it off
    clock.advance(61)  # a minute passes with the printer off: longer than the stale age
    kitchen.set_offline(False)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["held", "held"], timeout=10)
    await asyncio.sleep(0.5)
    assert kitchen.printed == []
    assert sorted(e.order_id for e in held) == ["ord_000", "ord_001"] and all(e.age_s > 0.6 for e in held)

    async with api.get("/api/v1/jobs", params={"state": "held"}) as response:
        listed = (await response.json())["jobs"]
    ids = {j["order_id"]: j["id"] for j in listed}
    assert set(ids) == {"ord_000", "ord_001"}

    async with api.post(f"/api/v1/jobs/{ids['ord_001']}/discard") as response:
        discarded = await response.json()
        # held_reason says why a job is held, while it is: a discarded one is not (before: still "stale").
        assert response.status == 200 and (discarded["state"], discarded["held_reason"]) == ("discarded", None)
    async with api.post(f"/api/v1/jobs/{ids['ord_000']}/release") as response:
        assert response.status == 200
    printed = await kitchen.wait_for_printed(1)
    text = decode(printed[0]).text
    assert "N-000" in text and re.search(
        r"Bestellt: \d\d\.\d\d\.\d{4} \d\d:\d\d", text
    )  # released: the original order time, with its date
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "discarded"])
    await asyncio.sleep(0.3)
    assert len(kitchen.printed) == 1  # the discarded one never

    async with api.post(f"/api/v1/jobs/{ids['ord_001']}/release") as response:
        assert response.status == 409 and "only held jobs" in (await response.json())["reason"]


async def test_release_all_prints_every_held_job(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """`release --all`: every held job prints, oldest first; none is held again for its age."""
    clock = SteppedClock()
    agent, api = await start_agent(staleness={"kitchen": 0.01}, clock=clock)
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    for order in tickets_only(asap(example_order), 3):
        assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw it off
    clock.advance(61)  # a minute passes with the printer off: longer than the stale age
    kitchen.set_offline(False)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["held"] * 3, timeout=10)
    async with api.post("/api/v1/jobs/release-held") as response:
        assert response.status == 200 and len((await response.json())["released"]) == 3
    printed = await kitchen.wait_for_printed(3)
    assert [
        "N-000" in decode(printed[0]).text,
        "N-001" in decode(printed[1]).text,
        "N-002" in decode(printed[2]).text,
    ] == [True] * 3


async def test_fresh_ticket_is_not_held(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A short outage (shorter than the stale age) prints the ticket normally when the printer returns."""
    agent, api = await start_agent(printing={"stale_ticket_min": 1})
    printers["kitchen"].set_offline(True)
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw the outage
    printers["kitchen"].set_offline(False)
    await printers["kitchen"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)])


async def test_failover_moves_waiting_tickets_once_and_primary_takes_new_ones(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Primary off longer than failover_after_s: its tickets print on the backup with the UMGELEITET header, exactly
    once;
    when the primary is back, new tickets go to it again."""
    agent, api = await start_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 0.5})
    redirected: list[JobRedirected] = []
    agent.bus.subscribe(redirected.append, JobRedirected)
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    batch = tickets_only(example_order, 4)
    for order in batch[:3]:
        assert (await post(api, order))[0] == 201
    printed = await front.wait_for_printed(3, timeout=10)
    for n, data in enumerate(printed):
        text = decode(data).text
        assert "UMGELEITET von kitchen" in text and f"N-00{n}" in text
        assert decode(data).qr_codes == [f"edge:v1:ord_00{n}:kitchen"]  # scans still mark the kitchen ticket
    assert sorted(e.job_id for e in redirected) == sorted(
        r[0] for r in await job_rows(agent, "SELECT id FROM print_jobs")
    )
    assert {(e.from_printer, e.to_printer) for e in redirected} == {("kitchen", "front")}

    kitchen.set_offline(False)
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is None, timeout=5)
    assert (await post(api, batch[3]))[0] == 201
    back = await kitchen.wait_for_printed(1)
    assert "N-003" in decode(back[0]).text and "UMGELEITET" not in decode(back[0]).text
    # Every job printed: nothing is left that could come out on the other printer too.
    await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)] * 4)
    assert len(kitchen.printed) == 1 and len(front.printed) == 3  # nothing printed on both
    rows = await db_rows(agent, "SELECT order_id, printer, redirected_from, state FROM print_jobs ORDER BY id")
    assert rows == [(f"ord_00{n}", "front", "kitchen", "printed") for n in range(3)] + [
        ("ord_003", "kitchen", None, "printed")
    ]


async def test_tickets_that_come_back_to_their_own_printer_after_the_backup_failed_too_are_not_marked_redirected(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Kitchen and its backup on one breaker: both go off, the kitchen's tickets move to the backup, which is off
    too, and when the kitchen printer is back first they move back and print there, as the originals they are: no
    UMGELEITET header naming the printer they print on, redirected_from empty. Before (print probe round 3, s08):
    "UMGELEITET von kitchen" on the kitchen's own paper, which makes a cook wonder whether another station has it."""
    agent, api = await start_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 0.5})
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    front.set_offline(True)
    for order in tickets_only(example_order, 2):
        assert (await post(api, order))[0] == 201
    await eventually(
        lambda: db_rows(agent, "SELECT DISTINCT printer FROM print_jobs"),
        lambda rows: rows == [("front",)],
        what="the tickets moved to the backup",
    )
    kitchen.set_offline(False)
    printed = await kitchen.wait_for_printed(2, timeout=15)
    assert ["UMGELEITET" in decode(data).text for data in printed] == [False, False], [decode(d).text for d in printed]
    await eventually(
        lambda: db_rows(agent, "SELECT printer, redirected_from, state FROM print_jobs"),
        lambda rows: rows == [("kitchen", None, "printed")] * 2,
        what="both printed on the kitchen printer, unmarked",
    )


async def test_a_failover_the_full_card_refuses_says_so_once_and_moves_the_tickets_once_there_is_room(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The primary went off, and the card filled before failover_after_s was up: the move is tried again at every
    check (0.5 s) and said once, not with a traceback at every try (two a second, into a journal on the same full
    card). Once there is room the tickets move and print on the backup. Before, each check logged the traceback."""
    agent, api = await start_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 2})
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    db = agent.settings.agent.db_path
    with capture_logs() as logs:
        for order in tickets_only(example_order, 2):
            assert (await post(api, order))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].paused_since is not None, 10, "the kitchen spool paused")
        await asyncio.to_thread(refuse_updates, db, "print_jobs", True)  # what a full card does to the move
        await wait_until(lambda: any(e["event"] == "failover_waits_for_storage" for e in logs), 10, "the refusal")
        await asyncio.sleep(1.5)  # three more checks
        assert [e["event"] for e in logs if e["event"].startswith("failover_")] == ["failover_waits_for_storage"]
        await asyncio.to_thread(refuse_updates, db, "print_jobs", False)
        await front.wait_for_printed(2, timeout=10)
    assert not any(e.get("exc_info") for e in logs), [e for e in logs if e.get("exc_info")]


def refuse_updates(db: Path, table: str, refuse: bool) -> None:
    """A trigger that refuses every UPDATE of ``table`` with SQLite's full-disk message (or none): the agent's store
    reads it as a full card, for that table only."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"DROP TRIGGER IF EXISTS full_{table}")
        if refuse:
            conn.execute(
                f"CREATE TRIGGER full_{table} BEFORE UPDATE ON {table}"
                " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
    conn.close()


async def test_a_change_ticket_follows_its_earlier_ticket_printed_on_the_backup_at_once(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen ticket failed over to the backup and is printing there when the kitchen printer is back and the
    order changes: the change ticket (for the kitchen printer) waits for the earlier ticket, then prints within
    seconds of it, not at the kitchen spool's next idle look (status_poll_s, here a minute)."""
    agent, api = await start_agent(
        stations={"kitchen": ["kitchen", "front"]},
        printing={"failover_after_s": 0.5},
        printer_options={"kitchen": {"status_poll_s": 60}},
    )
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    front.bytes_per_s = 400  # the redirected ticket takes about a second
    order = tickets_only(example_order, 1)[0]
    assert (await post(api, order))[0] == 201
    await eventually(
        lambda: db_rows(agent, "SELECT printer, state FROM print_jobs"),
        lambda rows: rows == [("front", "printing")],
        what="the ticket printing on the backup",
    )
    kitchen.set_offline(False)
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is None, timeout=5)
    changed = {**order, "revision": 2, "items": [*order["items"], {**order["items"][0], "sku": "EXTRA", "qty": 1}]}
    assert (await post(api, changed))[0] == 200
    await front.wait_for_printed(1)
    loop = asyncio.get_running_loop()
    first_done = loop.time()
    change = await kitchen.wait_for_printed(1, timeout=20)
    assert loop.time() - first_done < 5
    assert "ÄNDERUNG" in decode(change[0]).text
    await eventually(
        lambda: db_rows(agent, "SELECT printer, variant, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("front", None, "printed"), ("kitchen", "change", "printed")],
        what="both printed, each on its printer",
    )


async def test_a_primary_that_came_back_to_nothing_waiting_gets_the_full_failover_time_at_its_next_outage(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer ran out of paper, its ticket moved to the front printer after failover_after_s; the roll
    changed, it came back to nothing waiting. At its next paper out, a new ticket waits the whole failover_after_s for
    the cook to change the roll before it moves: the stuck time starts again once nothing waited. Before stop 82 no
    test pinned that (`not burst` → `burst` in the spool's loop survived mutation since stop 73): a stuck time kept
    from the first outage would move the new ticket to the front printer at once."""
    agent, api = await start_agent(
        stations={"kitchen": ["kitchen", "front"]},
        printing={"failover_after_s": 2.0},
        printer_options={"kitchen": {"status_poll_s": 0.2}},
    )
    kitchen, front = printers["kitchen"], printers["front"]
    first, second = tickets_only(example_order, 2)
    kitchen.paper_out = True
    assert (await post(api, first))[0] == 201
    await front.wait_for_printed(1, timeout=10)
    kitchen.paper_out = False
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is None, timeout=5)
    await asyncio.sleep(0.5)  # the spool looks for work and finds none
    kitchen.paper_out = True
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is not None, timeout=5, what="the poll's pause")
    assert (await post(api, second))[0] == 201
    await asyncio.sleep(1.0)  # half the failover time; failover looks every 0.5 s
    assert await job_rows(agent, "SELECT order_id, printer, state FROM print_jobs WHERE order_id = 'ord_001'") == [
        ("ord_001", "kitchen", "queued")
    ]
    moved = await front.wait_for_printed(2, timeout=10)
    assert "N-001" in decode(moved[1]).text and "UMGELEITET von kitchen" in decode(moved[1]).text


async def test_no_failover_before_the_configured_time(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A short pause of the primary (shorter than failover_after_s) does not move its tickets."""
    agent, api = await start_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 30})
    printers["kitchen"].paper_out = True
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    await asyncio.sleep(1.5)
    assert printers["front"].printed == [] and await job_rows(agent, "SELECT printer, state FROM print_jobs") == [
        ("kitchen", "queued")
    ]
    printers["kitchen"].paper_out = False
    await printers["kitchen"].wait_for_printed(1)


async def test_a_primary_back_within_the_failover_time_keeps_its_tickets_while_it_prints_the_first(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cook changes the roll in well under failover_after_s; the kitchen printer is back and prints the ticket that
    waited, slowly, and the failover time runs out meanwhile, with two more tickets come in behind it. It is printing:
    they stay with it, in order, none moved to the backup. (Spooler.stuck_for counts only while the spool is paused: a
    mutant counting from the pause until a ticket is out moved them.)"""
    agent, api = await start_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 1.0})
    kitchen = printers["kitchen"]
    kitchen.paper_out = True
    first, *more = tickets_only(example_order, 3)
    assert (await post(api, first))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is not None, what="the kitchen spool paused")
    kitchen.speed = PaperSpeed(mm_per_s=60)  # about 2.5 s a ticket: the failover time runs out in the first
    kitchen.paper_out = False
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is None, what="the kitchen spool going on")
    for order in more:
        assert (await post(api, order))[0] == 201
    await wait_until(lambda: len(kitchen.printed) + len(printers["front"].printed) >= 3, 30, "three tickets out")
    rows = await eventually(
        lambda: job_rows(agent, "SELECT printer, state FROM print_jobs ORDER BY id"),
        lambda rows: all(state == "printed" for _, state in rows),
    )
    assert rows == [("kitchen", "printed")] * 3 and printers["front"].printed == []


async def test_retried_dead_job_is_not_held_for_its_age(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """`edge retry` on a dead job older than the stale age: a person asked for it, so it prints instead of being
    held."""
    clock = SteppedClock()
    agent, api = await start_agent(printing={"stale_ticket_min": 1}, spool={"max_attempts": 1}, clock=clock)
    kitchen = printers["kitchen"]
    kitchen.drop_after = 10
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "dead")
    clock.advance(61)  # now older than the stale age
    (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
    async with api.post(f"/api/v1/jobs/{job_id}/retry") as response:
        assert response.status == 200
    printed = await kitchen.wait_for_printed(2)
    assert "KOPIE / COPY" in decode(printed[-1]).text
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")


async def test_no_healthy_backup_keeps_jobs_on_the_primary(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Primary and backup both down: the tickets stay queued on the primary (said once in the log), and print there
    when it returns."""
    with capture_logs() as logs:
        printers["front"].paper_out = True
        agent, api = await start_agent(
            stations={"kitchen": ["kitchen", "front"]},
            printing={"failover_after_s": 0.3},
            printer_options={"front": {"status_poll_s": 0.1}},
        )
        await wait_until(lambda: agent.spoolers["front"].state.value == "paper_out")  # found by its idle poll
        printers["kitchen"].set_offline(True)
        for order in tickets_only(example_order, 2):
            assert (await post(api, order))[0] == 201
        # Failover looked past failover_after_s and found no healthy backup: from here on nothing may move.
        await wait_until(lambda: any(e["event"] == "failover_no_backup" for e in logs), what="failover checked")
        assert await job_rows(agent, "SELECT printer, state FROM print_jobs") == [("kitchen", "queued")] * 2
        printers["kitchen"].set_offline(False)
        await printers["kitchen"].wait_for_printed(2)
    assert [e["station"] for e in logs if e["event"] == "failover_no_backup"] == ["kitchen"]


async def test_a_ticket_left_on_a_printer_now_only_its_stations_backup_moves_to_the_working_primary(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A ticket waits on the kitchen printer, which is off; the technician gives the station a new primary (the front
    printer here), keeps the old one as its backup and restarts the agent. The primary works: the ticket must not
    wait for the old printer. Once that printer has been paused failover_after_s, its waiting tickets of the station
    move to the first healthy printer the station lists. Before, failover moved tickets only off a paused primary: the
    ticket waited for the old printer to come back (the changes probe helper, 4 of 4, with a change ticket)."""
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    agent, api = await start_agent()
    [order] = tickets_only(example_order, 1)
    assert (await post(api, order))[0] == 201
    await agent.stop()
    await start_agent(stations={"kitchen": ["front", "kitchen"]}, printing={"failover_after_s": 0.5})
    [moved] = await front.wait_for_printed(1, timeout=10)
    assert "N-000" in decode(moved).text and "UMGELEITET von kitchen" in decode(moved).text
    assert kitchen.printed == []


async def test_a_primary_that_cuts_every_ticket_short_does_not_kill_it_the_backup_prints_it(
    start_agent: Callable[..., Any], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer answers status but hangs up in the middle of every ticket (a failing interface board, a
    loose jack); the station has the front printer as backup, and failover_after_s is the default minute. The spool
    never pauses (the printer reads online between tickets), so waiting for a pause moved nothing: after five attempts
    in about 15 s the ticket was dead and never printed, with a healthy backup idle (the print probe, s08). A printer
    that cut two tickets short in a row is failing: its tickets move to the backup, where they print marked COPY (what
    came out on the kitchen printer may be in the cook's hand) and UMGELEITET."""
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.drop_every_job_after = 60
    agent, api = await start_agent(
        stations={"kitchen": ["kitchen", "front"]}, spool={"retry_base_s": 1.0, "retry_max_s": 60.0}
    )
    assert (await post(api, tickets_only(example_order, 1)[0]))[0] == 201
    printed = await front.wait_for_printed(1, timeout=20)
    text = decode(printed[0]).text
    assert "UMGELEITET von kitchen" in text and "KOPIE / COPY" in text and "N-000" in text, text
    await eventually(
        lambda: job_rows(agent, "SELECT printer, state FROM print_jobs"), lambda rows: rows == [("front", "printed")]
    )
    assert len(kitchen.printed) == 2  # two fragments (the second a COPY's), then the backup took it
