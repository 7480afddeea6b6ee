"""Backups: they belong to one store (restore refuses another store's, or an unknown one, unless forced; the agent will
not run on another store's database), and they finish while the agent is busy."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.config import Settings, load_settings
from edge.errors import ConfigError
from edge.events import RecoveryCompleted
from edge.ops.backup import backup_database
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from edge.sim.smtp import SmtpSink
from edge.store.history import add_printed_history
from tests.helpers import (
    CENTRAL_TOKEN,
    FAST,
    TOKEN,
    Recorder,
    agent_process,
    api_client,
    damage_table,
    db_execute,
    db_rows,
    edge,
    edge_backup,
    eventually,
    fresh,
    key_mark,
    killed_writer,
    post,
    small_disk,
    take_one_order,
    toml,
    until,
)


def central_table(central: CentralSim) -> str:
    """The config's [central] table for ``central``, fast but real (tests/sync/conftest.py)."""
    return "\n" + toml({"central": {**FAST, "url": central.url}})


def box_config(path: Path, store_id: str, central: CentralSim, printers: dict[str, SimPrinter]) -> Path:
    """One store's box: its own data directory and config file, linked to its central API."""
    return write_config(
        path / f"{store_id}.toml",
        data_dir=path / store_id,
        api_port=0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        store_id=store_id,
        extra=central_table(central),
    )


def first_run_completed(body: dict[str, Any]) -> bool:
    """The newest recovery run is completed; the list is empty until the agent's first run is recorded (read before
    that under load, an IndexError failed the test)."""
    return bool(body["runs"]) and body["runs"][0]["state"] == "completed"


async def run_until_recovered(make_agent: Callable[..., Awaitable[Agent]], settings: Settings) -> None:
    """Start the agent, wait for its start-up recovery run to complete, stop it."""
    recorder = Recorder()
    agent = await make_agent(settings, listen=recorder)
    await recorder.wait(RecoveryCompleted, timeout=20)
    await agent.stop()


async def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    return await db_rows(db, sql)


@pytest.fixture
async def centrals() -> AsyncIterator[dict[str, CentralSim]]:
    """The central API for store-b with 3 orders waiting, then store-a's with 2 (so A's cursor is past B's orders)."""
    sims = {
        "store-b": CentralSim("store-b", token=CENTRAL_TOKEN),
        "store-a": CentralSim("store-a", token=CENTRAL_TOKEN),
    }
    for sim in sims.values():
        await sim.start()
    sims["store-b"].create_orders(3, prefix="b")
    sims["store-a"].create_orders(2, prefix="a")
    yield sims
    for sim in sims.values():
        await sim.stop()


async def test_restore_refuses_another_stores_backup_and_force_moves_it(
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    centrals: dict[str, CentralSim],
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """Store A's backup restored on store B's box is refused with one line naming both stores; nothing is written.
    With --force it is restored as B's, the recovery cursor starts over, and all 3 of B's waiting orders arrive."""
    settings_a = load_settings(box_config(tmp_path, "store-a", centrals["store-a"], printers))
    await run_until_recovered(make_agent, settings_a)
    assert await rows(settings_a.agent.db_path, "SELECT value FROM meta WHERE key = 'central_cursor'") != []
    backup_a = await backup_database(settings_a)

    config_b = box_config(tmp_path, "store-b", centrals["store-b"], printers)
    refused = await edge("restore", str(backup_a), "--config", str(config_b))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "store-a" in refused.stderr and "store-b" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    settings_b = load_settings(config_b)
    assert not settings_b.agent.db_path.exists()

    moved = await edge("restore", str(backup_a), "--force", "--config", str(config_b))
    assert moved.returncode == 0, moved.stderr
    assert "recovery cursor" in moved.stdout
    db_b = settings_b.agent.db_path
    assert await rows(db_b, "SELECT value FROM meta WHERE key = 'central_cursor'") == []
    assert await rows(db_b, "SELECT store_id FROM store_identity") == [("store-b",)]
    await run_until_recovered(make_agent, settings_b)
    stored = [r[0] for r in await rows(db_b, "SELECT id FROM orders WHERE substr(id, 1, 2) = 'b_' ORDER BY id")]
    assert len(stored) == 3, stored


async def test_restore_refuses_a_backup_that_names_no_store(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
) -> None:
    """A backup whose database never recorded its store (migrated, but no agent ever ran on it) cannot prove it is this
    store's: refused without --force, restored with it."""
    settings = make_settings()
    agent = await make_agent(settings)
    await agent.stop()
    backup = await backup_database(settings)
    await db_execute(backup, "DELETE FROM store_identity")
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=settings.agent.data_dir,
        api_port=0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        store_id=settings.agent.store_id,
    )
    refused = await edge("restore", str(backup), "--config", str(config))
    assert refused.returncode == 1 and "records no store" in refused.stderr, refused.stderr
    forced = await edge("restore", str(backup), "--force", "--config", str(config))
    assert forced.returncode == 0, forced.stderr


