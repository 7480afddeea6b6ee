"""A database file the SD card damaged (a page of garbage, as a card that lost power mid-write leaves): the agent does
not start on it, and says so where people see it, with the fix; the fix works."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.config import Settings
from edge.errors import StoreDamagedError
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from edge.store.jobs import JobStore
from tests.helpers import (
    agent_process,
    api_client,
    damage_table,
    db_execute,
    db_rows,
    edge,
    edge_backup,
    mail_to,
    post,
    take_one_order,
)


def _mailing(sink: SmtpSink) -> str:
    """Config tables that mail alerts (and the health check's) to the manager through ``sink``."""
    return (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\n'
    )


async def test_a_damaged_database_stops_the_start_names_the_backup_to_restore_and_the_health_mail_says_so(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """A store with a nightly backup; then a page of its database turns to garbage. `edge run` stops with exit 2 (so
    systemd does not restart it in a loop: RestartPreventExitStatus=2) and one line naming the file, that it is
    damaged and the `edge restore` command with the newest backup; `edge doctor` names that command too, and the
    health-check timer's mail to the manager says the same instead of only "cannot connect". The restore keeps the
    damaged file aside as it is (its safety copy went through SQLite, so the restore refused a damaged database),
    and then the agent starts with the order taken before the backup. Before: exit 1 with "database disk image is
    malformed" and nothing else, restarted by systemd five times, the mail said the agent's port refused
    connections, and the restore refused."""
    agent = agent_process(tmp_path, printers, extra=_mailing(sink))
    config, db = str(agent.config), tmp_path / "data" / "edge.db"
    try:
        await take_one_order(agent)
        backup = await edge_backup(agent.config)
        await asyncio.to_thread(damage_table, db, "print_jobs")

        refused = await edge("run", "--config", config)
        assert refused.returncode == 2, refused.stderr
        said = [line for line in refused.stderr.splitlines() if not line.startswith("{")]  # not the JSON log
        assert len(said) == 1, refused.stderr
        line = said[0]
        assert str(db) in line and "damaged" in line and f"edge restore {backup}" in line, line

        doctor = await edge("doctor", "--config", config)
        assert f"edge restore {backup}" in doctor.stdout, doctor.stdout
        for _ in range(2):  # the timer's second miss in a row mails
            assert (await edge("health", "--alert", "--config", config)).returncode == 1
        body = (await sink.wait_for(1))[0].get_body(("plain",)).get_content()
        assert "damaged" in body and f"edge restore {backup}" in body, body

        restored = await edge("restore", str(backup), "--config", config)
        assert restored.returncode == 0, restored.stderr
        assert "kept as" in restored.stdout and "damaged-" in restored.stdout  # the damaged file, moved aside as it was
        await agent.start()
        assert await db_rows(db, "SELECT number FROM orders") == [(make_order(1)["number"],)]
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_second_agent_refused_by_the_lock_leaves_nothing_for_the_health_check(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A technician runs `edge run` by hand while the service runs: refused (the data directory's lock), and what it
    said is not kept as the reason of the running agent's last start, so a later outage is not mailed with it."""
    agent = agent_process(tmp_path, printers)
    try:
        await agent.start()
        second = await edge("run", "--config", str(agent.config))
        assert second.returncode == 1 and "agent" in second.stderr, second.stderr
        assert not (tmp_path / "data" / "start-failure").exists()
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_config_slip_after_a_good_start_is_what_the_health_mail_says(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """The technician edits the config and restarts: the printer's host now carries its port. `edge run` stops with
    exit 2 and the line naming the key; the health-check timer, which reads the same config, still mails the manager
    (before: it stopped at the same line, exit 2, and mailed nobody) and its mail carries that line, not only "cannot
    connect", so whoever reads it knows what to fix."""
    agent = agent_process(tmp_path, printers, extra=_mailing(sink))
    try:
        await agent.start()
        assert await agent.terminate() == 0
        text = agent.config.read_text(encoding="utf-8")
        slipped = text.replace('host = "127.0.0.1"\nport = ', 'host = "127.0.0.1:9100"\nport = ', 1)
        assert slipped != text
        agent.config.write_text(slipped, encoding="utf-8")
        refused = await edge("run", "--config", str(agent.config))
        assert refused.returncode == 2, refused.stderr
        assert "holds a port" in refused.stderr
        for _ in range(2):
            assert (await edge("health", "--alert", "--config", str(agent.config))).returncode == 1
        body = (await sink.wait_for(1))[0].get_body(("plain",)).get_content()
        assert "its config is broken: config printers.kitchen.host: holds a port" in body, body
    finally:
        await agent.close()


async def test_a_restore_killed_half_way_leaves_a_database_for_the_next_try_never_none(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`edge restore` over a damaged database is killed (SIGKILL: the box loses power) the moment the damaged file
    shows up aside. The database is still there, damaged (the start refuses it and names the restore) or restored,
    never missing: a missing one would make the next start begin with an empty database, whose recovery brings back
    orders that printed before as new tickets. The restore run again completes and leaves nothing behind. The backup
    carries 32 MB so that the copy takes a while. Before: the damaged file was moved aside first, then the backup
    copied in its place: killed then, no database (or an empty one, SQLite's rolled-back copy)."""
    agent = agent_process(tmp_path, printers)
    config, db = str(agent.config), tmp_path / "data" / "edge.db"
    try:
        await take_one_order(agent)
        await db_execute(db, "CREATE TABLE ballast(b BLOB)")
        await db_execute(db, "INSERT INTO ballast VALUES (randomblob(32 * 1024 * 1024))")
        backup = await edge_backup(agent.config)
        await asyncio.to_thread(damage_table, db, "print_jobs")

        restore = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge", "restore", str(backup), "--config", config,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(60):
            # A moment to catch, not a state to wait for (wait_until's poll is too slow for it): no Event tells it.
            while not list(backup.parent.glob("damaged-*.db")) and restore.returncode is None:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        restore.kill()
        await restore.wait()
        assert restore.returncode == -signal.SIGKILL, "the restore ended before it was killed"
        assert await asyncio.to_thread(_what_is_in, db) in ("damaged", "restored")

        again = await edge("restore", str(backup), "--config", config)
        assert again.returncode == 0, again.stderr
        left = sorted(p.name for p in db.parent.iterdir() if p.name.startswith("edge.db"))
        assert left == ["edge.db", "edge.db-room"]  # the room the agent keeps for a start on a full card stays
        await agent.start()
        assert await db_rows(db, "SELECT number FROM orders") == [(make_order(1)["number"],)]
        assert await agent.terminate() == 0
    finally:
        await agent.close()


def _what_is_in(db: Path) -> str:
    """What the next start would find: "missing", "empty", "damaged", "restored" (the backup's order) or the orders."""
    if not db.exists():
        return "missing"
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:  # a read rolls a cut-short copy back, as a start would
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return "damaged"
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'orders'").fetchall():
                return "empty"
            orders = conn.execute("SELECT number FROM orders").fetchall()
    except sqlite3.DatabaseError:
        return "damaged"
    return "restored" if orders == [(make_order(1)["number"],)] else f"holds orders {orders}"


async def test_a_start_refused_for_a_damaged_database_mails_nothing_itself(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start finds the damage and stops (exit 2); the health check's mail tells the manager, with the backup to
    restore (above). The refused start mails nothing itself: its alert checks, which run from early in the start,
    found the damaged file too, and when the rest of the start took a moment (a slow card) they mailed "storage
    problem: free disk space or check the card" beside it (one clean-clone CI run: that mail came first, the health
    mail second). Here the start's reading of the interrupted jobs takes a second, as on a slow card."""
    settings = make_settings(**mail_to(sink))
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1)))[0] == 201
    await agent.stop()
    await asyncio.to_thread(damage_table, settings.agent.db_path, "print_jobs")
    requeue = JobStore.requeue_interrupted

    async def slow_requeue(self: JobStore, *args: Any, **kwargs: Any) -> list[int]:
        await asyncio.sleep(1.5)
        return await requeue(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "requeue_interrupted", slow_requeue)
    with pytest.raises(StoreDamagedError):
        await make_agent(settings)
    await asyncio.sleep(0.5)  # a mail on its way when the start gave up would arrive meanwhile
    assert [m["Subject"] for m in sink.messages] == []
