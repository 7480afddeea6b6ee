"""Scanners through real pyserial on pseudo-terminals: scans mark tickets done and orders ready, store and outbox."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.scanners.codes import CODE_SILENCE_S
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.scanner import SimScanner
from tests.helpers import (
    FULL_SCANS,
    Seen,
    agent_process,
    api_client,
    db_execute,
    db_rows,
    eventually,
    post,
    push_order,
    scanner_config,
    wait_until,
)


# What a full card does to a scan's write, for the scans table alone.
async def outbox(agent: Agent, order_id: str) -> list[str]:
    return [r[0] for r in await db_rows(agent, "SELECT event FROM outbox WHERE order_id = ? ORDER BY id", order_id)]


async def test_tickets_of_every_station_make_the_order_ready(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """Kitchen ticket scanned (CR suffix): ticket done, order still open. Bar ticket (LF suffix): the order is ready,
    stored with one 'ready' outbox row, and GET /api/v1/orders/{id} shows it with both stations done."""
    agent, seen = scan_agent
    order = await push_order(agent, 1, bar=True)
    oid = order["id"]

    sims["kitchen"].scan(f"edge:v1:{oid}:kitchen", "\r")
    (first,) = await seen.scans_count(1)
    assert (first.scanner, first.outcome, first.order_id) == ("kitchen", "ticket_done", oid)
    async with scan_api.get(f"/api/v1/orders/{oid}") as response:
        body = await response.json()
    assert body["state"] == "open"
    assert body["stations"] == [
        {"station": "bar", "done": False, "done_at": None},
        {"station": "kitchen", "done": True, "done_at": body["stations"][1]["done_at"]},
    ]
    assert "ready" not in await outbox(agent, oid)

    sims["bar"].scan(f"edge:v1:{oid}:bar", "\n")
    scans = await seen.scans_count(2)
    assert scans[1].outcome == "order_ready"
    assert (await outbox(agent, oid)).count("ready") == 1
    async with scan_api.get(f"/api/v1/orders/{oid}") as response:
        body = await response.json()
    assert body["state"] == "ready" and body["ready_at"] is not None and body["handed_out_at"] is None
    assert all(s["done"] for s in body["stations"])
    ((payload,),) = await db_rows(agent, "SELECT payload FROM outbox WHERE order_id = ? AND event = 'ready'", oid)
    assert json.loads(payload) | {"at": 0} == {
        "order_id": oid,
        "event": "ready",
        "at": 0,
        "number": order["number"],
        "scanner": "bar",
    }


async def test_split_reads_and_crlf_give_one_scan(scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]) -> None:
    """A code dribbled in pieces, with CR and LF in separate writes, is one scan; the CRLF's LF is not a second one.
    Pieces 30 ms apart are one code; a machine stalled past the 200 ms silence that ends a code without a suffix
    between two pieces (CI's 2 cores under eight workers did once) sent two codes, as a real scanner pausing that long
    would: such a try is not the case under test, and the next one is."""
    agent, seen = scan_agent
    for attempt in range(3):
        order = await push_order(agent, 2 + attempt)
        code = f"edge:v1:{order['id']}:kitchen\r\n".encode()
        before, sent_at = len(seen.scans), [time.monotonic()]
        for i in range(0, len(code), 5):
            sims["kitchen"].send(code[i : i + 5])
            await asyncio.sleep(0.03)
            sent_at.append(time.monotonic())
        await seen.scans_count(before + 1)
        await asyncio.sleep(0.3)  # room for a wrong second scan to show up
        if max(b - a for a, b in itertools.pairwise(sent_at)) < CODE_SILENCE_S * 0.75:
            break
    else:
        pytest.skip("the machine stalled past the code silence between pieces in all three tries")
    [scan] = seen.scans[before:]
    assert scan.outcome == "order_ready" and scan.code == f"edge:v1:{order['id']}:kitchen"
    assert await db_rows(agent, "SELECT COUNT(*) FROM scans WHERE code = ?", scan.code) == [(1,)]


async def test_codes_ended_by_a_tab_are_scans_too(scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]) -> None:
    """A scanner set to end codes with Tab (the other usual suffix: it moves to the next field of a till's form; a
    scanner moved from keyboard mode to serial keeps it) sends code, Tab, code, Tab. Each is a scan (before: none,
    the codes ran together into one line that was never ended)."""
    agent, seen = scan_agent
    first, second = await push_order(agent, 3), await push_order(agent, 4)
    sims["kitchen"].scan(f"edge:v1:{first['id']}:kitchen", "\t")
    sims["kitchen"].scan(f"edge:v1:{second['id']}:kitchen", "\t")
    scans = await seen.scans_count(2)
    assert [(s.order_id, s.outcome) for s in scans] == [(first["id"], "order_ready"), (second["id"], "order_ready")]


async def test_codes_with_the_scanners_symbology_identifier_in_front_are_read(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A scanner set to send AIM symbology identifiers (ISO/IEC 15424: "]" + code letter + modifier in front of each
    code, "]Q1" for a QR code, "]C0" for Code 128; tills that sort barcodes by kind want them) reads a ticket's QR and a
    receipt's order number as the same scanner without them does (before: "]Q1edge:v1:…" was taken for an order
    number and found no order). The scan records the code as printed, without the identifier."""
    agent, seen = scan_agent
    first, second = await push_order(agent, 5), await push_order(agent, 6)
    sims["kitchen"].scan(f"]Q1edge:v1:{first['id']}:kitchen", "\r")
    sims["kitchen"].scan(f"]C0{second['number']}", "\r")
    scans = await seen.scans_count(2)
    assert [(s.order_id, s.outcome) for s in scans] == [(first["id"], "order_ready"), (second["id"], "order_ready")]
    assert scans[0].code == f"edge:v1:{first['id']}:kitchen"


async def test_garbage_is_rejected_and_reading_goes_on(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Non-UTF-8 bytes and control characters inside a line are rejected with a log line showing the bytes, and
    counted, stored nowhere; the next code works. (Noise in front of a code: tests/scanners/test_line_noise.py.)"""
    agent, seen = scan_agent
    order = await push_order(agent, 3)
    with capture_logs() as logs:
        sims["kitchen"].send(b"gar\xff\xfe\x80bage\r\nA\x1b[2J\x00\r\n")
        sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")
        (scan,) = await seen.scans_count(1)
    assert scan.outcome == "order_ready"
    rejected = [e for e in logs if e["event"] == "scan_rejected"]
    assert [e["reason"] for e in rejected] == ["not UTF-8 (byte 3: 0xff)", "control character 0x1b"]
    assert [e["bytes"] for e in rejected] == ["gar\\xff\\xfe\\x80bage", "A\\x1b[2J\\x00"]
    assert agent.scanners["kitchen"].rejected == 2
    assert await db_rows(agent, "SELECT code FROM scans") == [(f"edge:v1:{order['id']}:kitchen",)]


async def test_unknown_codes_are_logged_counted_and_harmless(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """Codes naming no known order (or a station the order has no ticket for) are stored as 'unknown' with a reason
    and counted; nothing about any order changes and the scanner keeps reading."""
    agent, seen = scan_agent
    order = await push_order(agent, 4)  # kitchen ticket only
    with capture_logs() as logs:
        for code in ("edge:v1:ord_999999:kitchen", "4006381333931", "edge:test:front", f"edge:v1:{order['id']}:bar"):
            sims["kitchen"].scan(code)
        scans = await seen.scans_count(4)
    assert [s.outcome for s in scans] == ["unknown"] * 4
    assert len([e for e in logs if e["event"] == "scan_unknown"]) == 4
    rows = await db_rows(agent, "SELECT code, order_id, detail FROM scans ORDER BY id")
    assert rows[0] == ("edge:v1:ord_999999:kitchen", None, "no order with id 'ord_999999'")
    assert rows[1][:2] == ("4006381333931", None)
    assert rows[1][2].startswith("no order with id or number '4006381333931' in today's business day (since ")
    assert rows[3][1:] == (order["id"], f"order {order['number']} has no bar ticket (its stations: kitchen)")
    assert await db_rows(agent, "SELECT COUNT(*) FROM station_done") == [(0,)]
    assert "ready" not in await outbox(agent, order["id"])
    async with scan_api.get("/api/v1/scans", params={"outcome": "unknown"}) as response:
        body = await response.json()
    assert response.status == 200 and len(body["scans"]) == 4 and body["counts"]["unknown"] == 4
    assert body["scans"][0]["code"] == f"edge:v1:{order['id']}:bar"  # newest first


async def test_double_scan_changes_nothing_and_says_so(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Scanning the same ticket again is 'already_done': no second station row, no second outbox event."""
    agent, seen = scan_agent
    order = await push_order(agent, 5, bar=True)
    code = f"edge:v1:{order['id']}:kitchen"
    with capture_logs() as logs:
        sims["kitchen"].scan(code)
        sims["kitchen"].scan(code)
        await seen.scans_count(2)
        sims["bar"].scan(f"edge:v1:{order['id']}:bar")
        sims["bar"].scan(f"edge:v1:{order['id']}:bar")
        scans = await seen.scans_count(4)
    assert [s.outcome for s in scans] == ["ticket_done", "already_done", "order_ready", "already_done"]
    assert [e["detail"] for e in logs if e["event"] == "scan_repeated"] == [
        f"order {order['number']}: kitchen ticket already done",
        f"order {order['number']} is already ready",
    ]
    assert await db_rows(agent, "SELECT station FROM station_done ORDER BY station") == [("bar",), ("kitchen",)]
    assert (await outbox(agent, order["id"])).count("ready") == 1


async def test_counter_scan_of_number_readies_then_hands_out(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A plain order number at the counter (no station) marks every ticket done; the next scan hands the order
    out with a 'fulfilled' outbox row; a third changes nothing."""
    agent, seen = scan_agent
    order = await push_order(agent, 6, bar=True)
    for _ in range(3):
        sims["counter"].scan(order["number"])
    scans = await seen.scans_count(3)
    assert [s.outcome for s in scans] == ["order_ready", "handed_out", "already_done"]
    assert (await outbox(agent, order["id"])).count("ready") == 1
    assert (await outbox(agent, order["id"])).count("fulfilled") == 1
    ((ready_at, handed_out_at),) = await db_rows(
        agent, "SELECT ready_at, handed_out_at FROM order_pickup WHERE order_id = ?", order["id"]
    )
    assert handed_out_at >= ready_at


async def test_a_number_two_orders_of_the_day_share_is_refused_not_guessed(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Two orders of the current business day with one number: a plain scan of it names neither (the ticket's QR code
    does); nothing is marked ready. (Numbers of earlier days: tests/scanners/test_business_day.py.)"""
    agent, seen = scan_agent
    older = await push_order(agent, 7)
    assert agent.deps is not None
    await agent.deps.intake.accept(dict(older, id="ord_newer"))
    sims["kitchen"].scan(older["number"])
    (scan,) = await seen.scans_count(1)
    assert (scan.outcome, scan.order_id) == ("unknown", None)
    assert await db_rows(agent, "SELECT COUNT(*) FROM order_pickup") == [(0,)]


async def test_unplugged_scanner_reconnects_by_itself(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """The port disappears (pty closed, device link gone): 'disconnected' once, retries with backoff; when a new pty
    appears behind the same path the reader reconnects, says 'connected', and scans count again."""
    agent, seen = scan_agent
    order = await push_order(agent, 8)
    sims["kitchen"].unplug()
    await seen.connected("kitchen", False)
    async with scan_api.get("/api/v1/scans") as response:
        kitchen = next(s for s in (await response.json())["scanners"] if s["name"] == "kitchen")
    assert kitchen["connected"] is False and kitchen["detail"]
    await asyncio.sleep(1.0)  # several failed reopen attempts: still one 'disconnected'
    assert seen.connections("kitchen") == [True, False]

    sims["kitchen"].plug()
    await seen.connected("kitchen", True, times=2)
    sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")
    (scan,) = await seen.scans_count(1)
    assert scan.outcome == "order_ready"
    assert seen.connections("kitchen") == [True, False, True]
    assert seen.connections("bar") == [True]  # the others never noticed


async def test_missing_port_at_start_does_not_stop_the_agent(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path
) -> None:
    """A scanner that is not plugged in when the agent starts is reported disconnected; plugged in later, it works."""
    late = SimScanner(tmp_path / "tty-late")
    seen = Seen()
    agent = await make_agent(
        scanners={"late": {"port": str(late.path), "station": "kitchen", "reconnect_max_s": 0.3}}, listen=seen
    )
    try:
        await seen.connected("late", False)
        order = await push_order(agent, 9)
        late.plug()
        await seen.connected("late", True)
        late.scan(f"edge:v1:{order['id']}:kitchen")
        (scan,) = await seen.scans_count(1)
        assert scan.outcome == "order_ready"
    finally:
        late.unplug()


async def test_two_scanners_at_once(scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]) -> None:
    """Kitchen and bar scan tickets of 15 orders at the same time: every order ends ready exactly once."""
    agent, seen = scan_agent
    orders = [await push_order(agent, 100 + i, bar=True) for i in range(15)]

    async def scan_all(station: str) -> None:
        for order in orders:
            sims[station].scan(f"edge:v1:{order['id']}:{station}")
            await asyncio.sleep(0.005)

    await asyncio.gather(scan_all("kitchen"), scan_all("bar"))
    scans = await seen.scans_count(30)
    assert sorted(s.outcome for s in scans).count("order_ready") == 15
    assert sorted(s.outcome for s in scans).count("ticket_done") == 15
    assert await db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE event = 'ready'") == [(15,)]
    assert await db_rows(agent, "SELECT COUNT(*) FROM order_pickup") == [(15,)]
    assert agent.scanners["kitchen"].codes == agent.scanners["bar"].codes == 15


async def test_a_cancelled_orders_ticket_scanned_says_so_and_changes_nothing(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """The QR code of a cancelled order's ticket: the scan is recorded saying the order is cancelled; no station is
    marked done, the order is not ready, central hears nothing."""
    agent, seen = scan_agent
    order = await push_order(agent, 4)
    assert agent.deps is not None
    await agent.deps.intake.accept(order | {"revision": 2, "status": "cancelled"})
    sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")
    (scan,) = await seen.scans_count(1)
    assert scan.outcome == "already_done"
    [(detail,)] = await db_rows(agent, "SELECT detail FROM scans")
    assert detail == f"order {order['number']} is cancelled: nothing changed"
    assert await db_rows(agent, "SELECT COUNT(*) FROM station_done") == [(0,)]
    assert await outbox(agent, order["id"]) == ["received", "cancelled"]


async def test_scans_the_full_card_refuses_are_recorded_in_order_with_their_time_once_there_is_room(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """The card refuses writes when the kitchen and then the bar ticket are scanned: a cook does not scan a ticket
    twice, so the scans wait in memory and are recorded, in the order read and with the time read, once the store
    writes again; the order is ready and central hears it. Before, each was logged with a traceback and lost: the
    order never showed ready."""
    agent, seen = scan_agent
    order = await push_order(agent, 3, bar=True)
    oid = order["id"]
    await db_execute(agent, FULL_SCANS)
    read_at = time.time()
    with capture_logs() as logs:
        sims["kitchen"].scan(f"edge:v1:{oid}:kitchen", "\r")
        await wait_until(lambda: any(e["event"] == "scans_wait_for_storage" for e in logs), what="the scan held")
        sims["bar"].scan(f"edge:v1:{oid}:bar", "\n")
        await asyncio.sleep(1.5)  # a retry on the full card
        assert await db_rows(agent, "SELECT COUNT(*) FROM scans") == [(0,)]
        await db_execute(agent, "DROP TRIGGER full_scans")  # room again
        scans = await seen.scans_count(2)
    assert [(s.scanner, s.outcome) for s in scans] == [("kitchen", "ticket_done"), ("bar", "order_ready")]
    rows = await db_rows(agent, "SELECT scanner, scanned_at FROM scans ORDER BY id")
    assert [r[0] for r in rows] == ["kitchen", "bar"] and all(abs(r[1] - read_at) < 1.0 for r in rows)
    assert (await outbox(agent, oid)).count("ready") == 1
    assert not [e for e in logs if e.get("exc_info")]


async def test_scans_held_for_a_full_card_at_a_stop_are_recorded_by_the_next_run(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The card refuses writes when the kitchen and the bar ticket are scanned, and the agent is restarted (by the
    technician, or an upgrade) before it has room. The stop leaves the scans waiting in memory in the runtime
    directory (a tmpfs that lasts the boot: the card is what refuses), and the next run records them, in the order
    read and with the time read; the order is ready. Before, the stop logged `scans_not_recorded` and they were lost:
    a cook does not scan a ticket twice, and the order never showed ready."""
    seen = Seen()
    agent = await make_agent(scanners=scanner_config(sims), listen=seen)
    for name in sims:
        await seen.connected(name)
    order = await push_order(agent, 3, bar=True)
    await db_execute(agent, FULL_SCANS)
    read_at = time.time()
    with capture_logs() as logs:
        for held, station in enumerate(("kitchen", "bar"), start=1):
            sims[station].scan(f"edge:v1:{order['id']}:{station}", "\r")
            await wait_until(lambda n=held: agent.scan_recorder is not None and agent.scan_recorder.held == n)
        await agent.stop()
    assert [e["count"] for e in logs if e["event"] == "scans_left_for_the_next_run"] == [2]
    await db_execute(agent.settings.agent.db_path, "DROP TRIGGER full_scans")  # room again, the agent down

    seen = Seen()
    again = await make_agent(scanners=scanner_config(sims), listen=seen)
    scans = await seen.scans_count(2)
    assert [(s.scanner, s.outcome) for s in scans] == [("kitchen", "ticket_done"), ("bar", "order_ready")]
    rows = await db_rows(again, "SELECT scanner, scanned_at FROM scans ORDER BY id")
    assert [r[0] for r in rows] == ["kitchen", "bar"] and all(abs(r[1] - read_at) < 1.0 for r in rows)


async def test_scans_held_for_a_full_card_survive_a_sigkill_of_the_agent(
    tmp_path: Path, printers: dict[str, SimPrinter], sims: dict[str, SimScanner]
) -> None:
    """As above, but the agent dies instead of stopping (SIGKILL: the OOM killer, the watchdog's abort): the scans
    held are kept in the runtime directory as each is held, so the next run records them all the same."""
    run = tmp_path / "run"
    run.mkdir()
    tables = "".join(
        f'\n[scanners.{name}]\nport = "{sims[name].path}"\nstation = "{name}"\nreconnect_max_s = 0.3\n'
        for name in ("kitchen", "bar")
    )
    agent = agent_process(tmp_path, printers, env={"RUNTIME_DIRECTORY": str(run)}, extra=tables)
    db = tmp_path / "data" / "edge.db"
    try:
        await agent.start()
        order = make_order(3, bar=True)
        async with api_client(agent.port) as api:
            assert (await post(api, order))[0] == 201
        await db_execute(db, FULL_SCANS)
        read_at = time.time()
        for held, station in enumerate(("kitchen", "bar"), start=1):
            sims[station].scan(f"edge:v1:{order['id']}:{station}", "\r")
            await wait_until(lambda n=held: len(left_in(run)) == n, what=f"{held} scans left in the runtime directory")
        await agent.kill()
        await db_execute(db, "DROP TRIGGER full_scans")  # room again, the agent dead
        await agent.start()
        rows = await eventually(
            lambda: db_rows(db, "SELECT scanner, outcome, scanned_at FROM scans ORDER BY id"),
            lambda rows: len(rows) == 2,
            what="both scans recorded",
        )
        assert [r[:2] for r in rows] == [("kitchen", "ticket_done"), ("bar", "order_ready")]
        assert all(abs(r[2] - read_at) < 1.0 for r in rows)
        await wait_until(lambda: not left_in(run), what="the note gone once they are recorded")
    finally:
        await agent.close()


def left_in(run: Path) -> list[object]:
    """The scans the runtime directory holds for the next run."""
    return [scan for note in run.glob("edge-*-scans-held.json") for scan in json.loads(note.read_text() or "[]")]


async def test_a_scan_the_store_takes_late_keeps_the_time_it_was_read(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Another writer holds the database for 5.5 s (a backup's copy, a long purge) when the kitchen ticket is scanned:
    the scan waits out the busy timeout, is held, and is recorded once the store writes, with the time it was read,
    not the time it was held or taken. Near the
    business day's start that is the difference between today's order and "no order with that number today" (the
    scanner probe, s07: read at 14:09:57.5, the day starting at 14:10, stored at 14:10:02.5 as unknown). Before stop
    62 the row said when the store took it."""
    agent, seen = scan_agent
    order = await push_order(agent, 5)
    db = agent.settings.agent.db_path
    loop = asyncio.get_running_loop()
    held = asyncio.Event()

    def hold_the_database() -> None:
        conn = sqlite3.connect(db, timeout=5)
        try:
            conn.execute("BEGIN IMMEDIATE")
            loop.call_soon_threadsafe(held.set)
            time.sleep(5.5)  # longer than the agent's busy timeout (5 s): the scan is held, and recorded after
            conn.rollback()
        finally:
            conn.close()

    holding = asyncio.ensure_future(asyncio.to_thread(hold_the_database))
    await held.wait()
    read_at = time.time()
    sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")
    await seen.scans_count(1)
    await holding
    [(scanned_at,)] = await db_rows(agent, "SELECT scanned_at FROM scans")
    assert abs(scanned_at - read_at) < 0.5, scanned_at - read_at
