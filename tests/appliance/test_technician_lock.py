"""A technician's sqlite3 on the box's database: a write transaction left open (`BEGIN IMMEDIATE` in the shell)
while the agent runs or starts. The agent waits for it, and says who holds it instead of blaming the card."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.smtp import SmtpSink
from edge.store.db import ROOM_BYTES
from tests.helpers import (
    agent_process,
    api_client,
    edge,
    fresh,
    in_english,
    mail_to,
    notify_socket,
    post,
    toml,
    wait_until,
)

BUSY_TIMEOUT_S = 5.0  # the agent's busy_timeout (edge/store/db.py): what a start waited before it gave up
HELD_BY = "another program holds the database (edge.db) open for writing"


@contextlib.asynccontextmanager
async def technicians_lock(db: Path, *, exclusive: bool = False) -> AsyncIterator[None]:
    """The write lock a technician's `sqlite3 edge.db` holds after `BEGIN IMMEDIATE;` (``exclusive``: after
    `PRAGMA locking_mode = EXCLUSIVE;` too, which also keeps out readers), until the block ends."""
    conn = await asyncio.to_thread(sqlite3.connect, db, isolation_level=None, timeout=10, check_same_thread=False)
    try:
        if exclusive:
            await asyncio.to_thread(conn.execute, "PRAGMA locking_mode = EXCLUSIVE")
        await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
        yield
        await asyncio.to_thread(conn.execute, "ROLLBACK")
    finally:
        await asyncio.to_thread(conn.close)


@contextlib.asynccontextmanager
async def running_agent(tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink) -> AsyncIterator[AgentProcess]:
    """The agent as its own process, in English, mailing the sink, with one order taken (its database made)."""
    sections = mail_to(sink)
    sections["alerts"] |= {"group_interval_s": 0.5, "retry_base_s": 0.2, "retry_max_s": 0.4}
    agent = agent_process(tmp_path, printers, extra="\n" + toml(sections), log_level="info")
    in_english(agent.config)
    try:
        await agent.start(timeout=30)
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(make_order(1, print_receipt=False))))[0] == 201
        yield agent
    finally:
        await agent.close()


def logged(agent: AgentProcess, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in agent.log.read_text().splitlines() if line.startswith("{")]  # after the run
    return [line for line in lines if line.get("event") == event]


def storage_mails(sink: SmtpSink) -> list[Any]:
    return [m for m in sink.messages if "Storage" in str(m["Subject"])]


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    smtp = SmtpSink()
    await smtp.start()
    yield smtp
    await smtp.stop()


@pytest.mark.slow(seconds=15)
@pytest.mark.parametrize("exclusive", [False, True], ids=["begin-immediate", "locking-mode-exclusive"])
async def test_a_start_under_another_programs_write_lock_waits_for_it_naming_it_and_keeps_the_cards_room(
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    exclusive: bool,
) -> None:
    """The agent stopped, a technician's sqlite3 holds a write lock on edge.db for longer than the busy timeout, the
    agent starts (systemd's restart). It waits for the lock, tells systemd so (EXTEND_TIMEOUT_USEC with a STATUS
    naming the lock), logs once which program holds it, and is ready once the lock goes; the card's room file stays.
    Before stop 83 each start exited 1 after 5 s ("database is locked"), systemd's five starts were spent in 38 s
    and the box stayed down after the lock went; under locking_mode=EXCLUSIVE the start also gave back the 1 MiB
    room file of a card that was not full (the storage83 probe, F8)."""
    async with running_agent(tmp_path, printers, sink) as agent:
        assert await agent.terminate() == 0
        db = tmp_path / "data" / "edge.db"
        room = db.with_name("edge.db-room")
        assert (await asyncio.to_thread(room.stat)).st_size == ROOM_BYTES
        with notify_socket(monkeypatch) as systemd:
            agent.added_env["NOTIFY_SOCKET"] = os.environ["NOTIFY_SOCKET"]
            async with technicians_lock(db, exclusive=exclusive):
                starting = asyncio.ensure_future(agent.start(timeout=30))
                await asyncio.sleep(BUSY_TIMEOUT_S + 2)
                assert not starting.done(), starting.exception()
                began = time.monotonic()
            await starting
            assert time.monotonic() - began < 5, "ready long after the lock went"
            said = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    said.append(systemd.recv(4096).decode())
        waits = logged(agent, "database_locked_by_another_program")
        assert len(waits) == 1, waits
        assert f"pid {os.getpid()}" in str(waits[0]["held_by"]), waits
        extends = [m for m in said if "EXTEND_TIMEOUT_USEC" in m]
        assert extends and all(HELD_BY in m for m in extends), said
        assert (await asyncio.to_thread(room.stat)).st_size == ROOM_BYTES
        assert logged(agent, "card_full_room_given") == []


@pytest.mark.slow(seconds=20)
async def test_orders_refused_under_a_technicians_write_lock_name_the_other_program_not_the_card(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """The agent runs; a technician's sqlite3 holds a write lock (BEGIN IMMEDIATE) while an order comes. The order
    is refused 503 saying another program holds the database open for writing, the storage mail says so and what
    to do, and nothing tells to replace the card; once the lock goes the retry is taken. Before stop 83 the 503 said
    "the box's storage card does not finish its writes" and the mail told to replace a wearing-out card (the
    storage83 probe, F1)."""
    async with running_agent(tmp_path, printers, sink) as agent:
        async with technicians_lock(tmp_path / "data" / "edge.db"):
            async with api_client(agent.port) as api:
                status, body = await post(api, fresh(make_order(2, print_receipt=False)))
            assert status == 503, body
            assert HELD_BY in body["reason"] and "card" not in body["reason"], body
            await wait_until(lambda: storage_mails(sink), 30, "the storage mail")
        mail = storage_mails(sink)[0]
        text = mail.get_body(("plain",)).get_content()
        assert HELD_BY in text and "sqlite3" in text, text
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(make_order(2, print_receipt=False))))[0] == 201


@pytest.mark.slow(seconds=20)
async def test_ready_under_a_technicians_write_lock_answers_at_once_naming_it_and_health_says_so(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """The agent runs; a technician's sqlite3 holds a write lock while orders wait behind it. /ready answers within
    a second, 503 naming the other program, and `edge health` says the same, not "is the agent running?". Before
    stop 83 /ready waited behind the orders' busy waits (5 to 19 s), past `edge health`'s 10 s: "did not answer
    (timed out); is the agent running?", and twice in a row mailed "agent not running" (the storage83 probe, F10)."""
    async with running_agent(tmp_path, printers, sink) as agent:
        async with technicians_lock(tmp_path / "data" / "edge.db"):
            async with api_client(agent.port) as api:
                waiting = [asyncio.ensure_future(post(api, fresh(make_order(n, print_receipt=False)))) for n in (2, 3)]
                await asyncio.sleep(0.5)  # the orders wait on the lock
                began = time.monotonic()
                async with api.get("/ready", timeout=aiohttp.ClientTimeout(total=4)) as response:
                    took = time.monotonic() - began
                    answer = await response.json()
                assert response.status == 503 and took < 1.0, (response.status, took, answer)
                detail = answer["checks"]["database_writable"]["detail"]
                assert HELD_BY in detail and f"held by pid {os.getpid()}" in detail, answer
                health = await edge("health", "--config", str(agent.config), kill_after_s=30)
                assert health.returncode == 1, health
                assert HELD_BY in health.stdout + health.stderr, health
                assert "is the agent running" not in health.stdout + health.stderr, health
                await asyncio.gather(*waiting)
