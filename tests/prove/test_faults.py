"""Fault tests: what staff, the manager and the backend see when a printer, the disk, SMTP or the central API
misbehave."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import Settings
from edge.events import Event, JobFailed, JobPrinted, PrinterStatusChanged
from edge.printing.decode import decode
from edge.printing.status import PrinterState
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import TOKEN, api_client, db_rows, eventually, job_rows, wait_until

# The "paper out for a minute" in CI is a few seconds; EDGE_FAULT_PAPER_OUT_S=60 runs the full minute.
PAPER_OUT_S = float(os.environ.get("EDGE_FAULT_PAPER_OUT_S", "3"))


@pytest.fixture
async def events(agent: Agent) -> AsyncIterator[list[Event]]:
    """Every event the agent publishes, in order."""
    seen: list[Event] = []
    unsubscribe = agent.bus.subscribe(seen.append)
    yield seen
    unsubscribe()


async def push(api: aiohttp.ClientSession, order: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    async with api.post("/api/v1/orders", json=order) as response:
        return response.status, await response.json(), response.headers


def tickets(sim: SimPrinter) -> list[tuple[str, bool]]:
    """(order id, is a copy) for each whole ticket on the printer's paper."""
    found = []
    for data in sim.printed:
        doc = decode(data)
        if doc.qr_codes:
            found.append((doc.qr_codes[0].split(":")[2], "KOPIE / COPY" in doc.text))
    return found


async def test_printer_hanging_up_mid_job_reprints_it_marked_copy(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter], events: list[Event]
) -> None:
    """The kitchen printer cuts the connection after 100 bytes: the job fails once, is retried, and the retry says
    COPY."""
    kitchen = printers["kitchen"]
    kitchen.drop_after = 100
    status, body, _ = await push(api, make_order(1, prefix="drop", print_receipt=False))
    assert status == 201
    await wait_until(lambda: any(isinstance(e, JobPrinted) for e in events), 10, "the retried job printed")
    assert kitchen.dropped == [0] and len(kitchen.jobs[0]) == 100  # what a real printer got before the cut
    assert tickets(kitchen) == [("drop_000001", True)]  # the whole ticket came out once, marked as a copy
    failed = [e for e in events if isinstance(e, JobFailed)]
    assert [(e.job_id, e.attempts) for e in failed] == [(body["job_ids"][0], 1)]
    async with api.get("/api/v1/orders/drop_000001") as response:
        order = await response.json()
    assert order["printed"] is True
    assert order["jobs"][0]["copy"] is True and order["jobs"][0]["attempts"] >= 1


async def test_printer_at_100_bytes_per_second_prints_everything_and_blocks_nobody(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """A kitchen printer that reads 100 bytes/s still gets its ticket whole and once; receipts and intake are not held
    up."""
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.bytes_per_s = 100
    status, _, _ = await push(api, make_order(1, prefix="slow"))
    assert status == 201
    await front.wait_for_printed(1, timeout=5)  # the receipt printer is not queued behind the slow one
    assert kitchen.printed == []
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await push(api, make_order(2, prefix="slow", print_receipt=False))
    assert status == 201 and loop.time() - started < 2  # intake answers while the slow job is still going out
    await kitchen.wait_for_printed(2, timeout=25)
    assert tickets(kitchen) == [("slow_000001", False), ("slow_000002", False)]
    assert kitchen.dropped == []
    await eventually(  # the printed mark lands just after the last byte
        lambda: db_rows(agent, "SELECT state, attempts FROM print_jobs WHERE printer = 'kitchen'"),
        lambda rows: rows == [("printed", 0), ("printed", 0)],
        what="both tickets printed once",
    )


async def test_paper_out_for_a_while_holds_jobs_then_prints_them_in_order(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter], events: list[Event]
) -> None:
    """Out of paper: orders are still taken (201), jobs wait queued with no attempt spent, then print once each, oldest
    first."""
    kitchen = printers["kitchen"]
    kitchen.paper_out = True
    for n in range(3):
        status, _, _ = await push(api, make_order(n, prefix="paper", print_receipt=False))
        assert status == 201
    await wait_until(
        lambda: any(isinstance(e, PrinterStatusChanged) and e.new == "paper_out" for e in events),
        5,
        "paper_out reported",
    )
    await asyncio.sleep(PAPER_OUT_S)
    assert await db_rows(agent, "SELECT DISTINCT state, attempts FROM print_jobs") == [("queued", 0)]
    async with api.get("/api/v1/printers") as response:
        states = {p["name"]: (p["state"], p["jobs"]["queued"]) for p in (await response.json())["printers"]}
    assert states["kitchen"] == ("paper_out", 3)
    assert kitchen.printed == [] and kitchen.jobs == []  # nothing was sent into an empty printer

    kitchen.paper_out = False
    await kitchen.wait_for_printed(3, timeout=10)
    assert tickets(kitchen) == [(f"paper_{n:06d}", False) for n in range(3)]
    changes = [(e.old, e.new) for e in events if isinstance(e, PrinterStatusChanged) and e.printer == "kitchen"]
    assert (
        changes[-1] == ("paper_out", "online") and sum(new == "paper_out" for _, new in changes) == 1
    )  # one transition each way
    await eventually(
        lambda: db_rows(agent, "SELECT DISTINCT state FROM print_jobs"),
        lambda rows: rows == [("printed",)],
        5,
        "all jobs recorded printed",
    )


