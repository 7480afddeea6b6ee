"""The card is full when the agent starts again after a clean stop (systemd's restart, an upgrade, a reboot), or
fills while it runs."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.clock import SteppedClock
from edge.ops.housekeeping import ROOM_RETRY_S
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.smtp import SmtpSink
from edge.store.migrations import latest_version, load_migrations
from edge.systemd import EXTEND_EVERY_S
from tests.helpers import (
    CENTRAL_TOKEN,
    agent_process,
    api_client,
    db_rows,
    edge,
    eventually,
    fill,
    notify_socket,
    post,
    receive,
    reconfigure,
    slow_fsync,
    small_disk,
    wait_until,
    wal_commit_ends,
)


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs as the data directory."""
    with small_disk(tmp_path / "data", 4) as path:
        yield path


@pytest.fixture
def big_card(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs as the data directory: room for a month of a store's scans beside its orders."""
    with small_disk(tmp_path / "data", 8) as path:
        yield path


async def test_an_agent_stopped_cleanly_starts_on_a_full_card_answers_503_and_takes_orders_once_there_is_room(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A clean stop lets SQLite remove its -wal and -shm files; a start on a card that is full meanwhile cannot make
    them again. The agent gives back the room it keeps beside its database for this (edge.db-room) and starts; once
    that room is used, orders are answered 503 (the sender retries), and they are taken again once there is room.
    Before, it exited 1 ("disk I/O error"), systemd gave up after five starts, and it stayed down after the room was
    back (probe_intake D5)."""
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    await agent.start()
    async with api_client(agent.port) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    assert await agent.terminate() == 0
    assert (card / "edge.db-room").stat().st_size > 0
    filler = fill(card)
    await agent.start()
    async with api_client(agent.port) as api:
        answers = []
        for n in range(2, 1000):  # the room given back fills up: then every order is answered 503
            answers.append((await post(api, make_order(n, print_receipt=False)))[0])
            if answers[-1] != 201:
                break
        assert answers[-1] == 503 and set(answers[:-1]) <= {201}, answers
        filler.unlink()
        await eventually(lambda: post(api, make_order(n, print_receipt=False)), lambda answer: answer[0] == 201)
    await agent.close()


async def test_an_agent_killed_on_a_card_that_fills_starts_again_and_takes_orders(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The agent is killed (a power cut, a crash) and the card is full when it starts again: its -wal and -shm are
    still there, so the database opens, but its first writes cannot grow the WAL (here the alerter's first look moves
    back a mail time a clock that was ahead wrote, and the start's look for jobs a crash interrupted, which has
    nothing to change, fails with it). It gives back the room it keeps for this and starts, takes orders while the
    room lasts and prints them. Before, the room was given back only when the database would not open, and the agent
    exited 1 at every start (chaos harness, alerts seed 602)."""
    sink = SmtpSink()
    await sink.start()
    mail = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
    alerts = '[alerts]\nto = ["chef@store.test"]\ndisk_free_min_mb = 0\n'
    agent = agent_process(tmp_path, printers, extra=mail + alerts)
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
            async with api.post("/api/v1/alerts/test") as answer:
                assert answer.status < 300, await answer.text()
        await wait_until(lambda: sink.messages, 10, "the test mail")
        await asyncio.to_thread(date_mails_ahead, card / "edge.db", 3600)
        await agent.kill()
        assert (card / "edge.db-wal").exists() and (card / "edge.db-room").exists()
        filler = fill(card)
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(2, print_receipt=False)))[0] == 201
            await printers["kitchen"].wait_for_printed(2)  # order 1's ticket, then order 2's
            filler.unlink()
        assert await agent.terminate() == 0
        assert "card_full_room_given" in agent.log.read_text(encoding="utf-8")
    finally:
        await agent.close()
        await sink.stop()