async def test_agent_will_not_run_on_another_stores_database(
    make_settings: Callable[..., Settings], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """The database records its store at the first start; started with another agent.store_id on the same data
    directory, the agent stops with one config error naming both stores instead of fetching with a foreign cursor."""
    agent = await make_agent(make_settings())
    await agent.stop()
    with pytest.raises(ConfigError, match=r"agent\.store_id.*another-store.*test-store"):
        await make_agent(make_settings(agent={"store_id": "another-store"}))
    again = await make_agent(make_settings())  # the lock and the database were let go
    await again.stop()


async def test_backup_finishes_while_the_agent_takes_an_order_every_20ms(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`edge backup` of a 64 MiB database while the agent (its own process, as on the box) takes an order every 20 ms,
    each a few commits (the order, then its jobs printing and printed), finishes within 10 s and holds every order
    acknowledged before it began: it never starts over because another connection committed."""
    agent = agent_process(tmp_path, printers)
    config, port = agent.config, agent.port
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    await asyncio.to_thread(add_printed_history, tmp_path / "data" / "edge.db", megabytes=64)
    acknowledged: list[str] = []
    stop, busy_now = asyncio.Event(), asyncio.Event()

    async def busy() -> None:
        async with api_client(port) as api:
            for n in itertools.count():
                if stop.is_set():
                    return
                order = make_order(n, prefix="busy")
                async with api.post("/api/v1/orders", json=order) as response:
                    assert response.status == 201, await response.text()
                acknowledged.append(order["id"])
                if len(acknowledged) == 5:
                    busy_now.set()
                await asyncio.sleep(0.02)

    try:
        await agent.start()
        writer = asyncio.create_task(busy())
        try:
            await asyncio.wait_for(busy_now.wait(), timeout=10)
            before = list(acknowledged)
            started = time.monotonic()
            backup = await edge("backup", "--config", str(config), kill_after_s=10)
            seconds = time.monotonic() - started
            assert len(acknowledged) > len(before), "orders kept arriving during the backup"
        finally:
            stop.set()
            await writer
    finally:
        await agent.close()
    assert backup.returncode == 0, backup.stderr
    assert seconds < 10
    path = Path(backup.stdout.split(": ", 1)[1].strip())
    stored = {r[0] for r in await rows(path, "SELECT id FROM orders WHERE id LIKE 'busy_%'")}
    assert set(before) <= stored


@pytest.fixture
def sd_card(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB file system for the data directory."""
    with small_disk(tmp_path / "disk", 16) as disk:
        yield disk


async def test_a_backup_never_takes_the_room_the_agent_keeps_free(
    tmp_path: Path, sd_card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The nightly backup copies the database onto the same SD card. It never leaves less free than the agent keeps
    for itself (`alerts.disk_free_min_mb`): when the copy and that reserve do not fit, the oldest backups go first
    (never the newest), and when even that is not enough nothing is written and `edge backup` says why, exit 1.
    Before, the copy went in whatever was left: the card below the reserve (a disk alert for the manager at night),
    and with less room than the copy, full while it was written (orders refused). And each backup left a -wal and a
    -shm file beside it (its check opened it read-only in WAL mode), a copy cut short stayed for ever: now none is
    left, and old ones are removed."""
    data = sd_card / "data"

    def config(reserve_mb: int) -> str:
        return str(
            write_config(
                tmp_path / "edge.toml",
                data_dir=data,
                api_port=0,
                token=TOKEN,
                printers={n: p.port for n, p in printers.items()},
                extra=f"[alerts]\ndisk_free_min_mb = {reserve_mb}\n",
            )
        )

    assert (await edge("migrate", "--config", config(5))).returncode == 0
    await asyncio.to_thread(add_printed_history, data / "edge.db", megabytes=3)
    size_mb = (data / "edge.db").stat().st_size / 2**20
    assert 2.5 < size_mb < 4 and shutil.disk_usage(sd_card).free / 2**20 > 2 * size_mb + 5
    backups = data / "backups"
    backups.mkdir()
    # Left by a backup cut short by a power cut a night ago (as large as the database), and the -wal and -shm files
    # earlier versions left beside every backup.
    (backups / "edge-20261130T033000000Z.partial").write_bytes(b"\0" * 2**20)
    os.utime(backups / "edge-20261130T033000000Z.partial", (time.time() - 86400,) * 2)
    (backups / "edge-20261129T033000000Z.partial-shm").write_bytes(b"\0" * 32768)
    # And the rollback journal of a backup the card filled under (before stop 67 never removed: diskfault2 B1).
    (backups / "edge-20261201T033000000Z.partial-journal").write_bytes(b"\0" * 1024)
    for _ in range(3):  # the third fits only once the first is gone
        done = await edge("backup", "--config", config(5))
        assert done.returncode == 0, done.stderr
        assert shutil.disk_usage(sd_card).free >= 5 * 2**20
        await asyncio.sleep(0.002)  # backups are named by the millisecond
    kept = sorted(backups.glob("edge-*.db"))
    assert len(kept) == 2
    refused = await edge("backup", "--config", config(9))  # a technician raised the reserve
    assert refused.returncode == 1
    assert "not enough space for a backup" in refused.stderr and "alerts.disk_free_min_mb" in refused.stderr
    assert sorted(backups.glob("edge-*")) == kept, [p.name for p in backups.iterdir()]  # nothing dropped or left


@pytest.mark.parametrize("damaged", [True, False], ids=["damaged", "sound"])
async def test_orders_a_restore_brings_back_print_as_copy_up_to_the_replaced_databases_newest_order(
    tmp_path: Path, printers: dict[str, SimPrinter], damaged: bool
) -> None:
    """A nightly backup, then an order taken and printed; then the SD card damages the database and the technician
    restores the backup (or restores it over a sound database, to undo something). The next start's recovery brings
    that order back from central: it may well be in the cook's hand already, so it prints marked COPY (the design's
    rule for anything uncertain), and the order created while the box was down prints as an original. What marks the
    line: the newest order the replaced database took, not its last write (the damage, or an upgrade's failed
    migration before its rollback restores the backup, came later). Before: both printed as originals, the first a
    second time unmarked; with the last write as the line, the second was a COPY too."""
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    agent = agent_process(tmp_path, printers, extra=central_table(central))
    config, db, kitchen = str(agent.config), tmp_path / "data" / "edge.db", printers["kitchen"]

    async def prints_of_order_2() -> int:
        return sum(e["order_id"] == "ord_000002" for e in central.events_of("printed"))

    try:
        central.add_orders([make_order(1, print_receipt=False)])
        await agent.start()
        await kitchen.wait_for_printed(1)
        assert await agent.terminate() == 0
        backup = await edge_backup(agent.config)

        central.add_orders([make_order(2, print_receipt=False, created_at=datetime.now(UTC))])
        await agent.start()
        await kitchen.wait_for_printed(2)
        await eventually(prints_of_order_2, lambda n: n == 1, what="A-1002 reported to central")
        assert await agent.terminate() == 0
        central.add_orders([make_order(3, print_receipt=False, created_at=datetime.now(UTC))])  # the box is down
        # Written once more without taking an order: the card's damage, or an upgrade's migration that failed.
        if damaged:
            await asyncio.to_thread(damage_table, db, "print_jobs")
        else:
            for to in ("--to=12", "--to=13"):
                assert (await edge("migrate", to, "--config", config)).returncode == 0
        restored = await edge("restore", str(backup), "--config", config)
        assert restored.returncode == 0, restored.stderr

        await agent.start()
        tickets = [decode(paper).text for paper in await kitchen.wait_for_printed(4)]
        # The restored database counts job ids on from the backup's, as the replaced one did: its report of the COPY
        # must not repeat the key of the replaced database's report of the original (a strict central refuses it).
        await eventually(prints_of_order_2, lambda n: n == 2, what="the COPY of A-1002 reported to central")
        assert await agent.terminate() == 0
        assert await db_rows(db, "SELECT idempotency_key FROM outbox WHERE payload LIKE '%_rejected%'") == []
        assert ["A-1002" in t for t in tickets] == [False, True, True, False], tickets
        again, new = tickets[2], tickets[3]
        assert "A-1002" in again and "KOPIE / COPY" in again, again
        assert "A-1003" in new and "KOPIE / COPY" not in new, new
        assert "KOPIE / COPY" not in tickets[1]
    finally:
        await agent.close()
        await central.stop()


@pytest.mark.parametrize("migrated", [False, True], ids=["started", "migrated-first"])
async def test_a_new_box_at_a_store_with_history_prints_none_of_it_and_its_last_minutes_as_copy(
    tmp_path: Path, printers: dict[str, SimPrinter], migrated: bool
) -> None:
    """The technician installs a box in a store that central has served for days (the system it replaces printed
    those orders). Its first recovery lists all of them: none prints, none is held; an order from the last minutes
    before the box started (older ones are past the stale age, 45 min) may be on paper from the old system, so it
    prints marked COPY, ticket and receipt; an order taken after the start prints as an original, and a sender's retry
    of a past order prints nothing. The run counts the past ones as `history`. The same when the technician ran
    `edge migrate` before the first start. Before: every past receipt printed (stale_receipt_min is 0: never held)
    and every past ticket was held for a person, 30 here."""
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    now = datetime.now(UTC)
    past = [make_order(n, created_at=now - timedelta(hours=3 * n)) for n in range(1, 30)]
    past.append(make_order(30, created_at=now - timedelta(minutes=50)))
    central.add_orders([*past, make_order(31, created_at=now - timedelta(minutes=10))])
    agent = agent_process(tmp_path, printers, extra=central_table(central))
    kitchen, front = printers["kitchen"], printers["front"]
    try:
        if migrated:
            assert (await edge("migrate", "--config", str(agent.config))).returncode == 0
        await agent.start()
        async with api_client(agent.port) as api:
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
            async with api.get("/api/v1/recovery/runs") as response:
                counts = (await response.json())["runs"][0]["counts"]
            assert (counts["history"], counts["stored"]) == (30, 1), counts
            assert (await post(api, past[0]))[0] == 200  # known: a retry, answered as a duplicate
            assert (await post(api, make_order(32, created_at=datetime.now(UTC))))[0] == 201
            tickets = [decode(paper).text for paper in await kitchen.wait_for_printed(2)]
            receipts = [decode(paper).text for paper in await front.wait_for_printed(2)]
            async with api.get("/api/v1/jobs?state=held") as response:
                assert (await response.json())["jobs"] == []
        await asyncio.sleep(0.5)  # room for a wrong print
        assert (len(kitchen.printed), len(front.printed)) == (2, 2)
        for printed in (tickets, receipts):
            assert "A-1031" in printed[0] and "KOPIE / COPY" in printed[0], printed[0]
            assert "A-1032" in printed[1] and "KOPIE / COPY" not in printed[1], printed[1]
        assert await agent.terminate() == 0
    finally:
        await agent.close()
        await central.stop()


async def test_a_restores_copy_left_by_a_kill_is_removed_at_the_next_start(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`edge restore` killed while it copied the backup beside the database leaves that copy (as large as the
    database, on an SD card); the technician then starts the agent on the database as it was: the start removes the
    copy, and takes its orders. Before: the copy stayed until the next restore."""
    agent = agent_process(tmp_path, printers)
    db = tmp_path / "data" / "edge.db"
    try:
        await take_one_order(agent)
        left = db.with_name("edge.db.restoring")
        left.write_bytes(os.urandom(1 << 20))
        await agent.start()
        assert not left.exists()
        assert await db_rows(db, "SELECT number FROM orders") == [(make_order(1)["number"],)]
        assert await agent.terminate() == 0
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("printed_since", "caught"),
    [(True, "queued"), (False, "queued"), (False, "printing")],
    ids=["printed-since", "still-waiting", "still-waiting-caught-printing"],
)
async def test_a_ticket_the_backup_had_waiting_prints_as_copy_after_a_restore_if_it_printed_since(
    tmp_path: Path, printers: dict[str, SimPrinter], printed_since: bool, caught: str
) -> None:
    """A backup taken while a ticket waits (the kitchen printer off); the printer comes back and prints it; later the
    technician restores that backup. The restored ticket is waiting again and prints again: it may well be in the
    cook's hand, so it is marked COPY. Had it still been waiting in the database the restore replaced (the printer
    stayed off, as an upgrade's rollback restores a backup taken after the agent stopped), it prints once, as an
    original. Before: a second print as an original; with every waiting ticket marked, a first print as a COPY.
    ``caught``: the ticket's state in the backup; "printing" when the spool was trying the offline printer the
    moment it was taken (a start takes that for a crash's: before stop 48 it printed as COPY, a suite run under load
    caught it so)."""
    agent = agent_process(tmp_path, printers)
    kitchen = printers["kitchen"]
    try:
        await agent.start()
        kitchen.set_offline(True)
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        backup = await edge_backup(agent.config)  # online, the ticket waiting in it
        await asyncio.to_thread(set_job_states, backup, caught)
        if printed_since:
            kitchen.set_offline(False)
            await kitchen.wait_for_printed(1)
        assert await agent.terminate() == 0
        kitchen.set_offline(False)
        restored = await edge("restore", str(backup), "--config", str(agent.config))
        assert restored.returncode == 0, restored.stderr
        await agent.start()
        tickets = [decode(paper).text for paper in await kitchen.wait_for_printed(2 if printed_since else 1)]
        await asyncio.sleep(0.5)  # room for a wrong print
        assert await agent.terminate() == 0
        assert len(kitchen.printed) == len(tickets) and all("A-1001" in t for t in tickets), tickets
        assert ["KOPIE / COPY" in t for t in tickets] == ([False, True] if printed_since else [False])
    finally:
        await agent.close()


async def _sql(db: Path, sql: str) -> list[tuple[object, ...]]:
    """One statement, committed, through a connection closed at once (an open one keeps the card from unmounting)."""

    def run() -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            return conn.execute(sql).fetchall()

    return await asyncio.to_thread(run)


def _fill(disk: Path, leave_mb: float) -> None:
    """A file taking all but ``leave_mb`` of ``disk``'s free space (logs, a failed upgrade's pip cache ...)."""
    fill = int(shutil.disk_usage(disk).free - leave_mb * 2**20)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, fill)
    finally:
        os.close(fd)


