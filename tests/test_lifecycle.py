"""The agent as a process: demo, migrate, JSON logs, and a graceful SIGTERM that lets the job in flight finish."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import aiohttp

from edge.sim.orders import example_order
from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from edge.store.migrations import latest_version, load_migrations
from tests.helpers import (
    TOKEN,
    agent_process,
    api_client,
    db_execute,
    db_rows,
    edge_blocking,
    fill,
    post,
    small_disk,
    wait_until,
)


def edge(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return edge_blocking(*args, env={"PYTHONUNBUFFERED": "1"}, cwd=cwd, timeout=timeout)


def test_demo_once_prints_the_samples(tmp_path: Path) -> None:
    """`edge demo --once` pushes sample orders through HTTP and shows their tickets as text; raw .bin files are kept;
    the central simulator hears what printed. Run again on the kept data it takes new sample orders (201, not a 409
    for the example whose times moved)."""
    for run in range(2):
        result = edge("demo", "--once", "--port", "0", "--orders", "2", "--data-dir", str(tmp_path / "demo"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "POST order A-1042: 201 stored" in result.stdout
        assert "[QR edge:v1:ord_7f3a9c21-" in result.stdout
        assert "Käsespätzle" in result.stdout and "39,30 €" in result.stdout
        events = re.search(r"the central API got (\d+) status events", result.stdout)
        assert events is not None and int(events[1]) > 0, result.stdout[-300:]
        bins = list((tmp_path / "demo" / "printed").glob("*.bin"))
        assert len(bins) >= 3 * (run + 1)  # kitchen ticket + receipt of the example, and the second sample's tickets
        assert any(b"K\x84sesp\x84tzle" in b.read_bytes() for b in bins)
        # The outage's orders were taken while the box ran: recovered, they are first prints, no copies.
        assert "Recovery: 3 orders from the central API stored" in result.stdout, result.stdout[-600:]
        assert "KOPIE / COPY" not in result.stdout
        # The agent's log only with --verbose: its warning that the line is down (the demo starts so) was a raw JSON
        # line before the banner (the docs probe, D8).
        assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")], (
            result.stderr
        )


def test_migrate_down_and_up_from_the_command_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "edge.toml", data_dir=tmp_path / "data", api_port=0, token=TOKEN, printers={"kitchen": 9, "front": 9}
    )
    up = edge("migrate", "--config", str(config))
    assert up.returncode == 0, up.stderr
    latest = int(up.stdout.strip().rsplit(" ", 1)[1])
    # Down to the first schema (0, no database at all, is refused: tests/appliance/test_files_and_locks.py), a backup
    # taken first
    down = edge("migrate", "--config", str(config), "--to", "1")
    assert down.stdout.strip().endswith(f"schema version {latest} -> 1") and "backup before" in down.stdout, down
    with sqlite3.connect(tmp_path / "data" / "edge.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'pending_cancels'").fetchone()[0] == 0
    assert edge("migrate", "--config", str(config)).returncode == 0
    with sqlite3.connect(tmp_path / "data" / "edge.db") as conn:
        conn.execute("PRAGMA user_version = 999")
    refused = edge("run", "--config", str(config))
    # Exit 2, as for a config error: a person must act (upgrade the agent, or restore), and systemd does not restart
    # it in a loop (RestartPreventExitStatus=2). Before: 1, five restarts, then systemd gave up.
    assert refused.returncode == 2
    assert "schema is version 999" in refused.stderr and "Traceback" not in refused.stderr


async def test_a_database_a_newer_agent_wrote_stops_the_start_and_leaves_the_room_kept_for_a_full_card(
    tmp_path: Path,
) -> None:
    """The previous release started by hand on the database the newer one wrote, on a card with room to spare: `edge
    run` stops with one line, exit 2, and the room the agent keeps beside its database for a start on a full card
    (edge.db-room) stays. Before: that refusal was taken for a full card, the room given away and
    "card_full_room_given" logged on a card with 70 GB free, so a start on a card that really filled had none (the
    upgrade73 probe)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    try:
        await agent.start()  # the first start makes the room
        assert await agent.terminate() == 0
    finally:
        if agent.proc and agent.proc.returncode is None:
            await agent.kill()
        await kitchen.stop()
        await front.stop()
    room = tmp_path / "data" / "edge.db-room"
    kept = room.stat().st_size
    assert kept > 0
    newest = latest_version(load_migrations())
    await db_execute(tmp_path / "data" / "edge.db", f"PRAGMA user_version = {newest + 1}")
    refused = await asyncio.to_thread(edge, "run", "--config", str(agent.config))
    assert refused.returncode == 2, refused.stderr
    assert "card_full_room_given" not in refused.stderr, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"edge: database schema is version {newest + 1}"), line
    assert room.exists() and room.stat().st_size == kept, "the room kept for a full card was given away"