def date_mails_ahead(db: Path, seconds: float) -> None:
    """The alert mails' times as a clock ``seconds`` ahead would have written them; beside the running agent, so the
    change stays in its WAL (a connection closing last would checkpoint it and remove the WAL)."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alert_mails SET created_at = created_at + ?1, sent_at = sent_at + ?1", (seconds,))
    conn.close()


async def test_an_agent_killed_after_its_room_is_spent_starts_on_the_full_card_and_prints_each_order_once_with_room(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A start gave back the room, a ticket was going out, orders used the room up (answered 503 from then on), and
    the agent was killed: the next start must put that ticket back in line, marked COPY, and cannot write it. It
    starts anyway: the API answers (orders 503, /ready names the full disk), nothing is claimed or printed while the
    store cannot record it, and once there is room every order answered 201 prints once, the interrupted one marked
    COPY after the printer's buffers were cleared (once: a later start clears nothing). Before, it exited 1 at its
    start's requeue of the interrupted ticket, at every start until someone made room (stop 47's note)."""
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)  # they wait in the queue, as behind a printer without paper
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        assert await agent.terminate() == 0
        taken = [1]
        filler, filled = await spend_the_room_and_kill(agent, card, taken, then=lambda: ticket_going_out(agent, card))
        assert not (card / "edge.db-room").exists()
        kitchen.set_offline(False)
        await agent.start(until="/health")
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1000, print_receipt=False)))[0] == 503
            async with api.get("/ready") as answer:
                assert answer.status == 503
                assert "disk is full" in (await answer.json())["checks"]["database_writable"]["detail"]
            assert kitchen.printed == []  # claiming a ticket is a write: none goes out unrecorded
            filler.unlink()
            filled.unlink()
            await eventually(lambda: post(api, make_order(1000, print_receipt=False)), lambda a: a[0] == 201)
            tickets = await kitchen.wait_for_printed(len(taken) + 1, timeout=30)
        copies = [number(ticket) for ticket in tickets if b"COPY" in ticket]
        assert copies == ["A-1001"] and number(tickets[0]) == "A-1001"  # put back in line before anything is claimed
        assert sorted(number(ticket) for ticket in tickets) == sorted(f"A-{1000 + n}" for n in [*taken, 1000])
        assert kitchen.cleared == 1  # what the crash left in its buffers, before the COPY
        assert await agent.terminate() == 0
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1001, print_receipt=False)))[0] == 201
        await kitchen.wait_for_printed(len(tickets) + 1)
        assert kitchen.cleared == 1  # the clear that went out is recorded: the next start sends none
        assert await agent.terminate() == 0
        assert "interrupted_jobs_wait_for_storage" in agent.log.read_text(encoding="utf-8")
    finally:
        await agent.close()


async def test_an_agent_stopped_cleanly_after_its_room_is_spent_starts_again_on_the_card_filled_meanwhile(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A start gave back the room and the system's logs used it up; the agent is stopped cleanly (an upgrade, a
    restart), and SQLite removes its -wal and -shm; while it is down the logs take what they freed. The next start
    cannot make them again and had no room to give: it exited 1 at every start until someone made room (chaos
    harness, print seed 6 with a full card). The stop now keeps what it frees as the room, and the start comes up:
    503 while full, orders taken and printed once there is room."""
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        await printers["kitchen"].wait_for_printed(1)  # recorded printed before the card fills
        assert await agent.terminate() == 0
        filler = fill(card)
        await agent.start()  # gives back its room
        spent = fill(card, name="logs")
        assert await agent.terminate() == 0
        assert not (card / "edge.db-wal").exists()  # the stop's checkpoint needed no more room
        more = fill(card, name="more")  # what the stop freed, taken while the agent is down
        await agent.start(until="/health")
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(2, print_receipt=False)))[0] == 503
            for file in (filler, spent, more):
                file.unlink()
            await eventually(lambda: post(api, make_order(2, print_receipt=False)), lambda a: a[0] == 201)
        tickets = await printers["kitchen"].wait_for_printed(2)
        assert [number(ticket) for ticket in tickets] == ["A-1001", "A-1002"]
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_printer_renamed_while_the_agent_was_down_on_a_full_card_whose_room_is_spent_gets_its_tickets_there(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """Tickets wait for the kitchen printer; the card fills, the room is spent, the agent is killed, and the kitchen
    printer is renamed in the config before the next start (same device): the start must move the waiting tickets to
    the new name, a write the full card refuses. It starts anyway, answers 503, and prints nothing until the moves are
    written; then every ticket prints once, unmarked, on that printer. Before, it exited 1 at the start's moves, at
    every start until someone made room."""
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    try:
        await agent.start()
        assert await agent.terminate() == 0
        taken: list[int] = []
        filler, filled = await spend_the_room_and_kill(agent, card, taken)
        reconfigure(  # the kitchen printer renamed "pass"
            agent,
            card,
            {"pass": kitchen.port, "front": printers["front"].port},
            kitchen="pass",
            extra="[alerts]\ndisk_free_min_mb = 0\n",
        )
        kitchen.set_offline(False)
        await agent.start(until="/health")
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1000, print_receipt=False)))[0] == 503
            assert kitchen.printed == []
            filler.unlink()
            filled.unlink()
            await eventually(lambda: post(api, make_order(1000, print_receipt=False)), lambda a: a[0] == 201)
            tickets = await kitchen.wait_for_printed(len(taken) + 1, timeout=30)
        assert not any(b"COPY" in ticket for ticket in tickets)
        assert sorted(number(ticket) for ticket in tickets) == sorted(f"A-{1000 + n}" for n in [*taken, 1000])
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_central_link_on_a_full_card_waits_in_one_line_and_reports_every_order_once_there_is_room(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The card fills while orders come in and their status events wait for central: recording what central took is
    a write the card refuses. The outbox says so in one line (no traceback at every try) and, once there is room,
    central has every event of every order answered 201, once per key. Before, each try logged a traceback."""
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    link = f'[central]\nurl = "{central.url}"\ntoken = "{CENTRAL_TOKEN}"\nstart_jitter_s = 0\n'
    agent = agent_process(tmp_path, printers, extra=link + "[alerts]\ndisk_free_min_mb = 0\n")
    try:
        await agent.start()
        assert await agent.terminate() == 0
        filler = fill(card)
        await agent.start()  # gives back its room
        taken = []
        async with api_client(agent.port) as api:
            for n in range(1, 1000):
                order = make_order(n, print_receipt=False)
                central.add_orders([order])
                if (await post(api, order))[0] != 201:
                    break
                taken.append(order["id"])
            await asyncio.sleep(2.5)  # the outbox tries (every second while it has events) on the full card
            filler.unlink()
        await central.wait_for(lambda: {e["order_id"] for e in central.events.values()} >= set(taken), timeout=30)
        assert await agent.terminate() == 0
        log = agent.log.read_text(encoding="utf-8")
        assert "Traceback" not in log
        # Once when the outbox met the full card (a delivery to record when the card refused it). It may not: with
        # the WAL's room reused after a checkpoint, the last delivery's small write can fit where the refused order
        # did not (one CI run in five here), and then there was nothing to say.
        assert log.count("outbox_waits_for_storage") <= 1
    finally:
        await agent.close()
        await central.stop()