@pytest.mark.parametrize(
    ("fault", "repair"),
    [
        ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),  # the file turned read-only under us
        ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1073741823"),  # the disk filled up
    ],
    ids=["read-only", "disk-full"],
)
async def test_database_that_cannot_write_answers_503_then_recovers(
    agent: Agent, api: aiohttp.ClientSession, fault: str, repair: str
) -> None:
    """No writable database: intake answers 503 with Retry-After and stores nothing; /ready says why; once fixed, the
    same order is taken."""
    status, _, _ = await push(api, make_order(1, prefix="disk", print_receipt=False))
    assert status == 201
    assert agent.db is not None
    # The fault goes on the store's own writer connection, so it hits exactly what intake writes through.
    writer = agent.db._writer
    pages = (await (await writer.execute("PRAGMA page_count")).fetchone())[0]
    await writer.execute(fault.format(pages=pages))
    orders = [make_order(n, prefix="disk", print_receipt=False, bar=True) for n in range(2, 40)]
    answers = [await push(api, order) for order in orders]
    refused = [order for order, (status, _, _) in zip(orders, answers, strict=True) if status != 201]
    assert refused, "the fault never bit"
    for status, body, headers in answers:
        assert status in (201, 503), body
        if status == 503:
            assert body["error"] == "unavailable" and headers["Retry-After"] == "5"
    # On a full disk small updates may still fit; /ready then asks for room for new orders and says no.
    async with api.get("/ready") as response:
        ready = await response.json()
        assert response.status == 503 and ready["checks"]["database_writable"]["ok"] is False

    await writer.execute(repair)
    async with api.get("/ready") as response:
        assert response.status == 200
    for order in refused:  # the backend retries what got 503
        status, _, _ = await push(api, order)
        assert status == 201
    stored = {r[0] for r in await db_rows(agent, "SELECT id FROM orders")}
    assert stored == {"disk_000001"} | {o["id"] for o in orders}
    orphans = await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE order_id NOT IN (SELECT id FROM orders)")
    assert orphans == [(0,)]  # a refused order left no half-written jobs behind


async def test_a_spool_waiting_for_a_full_disk_says_so_once_and_prints_once_it_has_room(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """Tickets wait for a printer that was off; it comes back while the database cannot be written (the SD card full):
    the spool cannot claim them, says so once (the storage alert tells the manager) and prints each once as soon as
    the disk has room. Before, it logged an error with a traceback every second per printer, on a full card."""
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    assert (await push(api, make_order(1, prefix="full", print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state == PrinterState.OFFLINE, what="the kitchen offline")
    assert agent.db is not None
    await agent.db._writer.execute("PRAGMA query_only = ON")
    with capture_logs() as logs:
        kitchen.set_offline(False)
        await asyncio.sleep(3.5)  # the spool tries again every second
        await agent.db._writer.execute("PRAGMA query_only = OFF")
        await kitchen.wait_for_printed(1)
    said = [e for e in logs if e.get("device_id") == "kitchen" and e["log_level"] in ("warning", "error")]
    assert [e["event"] for e in said] == ["spool_waits_for_storage"], said
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)])
    assert len(kitchen.printed) == 1