def test_migrate_on_a_full_card_says_so_in_one_line(tmp_path: Path) -> None:
    """upgrade.sh runs `edge migrate`; on a card that is full it fails, in one line that says why; the database keeps
    the version it started from, whole (the climb is one transaction), and the next run once there is room goes on
    from it. Before: a Python traceback ending in
    sqlite3.OperationalError."""
    with small_disk(tmp_path / "data", 2) as data:
        config = write_config(
            tmp_path / "edge.toml", data_dir=data, api_port=0, token=TOKEN, printers={"kitchen": 9, "front": 9}
        )
        assert edge("migrate", "--config", str(config), "--to", "3").returncode == 0
        filler = fill(data, leave=65536)  # room to open the database, none for the migration's pages
        refused = edge("migrate", "--config", str(config))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("edge: ") and "full" in line, line
        filler.unlink()
        with sqlite3.connect(data / "edge.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        again = edge("migrate", "--config", str(config))
        assert again.stdout.startswith(f"database {data / 'edge.db'}: schema version 3 -> ")


async def test_sigterm_finishes_the_job_in_flight_and_logs_json(tmp_path: Path) -> None:
    """On SIGTERM the agent answers 503, finishes the ticket it is sending, closes the database and exits 0."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    kitchen.bytes_per_s = 400  # a ticket takes about a second to go out
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, log_level="info")
    port = agent.port
    await agent.start()
    try:
        order = example_order() | {"print_receipt": False}
        async with api_client(port) as session:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201
            # On its way (a fixed 0.3 s was not enough on a loaded machine: nothing was in flight yet at the signal)
            await wait_until(lambda: kitchen.job_bytes_in > 0, what="the ticket on its way")
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            try:
                async with session.post("/api/v1/orders", json=order) as response:
                    assert response.status == 503
            except aiohttp.ClientConnectionError:
                pass  # the listener may already be closed: the backend retries either way
        assert await asyncio.wait_for(agent.proc.wait(), timeout=30) == 0
        await kitchen.wait_for_printed(1, timeout=5)
        assert len(kitchen.printed) == 1 and kitchen.dropped == []
        assert await db_rows(tmp_path / "data" / "edge.db", "SELECT state FROM print_jobs") == [("printed",)]
    finally:
        if agent.proc and agent.proc.returncode is None:
            await agent.kill()
        await kitchen.stop()
        await front.stop()
    lines = [
        json.loads(line)
        for line in (tmp_path / "agent.log").read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]
    events = [line["event"] for line in lines]
    assert "agent_stopping" in events and "agent_stopped" in events
    assert all("timestamp" in line and "level" in line for line in lines)


async def test_a_rollback_below_order_changes_prints_no_storno_as_a_whole_ticket_and_an_upgrade_keeps_the_cancel(
    tmp_path: Path,
) -> None:
    """An order printed, then cancelled while the kitchen printer is off: its STORNO waits. The box is rolled back to
    a version before order changes (`edge migrate --to 10`, as upgrade.sh does): that version would print the STORNO
    as the whole order again (the cook makes a cancelled order twice), so it waits there as dead, saying why (a person
    is alerted). Upgraded again, the order is still cancelled at its revision: the sender's retry of the cancel is a
    duplicate, nothing prints. Before: the old version printed the whole ticket, and after the new upgrade every retry
    of the cancel was answered 503 (probe_intake D1, D2)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    db = tmp_path / "data" / "edge.db"
    order = example_order() | {"print_receipt": False}
    cancel = {"revision": 2, "reason": "Gast gegangen"}
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, order))[0] == 201
            await kitchen.wait_for_printed(1)
            kitchen.set_offline(True)
            async with api.post(f"/api/v1/orders/{order['id']}/cancel", json=cancel) as response:
                assert response.status == 200, await response.text()
        assert await agent.terminate() == 0
        down = await asyncio.to_thread(edge, "migrate", "--config", str(agent.config), "--to", "10")
        assert down.returncode == 0, down.stderr
        waiting = await db_rows(db, "SELECT state, last_error FROM print_jobs WHERE state != 'printed'")
        assert [state for state, _ in waiting] == ["dead"] and "cancel" in waiting[0][1], waiting
        up = await asyncio.to_thread(edge, "migrate", "--config", str(agent.config))
        assert up.returncode == 0, up.stderr
        kitchen.set_offline(False)
        await agent.start()
        async with api_client(agent.port) as api:
            async with api.post(f"/api/v1/orders/{order['id']}/cancel", json=cancel) as response:
                assert response.status == 200 and (await response.json())["status"] == "duplicate"
        assert await db_rows(db, "SELECT revision, status FROM orders") == [(2, "cancelled")]
        await asyncio.sleep(1.0)  # time for a wrong print to show
        assert len(kitchen.printed) == 1
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