async def spend_the_room_and_kill(
    agent: AgentProcess, card: Path, taken: list[int], *, then: Callable[[], Awaitable[None]] | None = None
) -> tuple[Path, Path]:
    """The card full, a start gives back its room (``then``: what happens right after); orders numbered after
    ``taken``'s last use it up (the first refused ends them; ``taken`` gets those answered 201); the agent is killed.
    The refused order's frames stay in the WAL, room enough for the next start's small write: without them the card
    is as a last commit that took its last block leaves it (or the system's logs filling it meanwhile). Returns the
    two files that fill the card."""
    filler = fill(card)
    await agent.start()
    if then is not None:
        await then()
    async with api_client(agent.port) as api:
        for n in range((taken[-1] if taken else 0) + 1, 1000):
            if (await post(api, make_order(n, print_receipt=False)))[0] != 201:
                break
            taken.append(n)
    await agent.kill()
    await asyncio.to_thread(cut_uncommitted, card / "edge.db")
    return filler, fill(card, name="more")


async def ticket_going_out(agent: AgentProcess, card: Path) -> None:
    """Order 1's kitchen ticket as a crash leaves one that was going out, once the spool has given up on the offline
    printer: before, its own claim and release of the ticket could undo this (seen under a slow disk)."""
    async with api_client(agent.port) as api:
        await eventually(lambda: printer_state(api, "kitchen"), lambda state: state == "offline")
    await asyncio.to_thread(going_out, card / "edge.db", "ord_000001")


async def printer_state(api: aiohttp.ClientSession, name: str) -> str:
    async with api.get("/api/v1/printers") as answer:
        return next(p["state"] for p in (await answer.json())["printers"] if p["name"] == name)


def going_out(db: Path, order_id: str) -> None:
    """The order's ticket as a crash leaves one that was going out: 'printing'. Beside the running agent, in its WAL."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE print_jobs SET state = 'printing' WHERE order_id = ?", (order_id,))
    conn.close()


def cut_uncommitted(db: Path) -> None:
    """The WAL without the frames of a transaction that never committed."""
    os.truncate(f"{db}-wal", wal_commit_ends(db)[-1])


def number(ticket: bytes) -> str:
    """The order number a kitchen ticket shows."""
    found = re.search(rb"A-\d+", ticket)
    assert found is not None, ticket
    return found[0].decode()


async def test_a_new_data_directory_on_a_full_card_stops_the_start_with_one_line_saying_so_and_the_doctor_agrees(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A first install, or a data directory wiped by hand, on a card that is full: the agent cannot make its database.
    The start ends with one line naming the full card and what to do, and `edge doctor` says the same: the disk space,
    and a database left empty that the next start fills. Before: "edge: [Errno 28] No space left on device" (the lock
    file's holder line, which changes nothing), then, past that, "database or disk is full"; the doctor said only
    "does not exist", or for the empty file "no such table: orders" with the advice for a damaged database
    (the disk-fault probe, diskfault F2); the health check said "did not answer … is the agent running?" (its H1)."""
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 1\n")
    filler = fill(card)
    started = await edge("run", "--config", str(agent.config))
    assert started.returncode != 0
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith("edge: ") and "card is full" in last and "Errno" not in last, started.stderr
    doctor = await edge("doctor", "--config", str(agent.config))
    assert re.search(r"FAIL\s+disk space\s+0 MB free", doctor.stdout), doctor.stdout
    assert "damaged" not in doctor.stdout and "no such table" not in doctor.stdout, doctor.stdout
    # The health timer's check (its mail's reason): the start could not write down why it failed, on that full card
    health = await edge("health", "--config", str(agent.config))
    assert health.returncode == 1 and "card is full" in health.stdout, health.stdout
    filler.unlink()
    await agent.start()  # room again: the empty database is made whole
    async with api_client(agent.port) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await agent.close()


