"""A spool's marks share commits: a burst of waiting jobs is claimed in one commit, a printed mark rides on the next
claim. After a crash nothing is lost and every print whose mark was not yet durable comes out again marked COPY."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.events import Event, JobPrinted, PrinterStatusChanged
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, api_client, db_rows, eventually, post, wait_until, wal_commits
from tests.printing.conftest import LoopClock

ORDERS = 10


async def test_a_backlog_prints_with_a_few_commits_not_two_per_ticket(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """Ten tickets wait for the kitchen printer; it comes back: all ten print, each once and as an original, and the
    marks take a few commits (counted in the WAL file), not a 'printing' and a 'printed' commit per ticket (20).
    Fewer than one a ticket: here 3, but on a loaded machine a printed mark that waited its 50 ms for a claim to ride
    on commits alone more often (6 in a CI run at `cffb7e7`, against a bound of 5 then)."""
    agent = await make_agent()
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    async with api_client(agent) as api:
        for n in range(ORDERS):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    db = agent.settings.agent.db_path
    before = await asyncio.to_thread(wal_commits, db)
    kitchen.set_offline(False)
    await eventually(
        lambda: db_rows(agent, "SELECT state, copy FROM print_jobs"),
        lambda rows: rows == [("printed", 0)] * ORDERS,
        what="every ticket printed",
    )
    commits = await asyncio.to_thread(wal_commits, db) - before
    assert len(kitchen.printed) == ORDERS
    assert commits < ORDERS, f"{commits} commits for {ORDERS} tickets"


@pytest.mark.crash
async def test_sigkill_while_printed_marks_wait_for_a_commit_reprints_them_as_copy(tmp_path: Path) -> None:
    """A backlog prints in bursts; the agent is SIGKILLed the moment the last ticket is on paper, while its printed
    mark still waits to ride on a commit. After the restart every ticket is printed, no ticket twice as an original,
    and the ones whose mark was lost come out again marked COPY (at most one burst's worth). The mark waits 50 ms: on
    a loaded machine the kill can come after its commit (it did once, 2 Dec 2026), and then another backlog is tried."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    port = agent.port
    db = tmp_path / "data" / "edge.db"
    orders: list[str] = []
    try:
        await agent.start()
        for attempt in range(5):
            kitchen.set_offline(True)
            async with api_client(port) as api:
                for n in range(ORDERS):
                    order = make_order(n, prefix=f"kill{attempt}", print_receipt=False)
                    assert (await post(api, order))[0] == 201
                    orders.append(order["id"])
            kitchen.set_offline(False)
            await kitchen.wait_for_printed(len(orders))
            await agent.kill()
            lost = [r[0] for r in await db_rows(db, "SELECT id FROM print_jobs WHERE state = 'printing'")]
            await agent.start()
            if lost:
                break
        assert lost, "not once did the kill come while a printed mark waited for its commit"
        await eventually(
            lambda: db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE state = 'printed'"),
            lambda rows: rows[0][0] == len(orders),
            what="every ticket printed after the restart",
        )
        await kitchen.wait_for_printed(len(orders) + len(lost))
        originals: collections.Counter[str] = collections.Counter()
        copies: collections.Counter[str] = collections.Counter()
        for data in kitchen.printed:
            doc = decode(data)
            order_id = doc.qr_codes[0].split(":")[2]
            (copies if "KOPIE / COPY" in doc.text else originals)[order_id] += 1
        assert sorted(originals) == sorted(orders)
        assert set(originals.values()) == {1}
        assert 1 <= sum(copies.values()) == len(lost) <= 16, (lost, copies)
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()


async def _one_ticket_on_paper(
    make_agent: Callable[..., Awaitable[Agent]], kitchen: SimPrinter, loop_clock: LoopClock
) -> Agent:
    """An agent on the stopped clock, one order posted, its kitchen ticket out on paper (its mark not yet recorded)."""
    agent = await make_agent(clock=loop_clock)
    loop_clock.freeze()
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await loop_clock.until(lambda: kitchen.printed, "the ticket on paper")
    return agent


async def test_a_printed_mark_with_nothing_to_ride_on_is_committed_after_50_ms(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """One ticket and nothing after it: it is on paper at once, but its 'printed' row (and central's 'printed' event)
    waits 50 ms for a claim to ride on, then is committed on its own; no sooner, and not much later."""
    kitchen = printers["kitchen"]
    agent = await _one_ticket_on_paper(make_agent, kitchen, loop_clock)
    await loop_clock.run(0.04)
    assert await db_rows(agent, "SELECT state FROM print_jobs") == [("printing",)]
    await loop_clock.run(0.02)
    await loop_clock.settle()
    assert await db_rows(agent, "SELECT state FROM print_jobs") == [("printed",)]
    assert [e for (e,) in await db_rows(agent, "SELECT event FROM outbox ORDER BY id")] == ["received", "printed"]


async def test_a_graceful_stop_records_the_printed_marks_still_waiting_to_ride(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """The agent is stopped (SIGTERM) right after a ticket came out, while its printed mark waits for a commit: the
    stop records it, so the ticket is 'printed' and central hears so (left 'printing', the next start would print it
    again as COPY)."""
    kitchen = printers["kitchen"]
    agent = await _one_ticket_on_paper(make_agent, kitchen, loop_clock)
    assert await db_rows(agent, "SELECT state FROM print_jobs") == [("printing",)]
    await agent.stop()
    assert await db_rows(agent, "SELECT state, copy FROM print_jobs") == [("printed", 0)]
    assert [e for (e,) in await db_rows(agent, "SELECT event FROM outbox ORDER BY id")] == [
        "received",
        "printed",
    ]


async def _commits_of_printed_marks(agent: Agent) -> list[int]:
    """How many printed marks each commit recorded, in order: marks recorded together share their printed_at."""
    rows = await db_rows(agent, "SELECT printed_at FROM print_jobs WHERE state = 'printed' ORDER BY id")
    return [len(list(group)) for _, group in itertools.groupby(at for (at,) in rows)]


async def test_a_backlog_is_claimed_in_bursts_of_at_most_16_once_a_job_went_out(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """Twenty tickets wait for the kitchen printer (out of paper); a new roll goes in. The spool claims one ticket (no
    job has gone out yet to judge the printer by); it goes out in no time (the clock is stopped), so the spool claims
    16 next, the most one commit takes (a crash reprints as COPY at most that many), then the last 3. Each claim
    carries the printed marks of the jobs before it: the marks are recorded 1, 16, 3 per commit, every ticket once, as
    an original."""
    kitchen = printers["kitchen"]
    agent = await _burst_behind_a_paused_printer(make_agent, kitchen, loop_clock, lambda: None)
    await loop_clock.run(1.0)  # the next probe finds the paper back (each order posted woke one: 1 s apart by now)
    await loop_clock.until(lambda: len(kitchen.printed) == 20, "every ticket on paper")
    await loop_clock.run(0.06)  # the last marks' ride
    await loop_clock.settle()
    assert await _commits_of_printed_marks(agent) == [1, 16, 3]
    assert not any("KOPIE" in decode(paper).text for paper in kitchen.printed)


async def test_a_slow_printer_gets_its_jobs_claimed_one_per_commit(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """A printer that takes longer than 50 ms per ticket (here at least a tenth of a second: 5,000 bytes/s) gets one
    job per claim: a crash never leaves more than the ticket at the printer claimed but unsent. Four tickets that
    waited are recorded printed one per commit."""
    agent = await make_agent()
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    async with api_client(agent) as api:
        for n in range(4):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    kitchen.bytes_per_s = 5_000
    kitchen.set_offline(False)
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs"),
        lambda rows: rows == [("printed",)] * 4,
        what="every ticket printed",
    )
    assert min(len(job) for job in kitchen.printed) > 500  # each took over 0.1 s at 5,000 bytes/s
    assert await _commits_of_printed_marks(agent) == [1, 1, 1, 1]


async def _burst_behind_a_paused_printer(
    make_agent: Callable[..., Awaitable[Agent]],
    kitchen: SimPrinter,
    loop_clock: LoopClock,
    at_the_claim: Callable[[], None],
    heard: Callable[[Event], None] = lambda event: None,
) -> Agent:
    """20 tickets wait behind a kitchen printer out of paper; the paper comes back. The first ticket goes out alone;
    its printed mark is published with the claim of the 16 behind it, just before the first of those goes out: that
    is when ``at_the_claim`` runs (``heard`` gets every event)."""
    marks: list[JobPrinted] = []

    def listen(event: Event) -> None:
        heard(event)
        if isinstance(event, JobPrinted):
            marks.append(event)
            if len(marks) == 1:
                at_the_claim()

    agent = await make_agent(clock=loop_clock, listen=listen)
    kitchen.paper_out = True
    loop_clock.freeze()
    async with api_client(agent) as api:
        for n in range(20):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
    await loop_clock.until(lambda: agent.spoolers["kitchen"].state.value == "paper_out", "paused")
    kitchen.paper_out = False
    return agent


async def test_a_stop_during_a_burst_puts_the_claimed_jobs_not_yet_sent_back_in_line(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """The agent is told to stop (SIGTERM) just as the spool has claimed 16 waiting tickets in one commit: the ticket
    going out finishes and is recorded printed, the 15 claimed behind it go back to 'queued' unsent and unmarked (not
    left 'printing', which the next start would print as COPY though nobody ever saw them)."""
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        loop_clock.thaw()
        stopping.append(asyncio.create_task(agent.stop()))

    kitchen = printers["kitchen"]
    agent = await _burst_behind_a_paused_printer(make_agent, kitchen, loop_clock, stop)
    loop_clock.advance(1.0)  # the next probe finds the paper back (each order posted woke one: 1 s apart by now)
    await loop_clock.until(lambda: stopping, "the stop", settle=False)
    await stopping[0]
    rows = await db_rows(agent, "SELECT state, copy FROM print_jobs ORDER BY id")
    assert rows == [("printed", 0)] * 2 + [("queued", 0)] * 18
    assert len(kitchen.printed) == 2


async def test_paper_out_on_the_first_ticket_of_a_burst_puts_the_others_back_in_line_unmarked(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """The spool has claimed 16 waiting tickets in one commit; paper runs out in the middle of the first of them. That
    one waits to print again as COPY (part of it is on paper); the 15 claimed behind it go back to 'queued' unsent and
    unmarked; the spool pauses, and the alert's state change says what happened."""
    changes: list[PrinterStatusChanged] = []

    def heard(event: Event) -> None:
        if isinstance(event, PrinterStatusChanged) and event.printer == "kitchen":
            changes.append(event)

    kitchen = printers["kitchen"]
    agent = await _burst_behind_a_paused_printer(
        make_agent, kitchen, loop_clock, lambda: setattr(kitchen, "paper_out_after", 50), heard
    )
    await loop_clock.run(1.0)  # the next probe finds the paper back (each order posted woke one: 1 s apart by now)
    await loop_clock.until(lambda: [c.new for c in changes].count("paper_out") == 2, "paused again")
    rows = await db_rows(agent, "SELECT state, attempts, copy FROM print_jobs ORDER BY id")
    assert rows == [("printed", 0, 0), ("queued", 0, 1)] + [("queued", 0, 0)] * 18
    assert (changes[-1].new, changes[-1].detail) == ("paper_out", "paper out after the job")
    assert len(kitchen.printed) == 2 and len(kitchen.printed[1]) == 50  # the first whole, half of the second


def _hold_the_write_lock(db: Path, taken: threading.Event, release: threading.Event) -> None:
    """Another process's write transaction (a backup, a technician's sqlite3 shell) holding the write lock."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        release.wait(30)
        conn.execute("ROLLBACK")


async def test_a_printed_mark_whose_commit_fails_rides_on_the_next_one(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """A ticket is on paper; the commit that should record it finds the database locked by another process past the
    busy timeout (5 s) and fails. The mark is kept: once the lock is gone, the next commit records the ticket printed
    (and tells central once); it is not left 'printing' to come out again as COPY at the next start."""
    kitchen = printers["kitchen"]
    agent = await _one_ticket_on_paper(make_agent, kitchen, loop_clock)
    taken, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_write_lock, args=(agent.settings.agent.db_path, taken, release))
    holder.start()  # a thread of its own: not the agent's work the stopped clock waits for
    try:
        await loop_clock.until(taken.is_set, "the lock taken", settle=False)
        with capture_logs() as logs:
            await loop_clock.run(0.06)  # the mark's ride: its commit waits for the lock, then fails

            def failed() -> bool:
                return any(e["event"] == "spool_waits_for_storage" for e in logs)

            await loop_clock.until(failed, "the commit failed")
    finally:
        release.set()
        await asyncio.to_thread(holder.join)
    assert await db_rows(agent, "SELECT state FROM print_jobs") == [("printing",)]
    await loop_clock.run(1.0)  # the spool's pause after an error
    await loop_clock.until(lambda: True, "settled")
    assert await db_rows(agent, "SELECT state, copy FROM print_jobs") == [("printed", 0)]
    assert [e for (e,) in await db_rows(agent, "SELECT event FROM outbox ORDER BY id")] == ["received", "printed"]
    assert len(kitchen.printed) == 1


async def test_a_ticket_cut_short_in_a_burst_is_retried_as_copy_and_the_burst_goes_on(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock
) -> None:
    """The spool has claimed 16 waiting tickets in one commit; the printer hangs up in the middle of the first of them
    and is fine when asked again. That ticket counts a failed attempt and is retried marked COPY; the 15 claimed behind
    it go out meanwhile, each once, as originals: one bad send does not strand the burst."""
    kitchen = printers["kitchen"]
    agent = await _burst_behind_a_paused_printer(
        make_agent, kitchen, loop_clock, lambda: setattr(kitchen, "drop_after", 50)
    )
    await loop_clock.run(1.0)  # the next probe finds the paper back (each order posted woke one: 1 s apart by now)
    await loop_clock.until(lambda: len(kitchen.printed) >= 20, "the tickets on paper, the cut one half")
    await loop_clock.run(0.5)  # the cut ticket's retry (0.05-0.1 s after it failed) and the last marks' ride
    await loop_clock.until(lambda: len(kitchen.printed) == 21, "the cut ticket again")
    await loop_clock.run(0.1)
    rows = await db_rows(agent, "SELECT state, attempts, copy FROM print_jobs ORDER BY id")
    assert rows == [("printed", 0, 0), ("printed", 1, 1)] + [("printed", 0, 0)] * 18
    assert [len(p) for p in kitchen.printed].count(50) == 1
    assert sum("KOPIE / COPY" in decode(p).text for p in kitchen.printed) == 1