async def test_central_api_500s_429s_and_timeouts_delay_status_events_but_lose_none(
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    central: CentralSim,
) -> None:
    """While the central API answers 500, 429 and too slowly, intake still answers 201 at once; afterwards the
    backend holds every outbox event (one copy per idempotency key) and the outbox is empty."""
    settings = make_settings(
        central={
            "url": central.url,
            "token": TOKEN,
            "start_jitter_s": 0,
            "probe_max_s": 0.1,
            "read_timeout_s": 0.3,
            "retry_base_s": 0.05,
            "retry_max_s": 0.3,
            "rate_limit_rps": 50,
        }
    )
    agent = await make_agent(settings)
    central.latency_s = 1.0  # every call times out on the agent's side
    central.fail_next(3, 500)
    central.fail_next(3, 429, retry_after=0.2)
    loop = asyncio.get_running_loop()
    orders = [make_order(n, prefix="flaky", print_receipt=False) for n in range(5)]
    central.add_orders(orders)  # the backend's own orders: it takes events only for orders of this store
    async with api_client(agent) as api:
        for order in orders:
            started = loop.time()
            status, _, _ = await push(api, order)
            assert status == 201 and loop.time() - started < 2  # intake never waits on the central API
    await printers["kitchen"].wait_for_printed(5)
    await asyncio.sleep(1.0)  # a while of timeouts and error answers
    central.latency_s = 0.0
    keys = {r[0] for r in await db_rows(agent, "SELECT idempotency_key FROM outbox")}
    assert len(keys) == 10  # received + printed for each order
    await central.wait_for(lambda: keys <= set(central.events), timeout=30)
    await eventually(
        lambda: db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
        lambda rows: rows == [(0,)],
        10,
        "outbox drained",
    )
    assert {e["order_id"] for e in central.events_of("printed")} == {f"flaky_{n:06d}" for n in range(5)}
    assert any(status in (429, 500) for *_, status in central.requests)  # the faults were really served


async def test_smtp_down_then_up_the_alert_arrives_once(
    make_settings: Callable[..., Settings], make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """The mail server is down when a printer goes offline: the alert waits and is retried; once the server is
    back on the same port the manager gets it exactly once."""
    sink = SmtpSink()
    await sink.start()
    port = sink.port
    await sink.stop()  # down before the fault
    settings = make_settings(
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "sender": "edge@store.test", "timeout_s": 1},
        alerts={
            "to": ["manager@store.test"],
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "disk_free_min_mb": 0,
            "retry_base_s": 0.2,
            "retry_max_s": 0.5,
            "check_interval_s": 0.2,
        },
    )
    agent = await make_agent(settings)
    try:
        printers["kitchen"].set_offline(True)
        assert agent.deps is not None
        await agent.deps.intake.accept(make_order(1, prefix="smtp", print_receipt=False))
        await eventually(
            lambda: db_rows(agent, "SELECT 1 FROM alert_mails WHERE attempts > 0 AND sent_at IS NULL"),
            lambda rows: bool(rows),
            10,
            "a failed send attempt",
        )
        await sink.start()  # the same port: the mail server is back
        mails = await sink.wait_for(1, timeout=15)
        await asyncio.sleep(1.0)  # room for a wrong second copy
        assert len(sink.messages) == 1
        assert "kitchen" in mails[0]["Subject"]
        assert await db_rows(agent, "SELECT COUNT(*) FROM alert_mails WHERE sent_at IS NULL") == [(0,)]
    finally:
        await sink.stop()