async def test_a_card_full_of_the_agents_own_old_orders_is_made_room_on_by_retention_while_it_runs(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The card fills while the agent runs, and on it are orders printed long ago that retention may delete. Its
    hourly run failed on the full card ("database or disk is full") as every write did, and nothing else deleted
    them: every order was answered 503 until someone restarted the agent, though the store's own policy allowed the
    room (probe tech, finding 1). Now a full card runs retention at once, on the room the agent keeps beside its
    database, and the orders it frees make room for new ones, with the card still full: each one taken prints once."""
    kitchen = printers["kitchen"]
    agent = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 0\n")
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            for n in range(1, 81):
                assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
            await kitchen.wait_for_printed(80)
            unprinted = "SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'"
            await eventually(lambda: db_rows(card / "edge.db", unprinted), lambda rows: rows == [(0,)])
            await asyncio.to_thread(age_orders, card / "edge.db", days=40)  # retention keeps 30 days
            filler = fill(card)
            taken = []
            for n in range(81, 1000):
                if (await post(api, make_order(n, print_receipt=False)))[0] != 201:
                    break
                taken.append(n)
            # The filler stays: only the orders retention deletes make room.
            await eventually(lambda: post(api, make_order(n, print_receipt=False)), lambda a: a[0] == 201, 30)
            taken.append(n)
            tickets = await kitchen.wait_for_printed(80 + len(taken), timeout=30)
            old = "SELECT COUNT(*) FROM orders WHERE received_at < unixepoch() - 86400"
            await eventually(lambda: db_rows(card / "edge.db", old), lambda rows: rows == [(0,)], what="old purged")
        assert not any(b"COPY" in ticket for ticket in tickets)
        assert sorted(number(ticket) for ticket in tickets[80:]) == sorted(f"A-{1000 + n}" for n in taken)
        assert filler.exists()
        # The run goes on after the orders (history, the room kept again, the space probe), then says what it did.
        await wait_until(lambda: "card_full_retention_ran" in agent.log.read_text(encoding="utf-8"), 30, "the log")
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_full_card_with_a_month_of_old_scans_beside_its_old_orders_purges_both_and_takes_orders_again(
    big_card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """A store that scans its tickets at pickup keeps a lot of scan history for retention.days beside its orders. The
    card fills while the agent runs; retention deleted that history first, in one transaction that needed more than
    the room kept beside the database, and its "database or disk is full" skipped the orders too, every minute: no
    order went, and every order was answered 503 for good (retention probe, F1). Now the orders go first, and each
    part in transactions small enough for the room, whatever becomes of the other."""
    agent = await make_agent(alerts={"disk_free_min_mb": 0})
    db = big_card / "edge.db"
    async with api_client(agent) as api:
        await printed_orders(api, printers["kitchen"], db, range(1, 61))
        await asyncio.to_thread(old_scans, db, 20_000, days=40)
        await asyncio.to_thread(age_orders, db, days=40)  # retention keeps 30 days
        fill(big_card)  # stays: only what retention deletes makes room
        n, _ = await take_until_refused(api, 61)
        await run_storage_probe(agent)
        old = "SELECT COUNT(*) FROM orders WHERE id <= 'ord_000060'"
        await eventually(lambda: db_rows(db, old), lambda rows: rows == [(0,)], 30, "the old orders purged")
        await eventually(lambda: post(api, make_order(n, print_receipt=False)), lambda a: a[0] == 201, 30)
        scans = "SELECT COUNT(*) FROM scans"
        await eventually(lambda: db_rows(db, scans), lambda rows: rows == [(0,)], 30, "the old scans purged")


async def test_a_card_that_fills_before_its_orders_are_old_enough_keeps_the_room_to_purge_them_once_they_are(
    card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """The card fills while the stored orders are a little younger than retention.days: nothing may go yet. The room
    kept beside the database was given back anyway, the space probe passed on it, and new orders spent it; when the
    old orders crossed retention.days, the deletes could not be written ("database or disk is full"), every minute,
    and every order was answered 503 for good (retention probe, F2). Now the room stays kept while nothing may go
    (orders answered 503, naming the full card), and once the orders are old the next run purges them on it and
    orders are taken again, the card still full."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, alerts={"disk_free_min_mb": 0})
    db = card / "edge.db"
    async with api_client(agent) as api:
        await printed_orders(api, printers["kitchen"], db, range(1, 81))
        await asyncio.to_thread(age_orders, db, days=30 - 600 / 86400)  # ten minutes short of retention.days
        filler = fill(card)
        n, _ = await take_until_refused(api, 81)
        await run_storage_probe(agent)  # the card is full, and nothing may go yet
        more, refused = await take_until_refused(api, n)  # the sender retries
        clock.advance(ROOM_RETRY_S + 1200)  # the old orders ten minutes past retention.days; the next run is due
        await run_storage_probe(agent)
        old = "SELECT COUNT(*) FROM orders WHERE id <= 'ord_000080'"
        await eventually(lambda: db_rows(db, old), lambda rows: rows == [(0,)], 30, "the old orders purged")
    # The clock's step made the sender's kept-alive connection 20 minutes idle: the agent closes it at its next sweep,
    # maybe just as an order goes out on it (CI at 1e8f8a6: ServerDisconnectedError). The sender comes on a new one.
    async with api_client(agent) as api:
        await eventually(lambda: post(api, make_order(more, print_receipt=False)), lambda a: a[0] == 201, 30)
    assert more == n, f"{more - n} orders taken on the room kept for retention's deletes"
    assert "card is full" in refused["reason"], refused
    assert filler.exists()


async def test_a_restart_on_a_full_card_with_retention_days_lowered_purges_the_old_orders_before_taking_new_ones(
    card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """The card is full of orders 20 days old; the technician lowers retention.days from 30 to 7 and restarts, as a
    full card asks. The start gave back the room kept beside the database (for its -wal and -shm), new orders spent
    it, and the full card's retention then had no room to write its deletes: 503 for good, with 80 orders the store's
    own policy lets go on the card (retention probe, probe4). Now a start that gave the room back runs retention on
    it before it takes orders, and new orders get the pages the deletes freed."""
    db = card / "edge.db"
    first = await make_agent(alerts={"disk_free_min_mb": 0})
    async with api_client(first) as api:
        await printed_orders(api, printers["kitchen"], db, range(1, 81))
        await asyncio.to_thread(age_orders, db, days=20)  # retention keeps 30 days
        filler = fill(card)
        n, _ = await take_until_refused(api, 81)
    await first.stop()
    again = await make_agent(alerts={"disk_free_min_mb": 0}, retention={"days": 7})
    old = "SELECT COUNT(*) FROM orders WHERE id <= 'ord_000080'"
    await eventually(lambda: db_rows(db, old), lambda rows: rows == [(0,)], 30, "the old orders purged")
    async with api_client(again) as api:
        # A 503 whenever the WAL could not start over (see the test above) and must grow; the sender's retry is taken.
        taken, refused = await take_until_refused(api, n, retries=1)
    assert taken - n >= 40, f"{taken - n} orders taken after the restart: {refused}"
    assert filler.exists()


async def test_a_full_card_whose_log_could_not_grow_takes_orders_again_once_the_reader_holding_it_is_done(
    card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """A full card after the start's purge: the database file has free pages, but new orders go to the WAL first,
    and SQLite starts it over from its beginning only once a checkpoint has copied it all and no reader still reads an
    older snapshot (https://www.sqlite.org/wal.html, "Avoiding Excessively Large WAL Files"). A reader that holds one
    (`edge backup` copying, `edge status`, the technician's sqlite3) makes the WAL grow instead, and the full card
    refuses that: 503. Before, it stayed so for good once the reader was done: a checkpoint runs only after a COMMIT
    that succeeds, and none could (the storage probe's write failed the same way): every order 503 until a restart,
    the file's free pages unused. Now a write the full card refused has the WAL checkpointed before the next one, and
    a sender's retry is taken."""
    db = card / "edge.db"
    first = await make_agent(alerts={"disk_free_min_mb": 0})
    async with api_client(first) as api:
        await printed_orders(api, printers["kitchen"], db, range(1, 81))
        await asyncio.to_thread(age_orders, db, days=20)  # retention keeps 30 days
        fill(card)
        n, _ = await take_until_refused(api, 81)
    await first.stop()
    again = await make_agent(alerts={"disk_free_min_mb": 0}, retention={"days": 7})
    old = "SELECT COUNT(*) FROM orders WHERE id <= 'ord_000080'"
    await eventually(lambda: db_rows(db, old), lambda rows: rows == [(0,)], 30, "the old orders purged")
    reader = await asyncio.to_thread(snapshot_held, db)  # as a backup's copy holds one
    async with api_client(again) as api:
        held, _ = await take_until_refused(api, n)
        [(free,)] = await db_rows(db, "PRAGMA freelist_count")
        assert free > 40, f"the file has {free} free pages: the refusal is the WAL's, not the file's"
        await asyncio.to_thread(reader.close)
        answers = [(await post(api, make_order(held, print_receipt=False)))[0] for _ in range(2)]
        assert 201 in answers, f"a sender's retries after the reader was done: {answers}"
        taken, refused = await take_until_refused(api, held + 1)
    assert taken - held > 20, f"{taken - held} orders taken once the reader was done: {refused}"


async def test_a_card_filled_by_a_log_a_reader_held_takes_orders_again_once_it_is_done_though_the_file_must_grow(
    card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """A technician's sqlite3 left in a read transaction from the agent's first orders on: the WAL cannot be
    checkpointed, grows with every order until the card is full (503), and the database file, small, has no free pages.
    The reader lets go: the checkpoint that lets SQLite start the WAL over must grow the file by what the WAL holds,
    and the card has no byte for it but the room the agent keeps beside the database. That room is given back for it,
    and a sender's retry is taken. Before stop 83 the checkpoint failed "database or disk is full" at every write, the
    room stayed kept, and every order was 503 for good (storage83 F3)."""
    db = card / "edge.db"
    agent = await make_agent(alerts={"disk_free_min_mb": 0})
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        reader = await asyncio.to_thread(snapshot_held, db)
        held, _ = await take_until_refused(api, 2)
        [(free,)] = await db_rows(db, "PRAGMA freelist_count")
        assert free < 10, f"the file has {free} free pages: the checkpoint would not need to grow it"
        await asyncio.to_thread(reader.close)
        answers = [(await post(api, make_order(held, print_receipt=False)))[0] for _ in range(3)]
        if 201 not in answers:  # the storage probe's run, as every 10 s while writes fail
            await run_storage_probe(agent)
            answers += [(await post(api, make_order(held, print_receipt=False)))[0] for _ in range(3)]
        assert 201 in answers, f"a sender's retries after the reader was done: {answers}"


async def test_a_restart_on_a_card_full_to_its_last_byte_purges_every_old_order_before_taking_new_ones(
    big_card: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """A card full to its last byte (journald filled it while the agent was down), with far more old orders on it than
    one room of WAL holds the deletes of; retention.days lowered at the restart. The start's purge stopped after 160
    orders: SQLite checkpoints its WAL, and starts it over, at 1000 pages, and the room (1 MiB, the -shm beside it)
    was full before that; every delete after it failed ("database or disk is full"), the log said "purged": 0, and
    every full-card run after READY failed the same way: every order 503 for good, the old orders on the card (the
    fullstart probe). Now the WAL is checkpointed within the room while retention makes room: all of them go."""
    db = big_card / "edge.db"
    kitchen = printers["kitchen"]
    first = await make_agent(alerts={"disk_free_min_mb": 0})
    async with api_client(first) as api:
        await printed_orders(api, kitchen, db, range(1, 601))
        await asyncio.to_thread(age_orders, db, days=20)  # retention keeps 30 days
        await printed_orders(api, kitchen, db, range(601, 606))  # today's
    await first.stop()
    fill(big_card)  # to the last byte, the room kept beside the database on it
    with capture_logs() as logs:
        again = await make_agent(alerts={"disk_free_min_mb": 0}, retention={"days": 7})
    left = await db_rows(db, "SELECT COUNT(*) FROM orders WHERE id <= 'ord_000600'")
    assert left == [(0,)], f"old orders left after the start's purge: {left}"
    async with api_client(again) as api:
        assert (await post(api, make_order(606, print_receipt=False)))[0] == 201
    assert number((await kitchen.wait_for_printed(606))[-1]) == "A-1606"
    ran = [e for e in logs if e["event"] == "card_full_retention_ran"]
    assert [e["purged"] for e in ran] == [600], ran  # the orders it deleted, also when a part fails


async def test_a_long_purge_before_ready_on_a_full_card_tells_systemd_the_start_goes_on(
    card: Path,
    printers: dict[str, SimPrinter],
    make_agent: Callable[..., Awaitable[Agent]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start on a full card purges what retention lets go before READY=1; with months of history and a slow card
    that took 73 s (10 ms fsyncs) and 133 s (20 ms): past the unit's TimeoutStartSec=120, systemd stops the start and
    starts it again, five times in five minutes, then gives up (the fullstart probe). Now the purge tells systemd the
    start goes on (EXTEND_TIMEOUT_USEC, with a STATUS of what it does), at least every EXTEND_EVERY_S of it."""
    db = card / "edge.db"
    first = await make_agent(alerts={"disk_free_min_mb": 0})
    await first.stop()
    await asyncio.to_thread(old_scans, db, 2_000, days=40)  # 100 transactions of 20
    fill(card, leave=512 * 1024)  # "full": less free than the room the agent keeps
    clock = SteppedClock()
    slow_fsync(monkeypatch, 1.0, clock=clock)  # a second a transaction: a start of minutes, in a moment
    with notify_socket(monkeypatch) as systemd:
        heard = asyncio.ensure_future(receive(systemd, "READY=1"))  # read as it comes, as systemd does
        began = clock.mono()
        again = await make_agent(clock=clock, alerts={"disk_free_min_mb": 0})
        took = clock.mono() - began
        said = await heard
        await again.stop()
    assert await db_rows(db, "SELECT COUNT(*) FROM scans") == [(0,)]
    before_ready = [dict(line.split("=", 1) for line in m.split("\n") if "=" in line) for m in said[:-1]]
    extends = [m for m in before_ready if "EXTEND_TIMEOUT_USEC" in m]
    assert len(extends) >= took // EXTEND_EVERY_S, f"{len(extends)} extensions in a start of {took:.0f} s: {said}"
    assert all(int(m["EXTEND_TIMEOUT_USEC"]) >= 2 * EXTEND_EVERY_S * 1_000_000 for m in extends), extends
    status = re.compile(r"making room on the full card: (\d+) old rows purged before taking orders")
    counts = [int(found[1]) for m in extends if (found := status.fullmatch(m["STATUS"]))]
    assert len(counts) == len(extends), extends
    assert counts == sorted(counts) and counts[-1] <= 2_000, counts


async def printed_orders(api: aiohttp.ClientSession, kitchen: SimPrinter, db: Path, numbers: range) -> None:
    """Orders taken, their tickets printed and recorded so: what retention may delete once they are old."""
    for n in numbers:
        assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
    await kitchen.wait_for_printed(len(numbers))
    unprinted = "SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'"
    await eventually(lambda: db_rows(db, unprinted), lambda rows: rows == [(0,)])


async def take_until_refused(api: aiohttp.ClientSession, first: int, *, retries: int = 0) -> tuple[int, Any]:
    """Orders numbered from ``first`` until one is refused (the card full): that one's number, and the answer. A
    refused order is sent again up to ``retries`` times first, as a backend does after a 503."""
    for n in range(first, first + 2000):
        for _ in range(retries + 1):
            status, answer = await post(api, make_order(n, print_receipt=False))
            if status == 201:
                break
        if status != 201:
            return n, answer
    raise AssertionError("the card never filled")


async def run_storage_probe(agent: Agent) -> None:
    """What the scheduler runs every 10 s while writes fail; on a full card, retention's run (make_room)."""
    assert agent._housekeeping is not None
    await agent._housekeeping.probe_storage()


def old_scans(db: Path, count: int, *, days: float) -> None:
    """``count`` scans of ``days`` ago, as a store scanning at pickup keeps; in transactions of 1000, as they came."""
    conn = sqlite3.connect(db)
    for start in range(0, count, 1000):
        with conn:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)"
                " INSERT INTO scans(scanned_at, scanner, code, order_id, station, outcome, detail)"
                " SELECT unixepoch() - ?3 * 86400, 'pass', printf('code-%09d-%s', i, hex(randomblob(20))),"
                " NULL, NULL, 'unknown', '' FROM n",
                (start, min(start + 1000, count) - 1, days),
            )
    conn.close()


def snapshot_held(db: Path) -> sqlite3.Connection:
    """A connection reading ``db`` in a transaction left open: it holds its snapshot until closed."""
    reader = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM orders").fetchall()
    return reader


def age_orders(db: Path, *, days: float) -> None:
    """The stored orders as if taken ``days`` ago; beside the running agent (the change stays in its WAL)."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE orders SET received_at = received_at - ?1 * 86400,"
            " created_at = strftime('%Y-%m-%dT%H:%M:%fZ', julianday(created_at) - ?1)",
            (days,),
        )
    conn.close()


async def test_migrate_and_the_doctor_on_a_card_filled_to_its_last_byte_name_the_full_card_not_a_damaged_database(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """A database closed cleanly (SQLite removed its -wal and -shm) on a card then filled to its last byte: SQLite
    cannot make the -shm again and says "disk I/O error". `edge migrate` (upgrade.sh's step) says in one line that the
    card is full, and the doctor does not send the technician to restore a sound database; `edge migrate --to` the
    version it is at (upgrade.sh's rollback) writes nothing and succeeds; once there is room the migration goes on.
    Before: "edge: database …/edge.db: disk I/O error", and the doctor's "FAIL database …: disk I/O error; no backup
    found …: see 'A damaged database'" (technician probe, findings 3 and 4)."""
    config = agent_process(tmp_path, printers, extra="[alerts]\ndisk_free_min_mb = 1\n").config
    latest = latest_version(load_migrations())
    assert (await edge("migrate", "--to", str(latest - 1), "--config", str(config))).returncode == 0
    assert not (card / "edge.db-wal").exists() and not (card / "edge.db-shm").exists()
    filler = fill(card)
    refused = await edge("migrate", "--config", str(config))
    assert refused.returncode == 1, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("edge: ") and "card is full" in line and "I/O" not in line, line
    doctor = await edge("doctor", "--config", str(config))
    [database] = [line for line in doctor.stdout.splitlines() if re.search(r"FAIL\s+database", line)]
    assert "card is full" in database and "damaged" not in database and "I/O" not in database, doctor.stdout
    # upgrade.sh's rollback after that failed climb: the database is where it was, nothing to write
    stays = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert stays.returncode == 0 and f"schema version {latest - 1} -> {latest - 1}" in stays.stdout, stays.stderr
    filler.unlink()
    again = await edge("migrate", "--config", str(config))
    assert again.stdout.startswith(f"database {card / 'edge.db'}: schema version {latest - 1} -> {latest}"), again


def _mailing(sink: SmtpSink, alerts: str) -> str:
    """Config sections that mail the manager through ``sink``, the alerts checked every 0.2 s, with ``alerts`` (lines
    of [alerts])."""
    smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
    return smtp + f'[alerts]\nto = ["chef@store.test"]\ncheck_interval_s = 0.2\n{alerts}'


async def test_a_card_low_across_a_restart_is_one_occurrence_its_all_clear_counts_no_second(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The card goes below `disk_free_min_mb`, the alarm goes out, and the agent restarts (an upgrade, systemd)
    while it is still low: that is the same low card, not a second one. Once there is room, the all-clear says so
    without "once more since the last mail". Before (the mailbox76 probe, F3): "Seit der letzten Mail ein weiteres
    Mal", the new run's first check counted as a new occurrence."""
    sink = SmtpSink()
    await sink.start()
    agent = agent_process(
        tmp_path, printers, extra=_mailing(sink, "disk_free_min_mb = 2\ngroup_wait_s = 0\ngroup_interval_s = 1\n")
    )
    try:
        await agent.start()
        filler = fill(card, leave=1 << 20)  # a megabyte left: below the two wanted
        await wait_until(lambda: sink.messages, 15, "the low card's alarm")
        assert await agent.terminate() == 0
        await agent.start()
        await asyncio.sleep(1)  # a few checks of the new run, the card still low
        filler.unlink()
        await wait_until(lambda: len(sink.messages) >= 2, 15, "the all-clear")
        alarm, clear = sink.messages[:2]
        assert "STÖRUNG" in str(alarm["Subject"]) and "BEHOBEN" in str(clear["Subject"]), [
            str(m["Subject"]) for m in sink.messages
        ]
        text = clear.get_body(("plain",)).get_content()
        assert "weiteres Mal" not in text and "weitere Male" not in text, text
    finally:
        await agent.close()
        await sink.stop()


async def test_the_database_alarm_mailed_before_a_kill_gets_its_own_all_clear_after_a_restart_on_the_full_card(
    tmp_path: Path, card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The card fills while orders come in (disk_free_min_mb set, as by default: the low-space group is there too);
    an order is refused and the database's alarm goes straight to the relay. The agent is killed and starts again on
    the still-full card, then the card gets room: the manager gets that alarm's all-clear, and no all-clear for an
    alarm never mailed. Before (the disk78 probe, F1): the restart took the earlier run's mail for the low-space
    alarm's, so the database alarm never ended and "BEHOBEN: Speicherkarte fast voll" came alone."""
    sink = SmtpSink()
    await sink.start()
    alerts = "disk_free_min_mb = 1\ngroup_wait_s = 0\ncritical_group_wait_s = 0\ngroup_interval_s = 1\n"
    agent = agent_process(tmp_path, printers, extra=_mailing(sink, alerts))
    try:
        await agent.start()
        filler = fill(card)
        async with api_client(agent.port) as api:
            await eventually(lambda: post(api, make_order(2, print_receipt=False)), lambda a: a[0] == 503)
        await wait_until(lambda: any("Speicherproblem" in str(m["Subject"]) for m in sink.messages), 15, "the alarm")
        await asyncio.sleep(1)  # the run goes on a while (killed the instant its mail left, it had noted nothing)
        await agent.kill()
        await agent.start(until="/health")
        await asyncio.sleep(1)  # a few checks of the new run on the full card
        filler.unlink()
        await wait_until(
            lambda: any("BEHOBEN: Speicherproblem" in str(m["Subject"]) for m in sink.messages), 20, "its all-clear"
        )
        await asyncio.sleep(1.5)  # room for a mail too many
        subjects = [str(m["Subject"]).split("] ", 1)[1] for m in sink.messages]
        alarms = {s.split(": ", 1)[1] for s in subjects if s.startswith("STÖRUNG")}
        cleared = {s.split(": ", 1)[1] for s in subjects if s.startswith("BEHOBEN")}
        assert cleared <= alarms, subjects
    finally:
        await agent.close()
        await sink.stop()