async def _remount(disk: Path, mode: str) -> None:
    done = await asyncio.to_thread(subprocess.run, ["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True)
    assert done.returncode == 0, done.stderr


def _restore_files(data: Path) -> list[str]:
    """The database's files, but its -wal and -shm (a read may checkpoint and remove them)."""
    return sorted(
        p.name for p in data.iterdir() if p.name.startswith("edge.db") and not p.name.endswith(("-wal", "-shm"))
    )


@pytest.fixture
def usb_stick(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB file system, as a USB stick."""
    with small_disk(tmp_path / "usb", 16) as disk:
        yield disk


@pytest.mark.parametrize("refusal", ["card-nearly-full", "backup-dir-read-only"])
async def test_a_refused_restore_writes_nothing_and_the_next_try_succeeds(
    tmp_path: Path, sd_card: Path, usb_stick: Path, printers: dict[str, SimPrinter], refusal: str
) -> None:
    """`edge restore` on a card with room for a backup of the database it replaces but not also for the backup's
    copy beside it (`alerts.disk_free_min_mb` kept free), or with `backup.dir` on a stick mounted read-only: refused
    before anything is copied, exit 1, one line that says why and, truly, that nothing was written; the data
    directory holds what it held and the card as much free space. Once there is room (the stick writable) the same
    command restores. Before: the backup was first copied beside the database (`edge.db.restoring`, as large as the
    database), then the safety backup was refused ("not enough space for a backup … nothing written", or
    `[Errno 30] Read-only file system`) and the copy stayed, on the card that had no room: every retry failed the
    same way."""
    card, usb = sd_card, usb_stick
    data = card / "data"
    usb_backups = usb / "edge"
    extra = "[alerts]\ndisk_free_min_mb = 2\n" + (
        f'[backup]\ndir = "{usb_backups}"\n' if refusal == "backup-dir-read-only" else ""
    )
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data,
        api_port=0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        extra=extra,
    )
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    await asyncio.to_thread(add_printed_history, data / "edge.db", megabytes=3)
    backup = await edge_backup(config)
    await _sql(data / "edge.db", "DELETE FROM orders WHERE id = 'history-000000001'")  # a change to undo
    if refusal == "card-nearly-full":
        # Room for the safety backup and the reserve (3 + 2 MB), not for the backup's copy as well (3 MB more).
        await asyncio.to_thread(_fill, card, 6.5)
    else:
        await _remount(usb, "ro")
    before, free = _restore_files(data), shutil.disk_usage(card).free

    refused = await edge("restore", str(backup), "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert _restore_files(data) == before, f"left beside the database; said: {refused.stderr}"
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "nothing written" in lines[0], lines[0]
    if refusal == "card-nearly-full":
        assert "not enough space to restore" in lines[0] and "alerts.disk_free_min_mb" in lines[0], lines[0]
    else:
        assert f"the backup directory {usb_backups} is read-only" in lines[0], lines[0]
    assert shutil.disk_usage(card).free >= free - 2**16
    assert await _sql(data / "edge.db", "SELECT 1 FROM orders WHERE id = 'history-000000001'") == []

    if refusal == "card-nearly-full":
        (card / "filler").unlink()
    else:
        await _remount(usb, "rw")
    again = await edge("restore", str(backup), "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert _restore_files(data) == ["edge.db"]
    assert await _sql(data / "edge.db", "SELECT 1 FROM orders WHERE id = 'history-000000001'") == [(1,)]


async def _card_box(tmp_path: Path, data: Path, printers: dict[str, SimPrinter], megabytes: float) -> Path:
    """A box whose data directory is on the card, its database ``megabytes`` of printed history, 1 MB kept free."""
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data,
        api_port=0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        extra="[alerts]\ndisk_free_min_mb = 1\n",
    )
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    await asyncio.to_thread(add_printed_history, data / "edge.db", megabytes=megabytes)
    return config


async def test_a_restore_never_drops_the_backup_it_restores_to_make_room(
    tmp_path: Path, sd_card: Path, printers: dict[str, SimPrinter]
) -> None:
    """Three backups on a nearly full card; the technician restores the oldest. Older backups count as room, but not
    the one restored, nor the newest: with room only if the oldest counted, the restore is refused, exit 1, one line
    with the sizes ending "nothing written", every backup still there; with room once the middle one makes way, it
    goes and the oldest is restored and kept. Before stop 68: the oldest counted as room and the backup of the
    replaced database dropped it first, the middle one after it; the restore went on from its copy, exit 0, the backup
    asked for gone (with less to drop, the probe's, it then failed: "database or disk is full" under a JSON log line;
    technician probe, finding 2)."""
    data = sd_card / "data"
    config = await _card_box(tmp_path, data, printers, megabytes=2)
    oldest, middle, newest = [await edge_backup(config) for _ in range(3)]
    await _sql(data / "edge.db", "DELETE FROM orders WHERE id = 'history-000000001'")  # a change to undo
    need = oldest.stat().st_size + (data / "edge.db").stat().st_size + 2**20  # its copy, a backup, the reserve
    # Room only if the oldest and the middle one both made way.
    await asyncio.to_thread(_fill, sd_card, (need - middle.stat().st_size - 300 * 1024) / 2**20)
    before, free = _restore_files(data), shutil.disk_usage(sd_card).free

    refused = await edge("restore", str(oldest), "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "not enough space to restore" in lines[0] and lines[0].endswith("nothing written"), lines[0]
    assert sorted(data.joinpath("backups").iterdir()) == [oldest, middle, newest]
    assert _restore_files(data) == before and shutil.disk_usage(sd_card).free >= free - 2**16

    (sd_card / "filler").unlink()
    await asyncio.to_thread(_fill, sd_card, (need - middle.stat().st_size + 300 * 1024) / 2**20)
    restored = await edge("restore", str(oldest), "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    kept = sorted(p.name for p in data.joinpath("backups").iterdir())
    assert kept[:2] == [oldest.name, newest.name] and kept[2].endswith("-before-restore.db"), kept
    assert _restore_files(data) == ["edge.db"]
    assert await _sql(data / "edge.db", "SELECT 1 FROM orders WHERE id = 'history-000000001'") == [(1,)]


async def test_a_restore_whose_room_check_passes_finishes(
    tmp_path: Path, sd_card: Path, usb_stick: Path, printers: dict[str, SimPrinter]
) -> None:
    """A backup brought on a USB stick, restored over a sound database on a card with just the room the check asks
    for (the backup's copy beside the database, a backup of the database it replaces, the 1 MB kept free): it is
    restored, and the card keeps what the agent keeps free. Before stop 68: the check passed, then the copy went into
    the database through its write-ahead log, as large again, and failed with "edge: database or disk is full"
    alone, the backup of the replaced database left on the card (technician probe, finding 5)."""
    data = sd_card / "data"
    config = await _card_box(tmp_path, data, printers, megabytes=3)
    brought = usb_stick / "edge.db"
    shutil.copy(await edge_backup(config), brought)
    for taken in data.joinpath("backups").iterdir():
        taken.unlink()
    await _sql(data / "edge.db", "DELETE FROM orders WHERE id = 'history-000000001'")  # a change to undo
    need = brought.stat().st_size + (data / "edge.db").stat().st_size + 2**20
    await asyncio.to_thread(_fill, sd_card, (need + 200 * 1024) / 2**20)

    restored = await edge("restore", str(brought), "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    assert _restore_files(data) == ["edge.db"]
    assert await _sql(data / "edge.db", "SELECT 1 FROM orders WHERE id = 'history-000000001'") == [(1,)]
    assert [p.name.endswith("-before-restore.db") for p in data.joinpath("backups").iterdir()] == [True]
    assert shutil.disk_usage(sd_card).free >= 2**20


def _revised(order: dict[str, Any], revision: int, **fields: Any) -> dict[str, Any]:
    """``order`` at ``revision`` with ``fields`` set; qty: its first item's quantity."""
    new = copy.deepcopy(order) | {"revision": revision}
    if "qty" in fields:
        new["items"][0]["qty"] = fields.pop("qty")
    return new | fields


async def test_a_change_and_a_cancel_a_restore_brings_back_print_as_copy_and_a_later_push_as_an_original(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A nightly backup holds A-1001 and A-1003 at revision 1; afterwards the box prints A-1001's change ticket
    (revision 2, 5x) and A-1003's STORNO, and takes A-1002; then the technician restores the backup. The next start's
    recovery brings the change and the cancel back from central: both are on paper already, so the change ticket and
    the STORNO print again marked COPY, as A-1002's ticket does. A change pushed after that (revision 3) prints as an
    original: a sender sends again only what was not acknowledged. Before: the change ticket and the STORNO printed a
    second time unmarked (their jobs copy 0); only the fresh order was marked."""
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    agent = agent_process(tmp_path, printers, extra=central_table(central))
    config, db, kitchen = str(agent.config), tmp_path / "data" / "edge.db", printers["kitchen"]
    try:
        await agent.start()
        async with api_client(agent.port) as api:  # a new box: orders created after its first start are originals
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
            # Past the first start's second as central's Date dates it: one created before it prints as COPY (it may
            # have printed on a box before this one), and within the second that start came it was a toss-up.
            await asyncio.sleep(2)
            first, cancelled = make_order(1, print_receipt=False), make_order(3, print_receipt=False)
            central.add_orders([first, cancelled])
            assert [(await post(api, o))[0] for o in (first, cancelled)] == [201, 201]
        await kitchen.wait_for_printed(2)
        assert await agent.terminate() == 0
        backup = await edge_backup(agent.config)

        await agent.start()
        changed = _revised(first, 2, qty=5)
        gone = _revised(cancelled, 2, status="cancelled", cancel_reason="Gast weg")
        later = make_order(2, print_receipt=False, created_at=datetime.now(UTC))
        async with api_client(agent.port) as api:
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
            central.add_orders([changed, gone, later])
            assert (await post(api, changed))[0] == 200
            async with api.post(
                f"/api/v1/orders/{cancelled['id']}/cancel", json={"revision": 2, "reason": "Gast weg"}
            ) as response:
                assert response.status == 200, await response.text()
            assert (await post(api, later))[0] == 201
        before = [decode(paper).text for paper in await kitchen.wait_for_printed(5)]
        assert await agent.terminate() == 0
        assert not any("KOPIE / COPY" in t for t in before), before
        restored = await edge("restore", str(backup), "--config", config)
        assert restored.returncode == 0, restored.stderr

        await agent.start()
        again = [decode(paper).text for paper in await kitchen.wait_for_printed(8)][5:]
        async with api_client(agent.port) as api:
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
            assert (await post(api, _revised(first, 3, qty=6)))[0] == 200
        pushed = decode((await kitchen.wait_for_printed(9))[8]).text
        await asyncio.sleep(0.5)  # room for a wrong print
        assert await agent.terminate() == 0
        assert len(kitchen.printed) == 9, [decode(p).text for p in kitchen.printed]
        change = next(t for t in again if "A-1001" in t)
        storno = next(t for t in again if "A-1003" in t)
        fresh = next(t for t in again if "A-1002" in t)
        assert "Rev. 2" in change and "KOPIE / COPY" in change, change
        assert "STORNO" in storno and "Gast weg" in storno and "KOPIE / COPY" in storno, storno
        assert "KOPIE / COPY" in fresh, fresh
        assert "A-1001" in pushed and "Rev. 3" in pushed and "KOPIE / COPY" not in pushed, pushed
        jobs = await db_rows(
            db, "SELECT order_id, revision, variant, copy FROM print_jobs WHERE revision > 1 ORDER BY id"
        )
        assert [(j[1], j[2], j[3]) for j in jobs] == [(2, "change", 1), (2, "cancel", 1), (3, "change", 0)], jobs
    finally:
        await agent.close()
        await central.stop()


def set_job_states(db: Path, state: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE print_jobs SET state = ?", (state,))
    conn.close()


async def migrated_box(tmp_path: Path, printers: dict[str, SimPrinter], extra: str = "") -> Path:
    """A box's config (data in tmp_path/data) and its database made by `edge migrate`, as install.sh leaves it."""
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=tmp_path / "data",
        api_port=0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        extra=extra,
    )
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    return config


async def test_restore_given_the_backup_folder_names_its_newest_backup_and_writes_nothing(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A technician who types the backup folder (`edge restore /var/backups/edge`) instead of a file in it gets one
    line saying it is a folder and naming the newest backup there to give instead; exit 1, nothing written. Before:
    "not a readable SQLite database: disk I/O error", which reads like a damaged card."""
    config = await migrated_box(tmp_path, printers)
    await edge_backup(config)
    newest = await edge_backup(config)
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    refused = await edge("restore", str(newest.parent), "--config", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a folder" in lines[0] and str(newest) in lines[0], lines
    assert "disk I/O" not in lines[0]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


async def test_backups_taken_while_the_clock_was_ahead_never_outrank_the_ones_taken_after(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Nights with the box clock ten years ahead (a failing RTC, a year typed wrong) left backups named in 2036; the
    clock right again, the next `edge backup` keeps what it wrote, drops the oldest taken, and is the newest a restore
    is pointed to (days probe, F1). Before: rotation by name deleted the backup it had just written and it exited 1
    ("No such file or directory"), every night, the 2036 copies kept and named as the newest."""
    config = await migrated_box(tmp_path, printers, extra="\n[backup]\nkeep = 3\n")
    ahead = []
    for _ in range(3):
        taken = await edge_backup(config)
        ahead.append(taken.rename(taken.with_name(taken.name.replace("edge-20", "edge-30", 1))))
    later = [await edge_backup(config) for _ in range(2)]
    kept = sorted(p.name for p in later[0].parent.glob("edge-*.db"))
    assert kept == sorted(p.name for p in [ahead[2], *later]), kept  # the oldest two taken made way
    refused = await edge("restore", str(later[0].parent), "--config", str(config))
    assert str(later[1]) in refused.stderr, refused.stderr  # the newest is the last one taken


async def test_restores_leave_backup_keep_backups_and_the_one_restored_no_more(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """`backup.keep = 3`, three nightly backups; the technician restores the oldest, and again (a second try, a
    third). Each restore keeps a backup of the database it replaces (`…-before-restore.db`), counted among the three
    taken last, and the backup restored: never more than four files, the one restored among them; the next backup
    leaves three, itself the newest. Before: each restore's backup counted over `backup.keep` and the one restored
    was never dropped by it: five files after the second try, on an SD card."""
    config = await migrated_box(tmp_path, printers, extra="\n[backup]\nkeep = 3\n")
    oldest, *_ = [await edge_backup(config) for _ in range(3)]
    backups = oldest.parent
    for _ in range(3):
        restored = await edge("restore", str(oldest), "--config", str(config))
        assert restored.returncode == 0, restored.stderr
        kept = sorted(p.name for p in backups.iterdir())
        assert len(kept) <= 3 + 1, f"backup.keep = 3, after a restore: {kept}"
        assert oldest.name in kept and kept[-1].endswith("-before-restore.db"), kept
    newest = await edge_backup(config)
    kept = sorted(p.name for p in backups.iterdir())
    assert len(kept) == 3 and kept[-1] == newest.name and oldest.name not in kept, kept


async def test_a_restore_over_a_damaged_database_keeps_only_the_last_one_aside(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The card damages the database twice, and twice `edge restore` puts the newest backup in its place, keeping
    the damaged file aside (`backups/damaged-<time>.db`): the second keeps only its own, the first goes. Before: every
    damaged database stayed in the backup folder for ever, each as large as the database, on an SD card."""
    config = await migrated_box(tmp_path, printers)
    db = tmp_path / "data" / "edge.db"
    backup = await edge_backup(config)
    for _ in range(2):
        await asyncio.to_thread(damage_table, db, "print_jobs")
        restored = await edge("restore", str(backup), "--config", str(config))
        assert restored.returncode == 0, restored.stderr
        assert "damaged-" in restored.stdout, restored.stdout
        await asyncio.sleep(0.002)  # named by the millisecond
    aside = sorted(p.name for p in backup.parent.glob("damaged-*.db"))
    assert len(aside) == 1, f"kept aside: {aside}"
    assert str(backup.parent / aside[0]) in restored.stdout
    assert all(p.name.startswith(aside[0]) for p in backup.parent.glob("damaged-*")), "an earlier one's -wal stayed"


async def test_a_restore_counts_the_room_to_write_back_the_log_a_kill_left(
    tmp_path: Path, sd_card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The box was killed (a power cut) with 3 MB in the database's write-ahead log; the technician restores a backup
    on a card with room for the backup's copy, a backup of the database it replaces and the 1 MB kept free, but not
    for that log written back into the database as well, which it must be before the database is replaced: refused
    before anything is written, exit 1, one line naming the log, the room needed and the room free, ending "nothing
    written"; the card as it was. With that room too, it restores. Before: the check passed, the restore ran until
    the log's write-back filled the card, "edge: database … database or disk is full", the database file grown."""
    data = sd_card / "data"
    config = await _card_box(tmp_path, data, printers, megabytes=1)
    backup = await edge_backup(config)
    db, wal = data / "edge.db", data / "edge.db-wal"
    await asyncio.to_thread(killed_writer, db, 3)
    counted = backup.stat().st_size + db.stat().st_size + wal.stat().st_size + 2**20  # what the check counted
    await asyncio.to_thread(_fill, sd_card, (counted + 300 * 1024) / 2**20)
    before, size, free = _restore_files(data), db.stat().st_size, shutil.disk_usage(sd_card).free

    refused = await edge("restore", str(backup), "--config", str(config))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stdout + refused.stderr
    assert "not enough space to restore" in lines[0] and lines[0].endswith("nothing written"), lines[0]
    assert "edge.db-wal" in lines[0] and "MB in all" in lines[0] and "MB are free" in lines[0], lines[0]
    assert _restore_files(data) == before and db.stat().st_size == size and wal.exists()
    assert shutil.disk_usage(sd_card).free >= free - 2**16

    (sd_card / "filler").unlink()
    await asyncio.to_thread(_fill, sd_card, (counted + wal.stat().st_size + 300 * 1024) / 2**20)
    restored = await edge("restore", str(backup), "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    assert _restore_files(data) == ["edge.db"]
    assert await _sql(db, "SELECT name FROM sqlite_master WHERE name = 'ballast'") == []
    assert shutil.disk_usage(sd_card).free >= 2**20


@pytest.mark.parametrize("backups_on", ["card", "stick"])
async def test_a_backup_of_a_killed_agents_database_counts_the_room_to_write_back_its_log(
    tmp_path: Path, sd_card: Path, usb_stick: Path, printers: dict[str, SimPrinter], backups_on: str
) -> None:
    """The agent took three orders and was killed (a power cut) with a big write, 3 MB, in its write-ahead log as
    well; it is not running when the technician runs `edge backup` (or `edge upgrade` does, stopped). Copying a
    database whose last connection closes writes its log back into it: the file grows by up to the log's size. On a
    card with room for the copy and the 1 MB the agent keeps free, but not for that write-back as well, the backup is
    refused before anything is written: exit 1, one line naming the log, the room needed in all and the room free,
    ending "nothing written"; no backup file, the database and its log as they were, the card as free. So with
    `backup.dir` on a USB stick and no room on the card for the write-back and the 1 MB. With that room, the backup
    holds every order (those in the log too), the card keeps its 1 MB free, and the agent starts with every order.
    Before: the check counted the copy alone (on the stick, nothing on the card), the backup said "backup written",
    exit 0, and the write-back filled the card to its last byte, the database half written back beside its log."""
    data = sd_card / "data"
    backups = data / "backups" if backups_on == "card" else usb_stick / "edge"
    extra = "[alerts]\ndisk_free_min_mb = 1\n" + (f'[backup]\ndir = "{backups}"\n' if backups_on == "stick" else "")
    agent = agent_process(tmp_path, printers, data_dir=data, extra=extra)
    ids = [make_order(n, print_receipt=False)["id"] for n in (1, 2, 3)]
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            for n in (1, 2, 3):
                assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await agent.kill()
        db, wal = data / "edge.db", data / "edge.db-wal"
        await asyncio.to_thread(killed_writer, db, 3)
        # What the check counted on the card: the copy (at most both files), when it goes there.
        copy_room = db.stat().st_size + wal.stat().st_size if backups_on == "card" else 0
        await asyncio.to_thread(_fill, sd_card, (copy_room + 2**20 + 300 * 1024) / 2**20)
        size, log_size, free = db.stat().st_size, wal.stat().st_size, shutil.disk_usage(sd_card).free

        refused = await edge("backup", "--config", str(agent.config))
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1, refused.stdout + refused.stderr
        assert "not enough space for a backup" in lines[0] and lines[0].endswith("nothing written"), lines[0]
        assert "edge.db-wal" in lines[0] and "MB in all" in lines[0] and "MB are free" in lines[0], lines[0]
        assert list(backups.glob("*")) == []
        assert (db.stat().st_size, wal.stat().st_size) == (size, log_size)
        assert shutil.disk_usage(sd_card).free >= free - 2**16

        (sd_card / "filler").unlink()
        await asyncio.to_thread(_fill, sd_card, (copy_room + log_size + 2**20 + 300 * 1024) / 2**20)
        backup = await edge_backup(agent.config)
        assert shutil.disk_usage(sd_card).free >= 2**20
        assert sorted(row[0] for row in await _sql(backup, "SELECT id FROM orders")) == sorted(ids)
        await agent.start()
        assert sorted(row[0] for row in await db_rows(db, "SELECT id FROM orders")) == sorted(ids)
    finally:
        await agent.close()


async def test_a_backup_beside_the_running_agent_does_not_count_its_log(
    tmp_path: Path, sd_card: Path, printers: dict[str, SimPrinter]
) -> None:
    """The running agent's write-ahead log keeps the size of a big write (3 MB), written back long ago; the nightly
    backup on a card with room for the copy and the 1 MB kept free is written: the agent holds the database open, so
    the backup's connection closes without writing the log back, and it is not counted as room needed (counted, the
    backup would be refused every night until the agent stops)."""
    data = sd_card / "data"
    agent = agent_process(tmp_path, printers, data_dir=data, extra="[alerts]\ndisk_free_min_mb = 1\n")
    try:
        await agent.start()
        db, wal = data / "edge.db", data / "edge.db-wal"
        await asyncio.to_thread(killed_writer, db, 3)
        async with api_client(agent.port) as api:  # its commit writes the log back: the file keeps its size
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        assert wal.stat().st_size > 3 * 2**20 and db.stat().st_size > 3 * 2**20
        await asyncio.to_thread(_fill, sd_card, (db.stat().st_size + wal.stat().st_size + 2**20 + 300 * 1024) / 2**20)

        backup = await edge_backup(agent.config)
        assert [row[0] for row in await _sql(backup, "SELECT id FROM orders")] == [make_order(1)["id"]]
        assert shutil.disk_usage(sd_card).free >= 2**20
    finally:
        await agent.close()


async def _restore_over_an_order_taken_since(
    agent: AgentProcess, kitchen: SimPrinter, taken: dict[str, Any], *, backup_schema: str = "", again: str = "once"
) -> subprocess.CompletedProcess[str]:
    """A-1001 printed; a backup (migrated down to ``backup_schema`` first, the next start migrating up again); then
    ``taken`` pushed and printed; then the backup restored over that, the agent stopped (``again``: restored once
    more, at once or after a start of the agent): what the first restore said."""
    await agent.start()
    async with api_client(agent.port) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await kitchen.wait_for_printed(1)
    assert await agent.terminate() == 0
    if backup_schema:
        assert (await edge("migrate", f"--to={backup_schema}", "--config", str(agent.config))).returncode == 0
    backup = await edge_backup(agent.config)
    await agent.start()
    async with api_client(agent.port) as api:
        assert (await post(api, taken))[0] == 201
    await kitchen.wait_for_printed(2)
    assert await agent.terminate() == 0
    restored = await edge("restore", str(backup), "--config", str(agent.config))
    assert restored.returncode == 0, restored.stderr
    if again == "after a start":
        await agent.start()
        assert await agent.terminate() == 0
    if again != "once":
        second = await edge("restore", str(backup), "--config", str(agent.config))
        assert second.returncode == 0, second.stderr
    return restored


@pytest.mark.parametrize("again", ["once", "at once", "after a start"])
async def test_a_senders_resend_of_an_order_the_replaced_database_took_prints_as_copy_after_a_restore(
    tmp_path: Path, printers: dict[str, SimPrinter], again: str
) -> None:
    """A nightly backup; then A-1002 is pushed, answered 201 and printed; then the technician restores the backup (no
    central: nothing brings A-1002 back). The till sends A-1002 again, byte for byte (its retry spanning the restore,
    or the backend's re-push the docs name): the box no longer knows it, stores it, and its ticket prints marked COPY,
    since it may be in the cook's hand; the restore's output counts the orders the backup lacks. A change to it pushed
    later (revision 2, never sent before) and an order never sent before print as originals. The same when the
    backup is restored a second time, at once or after a start (what the first restore knew goes on to the second).
    Before (the tech77 probe, F1): A-1002 printed a second time unmarked; after a second restore (the verify77 probe,
    V1) too."""
    agent = agent_process(tmp_path, printers)
    kitchen = printers["kitchen"]
    taken = make_order(2, print_receipt=False, created_at=datetime.now(UTC))
    try:
        restored = await _restore_over_an_order_taken_since(agent, kitchen, taken, again=again)
        assert "1 order taken since the backup" in restored.stdout, restored.stdout

        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, taken))[0] == 201
            again = decode((await kitchen.wait_for_printed(3))[2]).text
            assert (await post(api, _revised(taken, 2, qty=4)))[0] == 200
            change = decode((await kitchen.wait_for_printed(4))[3]).text
            assert (await post(api, make_order(3, print_receipt=False, created_at=datetime.now(UTC))))[0] == 201
            fresh = decode((await kitchen.wait_for_printed(5))[4]).text
        await asyncio.sleep(0.5)  # room for a wrong print
        assert await agent.terminate() == 0
        assert len(kitchen.printed) == 5, [decode(p).text for p in kitchen.printed]
        assert "A-1002" in again and "KOPIE / COPY" in again, again
        assert "A-1002" in change and "Rev. 2" in change and "KOPIE / COPY" not in change, change
        assert "A-1003" in fresh and "KOPIE / COPY" not in fresh, fresh
    finally:
        await agent.close()


async def test_a_backup_from_before_order_revisions_restores_over_a_database_with_orders_since(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A backup of schema 10 (before revisions were kept) restored over a database that took an order since: the
    restore reads what the replaced database took against what the old backup holds, and goes through; the start
    migrates it and a resend of that order prints marked COPY."""
    agent = agent_process(tmp_path, printers)
    kitchen = printers["kitchen"]
    taken = make_order(2, print_receipt=False, created_at=datetime.now(UTC))
    try:
        await _restore_over_an_order_taken_since(agent, kitchen, taken, backup_schema="10")
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, taken))[0] == 201
        again = decode((await kitchen.wait_for_printed(3))[2]).text
        assert await agent.terminate() == 0
        assert "A-1002" in again and "KOPIE / COPY" in again, again
    finally:
        await agent.close()


async def test_an_alert_mail_delivered_after_the_backup_is_not_mailed_again_after_a_restore(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is off and the relay down: the alarm waits in the outbox when the nightly backup is taken;
    the relay comes back and delivers it; later the backup is restored. The alarm the backup holds as waiting was
    delivered since: the restored outbox knows it, and the manager does not get it a second time. Before (the tech77
    probe, F5): the same mail, same Message-ID, delivered again after the restore."""
    relay = SmtpSink(port=free_port())
    printers["kitchen"].set_offline(True)
    mail = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\ngroup_wait_s = 0\ncritical_group_wait_s = 0\nretry_base_s = 0.5\n'
        "retry_max_s = 1\ndisk_free_min_mb = 0\n"
    )
    agent = agent_process(tmp_path, printers, extra=mail)
    db = tmp_path / "data" / "edge.db"
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        await eventually(
            lambda: _sql(db, "SELECT count(*) FROM alert_mails WHERE state = 'pending' AND attempts > 0"),
            lambda rows: rows[0][0] >= 1,
            what="an alarm waiting for the relay",
        )
        backup = await edge_backup(agent.config)
        await relay.start()
        [alarm] = await relay.wait_for(1, timeout=15)
        assert await agent.terminate() == 0
        restored = await edge("restore", str(backup), "--config", str(agent.config))
        assert restored.returncode == 0, restored.stderr
        await agent.start()
        await eventually(
            lambda: _sql(db, "SELECT count(*) FROM alert_mails WHERE state = 'pending'"),
            lambda rows: rows[0][0] == 0,
            what="the restored outbox settled",
        )
        assert await agent.terminate() == 0
        again = [m for m in relay.messages if m["Message-ID"] == alarm["Message-ID"]]
        assert len(again) == 1, [str(m["Subject"]) for m in relay.messages]
    finally:
        await agent.close()
        await relay.stop()


# Test only: the root under which the agent reads the box's hardware (edge.hardware), a folder the test writes.
HARDWARE_ROOT_ENV = "EDGE_TEST_HARDWARE_ROOT"


def put_card_in_box(root: Path, serial: str) -> None:
    """The box the card runs in, as a Raspberry Pi tells it: its CPU's serial in /proc/cpuinfo (under ``root``)."""
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nModel\t\t: Raspberry Pi 4 Model B\nSerial\t\t: {serial}\n")


async def test_a_card_that_ran_in_another_box_prints_what_it_missed_as_copy_and_says_so_once(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A box's SD card cloned (or moved) into another box, the data dir and config as they were: a spare put in after
    the box died, or a card copied for a second store. An order the first box took and printed after the card was
    copied comes back by recovery: it may be on paper, so it prints marked COPY; an order taken afterwards prints as
    an original. Its status events go under a mark of their own (the first box's keys are not repeated), the manager
    is mailed once (what it most likely is and what to do, with the date the card last ran in the other box), and
    `edge doctor` warns. Before (the replace81 probe, F4): the order printed a second time unmarked, doctor said OK on
    both boxes, and the only mail was central's refusal of reused event keys, naming neither cause nor fix."""
    relay = SmtpSink(port=free_port())
    await relay.start()
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    hardware = tmp_path / "hardware"
    put_card_in_box(hardware, "10000000aaaa0001")
    mail = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\ngroup_wait_s = 0\ncritical_group_wait_s = 0\ndisk_free_min_mb = 0\n'
    )
    agent = agent_process(
        tmp_path, printers, env={HARDWARE_ROOT_ENV: str(hardware)}, extra=central_table(central) + mail
    )
    db, kitchen = tmp_path / "data" / "edge.db", printers["kitchen"]
    try:
        central.add_orders([make_order(1, print_receipt=False)])
        await agent.start()
        await kitchen.wait_for_printed(1)
        assert await agent.terminate() == 0
        mark = await key_mark(db)
        # Taken and printed by the first box after its card was copied.
        central.add_orders([make_order(2, print_receipt=False, created_at=datetime.now(UTC))])
        put_card_in_box(hardware, "10000000bbbb0002")
        await asyncio.sleep(1.1)  # its start is marked from its whole second on
        await agent.start()
        async with api_client(agent.port) as api:
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
            assert (await post(api, make_order(3, print_receipt=False, created_at=datetime.now(UTC))))[0] == 201
        tickets = [decode(paper).text for paper in await kitchen.wait_for_printed(3)]
        assert "A-1002" in tickets[1] and "KOPIE / COPY" in tickets[1], tickets[1]
        assert "A-1003" in tickets[2] and "KOPIE / COPY" not in tickets[2], tickets[2]
        assert await key_mark(db) != mark
        [moved] = await relay.wait_for(1, timeout=15)
        text = moved.get_body(("plain",)).get_content()
        assert "anderen Gerät" in str(moved["Subject"]), moved["Subject"]
        assert datetime.now().strftime("%d.%m.%Y") in text and "store_id" in text and "data_dir" in text, text
        doctor = await edge("doctor", "--config", str(agent.config))
        [warned] = [line for line in doctor.stdout.splitlines() if "another box" in line]
        assert warned.startswith("WARN") and "store_id" in warned and "data_dir" in warned, warned
        assert await agent.terminate() == 0

        await agent.start()  # the next start in the same box: nothing more to tell
        await asyncio.sleep(2)
        assert await agent.terminate() == 0
        assert len(relay.messages) == 1, [str(m["Subject"]) for m in relay.messages]
    finally:
        await agent.close()
        await central.stop()
        await relay.stop()


def plug_adapter(root: Path, name: str, mac: str, *, usb: bool) -> None:
    """A network adapter of the box under ``root`` as Linux shows it: /sys/class/net/NAME with its MAC and a `device`
    link into /sys/devices, under a USB bus (a dongle) or on the PCI bus (built in), whose `subsystem` link names it."""
    bus = "usb" if usb else "pci"
    device = root / "sys" / "devices" / "pci0000:00" / ("0000:00:14.0/usb1/1-2/1-2:1.0" if usb else "0000:00:1f.6")
    device.mkdir(parents=True, exist_ok=True)
    (root / "sys" / "bus" / bus).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (device / "subsystem").symlink_to(root / "sys" / "bus" / bus)
    interface = root / "sys" / "class" / "net" / name
    interface.mkdir(parents=True, exist_ok=True)
    (interface / "address").write_text(f"{mac}\n")
    (interface / "device").unlink(missing_ok=True)
    (interface / "device").symlink_to(device)


@pytest.mark.parametrize("built_in", [True, False], ids=["beside-a-built-in-adapter", "the-only-adapter"])
async def test_a_usb_network_adapter_swapped_in_the_same_box_is_no_moved_card(
    tmp_path: Path, printers: dict[str, SimPrinter], built_in: bool
) -> None:
    """A PC whose agent (User=edge) cannot read the firmware's product UUID: its ids are its network adapters' MACs.
    The box is off while central takes an order; its USB Wi-Fi dongle is replaced. That changes no box: the order it
    never printed prints unmarked and nobody is mailed. With a built-in adapter the dongle is not counted at all; with
    the dongle the only id, nothing can be judged and the log says so. Before (the verify81 probe, F2): the order came
    out first marked KOPIE / COPY and the manager was mailed "Speicherkarte lief in einem anderen Gerät"."""
    relay = SmtpSink(port=free_port())
    await relay.start()
    central = CentralSim("sim-store", token=CENTRAL_TOKEN)
    await central.start()
    hardware = tmp_path / "hardware"
    if built_in:
        plug_adapter(hardware, "enp0s31f6", "3c:52:82:00:00:01", usb=False)
    plug_adapter(hardware, "wlx7c10c9aabb01", "7c:10:c9:aa:bb:01", usb=True)
    mail = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\ngroup_wait_s = 0\ncritical_group_wait_s = 0\ndisk_free_min_mb = 0\n'
    )
    agent = agent_process(
        tmp_path,
        printers,
        env={HARDWARE_ROOT_ENV: str(hardware)},
        extra=central_table(central) + mail,
        log_level="info",
    )
    kitchen = printers["kitchen"]
    try:
        central.add_orders([make_order(1, print_receipt=False)])
        await agent.start()
        await kitchen.wait_for_printed(1)
        assert await agent.terminate() == 0
        central.add_orders([make_order(2, print_receipt=False, created_at=datetime.now(UTC))])
        shutil.rmtree(hardware / "sys" / "class" / "net" / "wlx7c10c9aabb01")
        plug_adapter(hardware, "wlx7c10c9aabb02", "7c:10:c9:aa:bb:02", usb=True)  # the new dongle
        await asyncio.sleep(1.1)  # a moved card's start would be marked from its whole second on
        await agent.start()
        async with api_client(agent.port) as api:
            await until(api, "/api/v1/recovery/runs", first_run_completed, "run")
        tickets = [decode(paper).text for paper in await kitchen.wait_for_printed(2)]
        assert "A-1002" in tickets[1] and "KOPIE / COPY" not in tickets[1], tickets[1]
        await asyncio.sleep(2)  # the alerter's group wait is 0: a mail would be on its way
        assert await agent.terminate() == 0
        assert relay.messages == [], [str(m["Subject"]) for m in relay.messages]
        log = (tmp_path / "agent.log").read_text()
        assert "database_ran_in_another_box" not in log
        assert ("box_not_judged" in log) is not built_in, log[-2000:]
    finally:
        await agent.close()
        await central.stop()
        await relay.stop()


async def test_a_restore_onto_a_new_box_says_what_it_cannot_know_and_when_the_boxs_clock_is_behind_the_backup(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The box died; its last backup is restored onto a new box (no database there yet). The restore cannot know what
    the dead box took after the backup: it says so, that recovery brings back what central has, and that a till's
    own pushes since then are lost unless the till resends them. Restored by a box whose clock is behind the
    backup's newest order (no RTC, NTP not there yet), it says the clock looks wrong: what it dates (the copy of the
    replaced database's name) is dated wrong. Before (the replace81 probe, F5): only "restored X into Y", and the copy
    named `edge-20261107…` on 7 Dec without a word."""
    agent = agent_process(tmp_path, printers)
    data, config = tmp_path / "data", str(agent.config)
    try:
        await take_one_order(agent)
        brought = tmp_path / "stick" / "edge-night.db"
        brought.parent.mkdir()
        shutil.copy(await edge_backup(agent.config), brought)
        shutil.rmtree(data)
        data.mkdir()  # the new box: an empty data dir, as the install left it

        restored = await edge("restore", str(brought), "--config", config)
        assert restored.returncode == 0, restored.stderr
        said = restored.stdout.splitlines()
        assert said[0] == f"restored {brought} into {data / 'edge.db'}", said
        [lost] = said[1:]
        assert "cannot know" in lost and "after the backup" in lost, lost
        assert "recovery brings back what central has" in lost and "resend" in lost, lost

        # Taken an hour ahead of this box's clock: the backup of a box whose clock was right, restored by one behind.
        await db_execute(brought, "UPDATE orders SET received_at = received_at + 3600")
        again = await edge("restore", str(brought), "--config", config)
        assert again.returncode == 0, again.stderr
        [_, clock] = again.stdout.splitlines()
        assert "clock" in clock and "behind" in clock and "backup's newest order" in clock and "NTP" in clock, clock
        assert "-before-restore.db" in clock, clock
    finally:
        await agent.close()


@pytest.mark.parametrize("by", ["cp", "mv"])
async def test_a_backup_copied_over_the_running_agents_database_is_refused_not_written_into(
    tmp_path: Path, printers: dict[str, SimPrinter], by: str
) -> None:
    """Orders 1-2, the nightly `edge backup`, orders 3-5 printed (their pages written back into edge.db, as SQLite's
    checkpoint does); then a technician puts the backup back by hand while the agent runs (`cp` over edge.db: the
    same file rewritten; or `mv` of a copy over it: another file) instead of `edge restore`, and the till resends
    order 3. The agent refuses it (503 naming what happened and what to do), /ready says so, and A-1003 prints once.
    Before stop 83 nothing noticed: /ready 200, orders 3-5 silently gone, the resend 201 and A-1003 printed a second
    time unmarked (storage83 F7)."""
    agent = agent_process(tmp_path, printers)
    db, kitchen = tmp_path / "data" / "edge.db", printers["kitchen"]
    bodies = {n: fresh(make_order(n, print_receipt=False)) for n in (1, 2, 3, 4, 5)}
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            for n in (1, 2):
                assert (await post(api, bodies[n]))[0] == 201
            await kitchen.wait_for_printed(2)
            backup = await edge_backup(agent.config)
            for n in (3, 4, 5):
                assert (await post(api, bodies[n]))[0] == 201
            await kitchen.wait_for_printed(5)
            await db_execute(db, "PRAGMA wal_checkpoint(TRUNCATE)")
            if by == "cp":
                await asyncio.to_thread(shutil.copyfile, backup, db)
            else:
                await asyncio.to_thread(shutil.copyfile, backup, db.with_name("edge.db.new"))
                os.replace(db.with_name("edge.db.new"), db)

            status, answer = await post(api, bodies[3])
            assert status == 503, answer
            assert "replaced while the agent ran" in str(answer) and "edge restore" in str(answer), answer
            # /ready holds a good check up to a second after a write failed (WriteProbe), then checks again.
            await until(api, "/ready", lambda body: "replaced while the agent ran" in str(body), "/ready naming it")
            async with api.get("/ready") as response:
                assert response.status == 503
        await asyncio.sleep(0.5)  # a ticket the resend had queued would be on its way by now
        a1003 = [t for t in (decode(p).text for p in kitchen.printed) if "A-1003" in t]
        assert len(a1003) == 1, a1003
        assert "was replaced while the agent ran" in agent.log.read_text()
    finally:
        await agent.close()
