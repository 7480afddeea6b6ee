"""A full disk under the agent: each alert mail still goes out once, memory stays bounded, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.alerts.alerter import storage_card_note, storage_mark_path
from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.events import PrinterStatusChanged, StorageProblem, StorageRecovered
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.alerts.helpers import fast, printer_down_with_a_ticket
from tests.helpers import api_client, db_rows, eventually, post, wait_until

MakeAgent = Callable[..., Awaitable[Agent]]
# postgrey's answer to a (sender, recipient) it has not seen before
GREYLISTED = "450 4.7.1 <area@store.test>: Recipient address rejected: Greylisted, try again in 60s"


class SmallDisk:
    """A 16 MB tmpfs for the data directory (as root), so "disk full" is the kernel's ENOSPC; where mounting is
    not allowed, SQLite is made to fail every write to the alert tables with "database or disk is full" instead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True)
        if os.geteuid() == 0:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.path)], capture_output=True, timeout=10
            )
            self.mounted = done.returncode == 0

    def fill(self, db_path: Path) -> None:
        if self.mounted:
            # An empty WAL first: otherwise SQLite may reuse room the WAL file already has and a commit still fits.
            with sqlite3.connect(db_path) as conn:
                assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # 0: not busy, done
            # The last pages too, in small pieces. Appended: filled again, a filler truncated first would give the
            # card megabytes of room for a moment, which an agent that looks then sees (a real card does not do that).
            for name, size in (("filler", 65536), ("filler2", 512)):
                with open(self.path / name, "ab", buffering=0) as f:
                    with contextlib.suppress(OSError):
                        while True:
                            f.write(b"\0" * size)
            assert os.statvfs(self.path).f_bavail == 0
            return
        with sqlite3.connect(db_path) as conn:
            for table in ("alert_mails", "alert_groups", "alert_log"):
                for op in ("INSERT", "UPDATE"):
                    conn.execute(
                        f"CREATE TRIGGER full_{op}_{table} BEFORE {op} ON {table}"
                        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                    )

    def free(self, db_path: Path) -> None:
        if self.mounted:
            for name in ("filler", "filler2"):
                (self.path / name).unlink(missing_ok=True)
            return
        with sqlite3.connect(db_path) as conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'full_%'"):
                conn.execute(f"DROP TRIGGER {name}")

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    disk.mount()
    yield disk
    disk.unmount()


def mails_about(sink: SmtpSink, topic: str, kind: str = "") -> list[EmailMessage]:
    """The mails whose subject names ``topic`` (and ``kind``: STÖRUNG, BEHOBEN)."""
    return [m for m in sink.messages if topic in str(m["Subject"]) and kind in str(m["Subject"])]


async def test_full_disk_sends_the_mail_once_and_loses_nothing(
    make_agent: MakeAgent,
    make_settings: Callable[..., Settings],
    alert_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The relay, busy at first, takes an alert mail on the second attempt just as the disk fills, so it cannot be
    marked sent: the agent does not send it again (it used to, nonstop), keeps few occurrences in memory while a
    printer flaps 2,000 times, and once the disk has room again records the mail as sent and counts every one."""
    settings = on_small_disk(make_settings, alert_settings, small_disk, group_interval_s=120.0)  # the default's
    db = settings.agent.db_path

    attempts: list[str] = []

    async def busy_then_fill(message: EmailMessage) -> str | None:
        if "Drucker kitchen" not in str(message["Subject"]):
            return None
        attempts.append(str(message["Message-ID"]))
        if len(attempts) == 1:
            return "451 4.3.0 busy, try again later"
        if len(attempts) == 2:
            # while the relay takes it: the agent cannot write down that it was sent
            await asyncio.to_thread(small_disk.fill, db)
        return None  # "250 OK"

    sink.data_reply = busy_then_fill
    agent = await make_agent(settings)
    assert agent.alerter is not None
    await printer_down_with_a_ticket(agent, printers)
    await wait_until(lambda: len(attempts) >= 2, 8, "taken by the relay")
    for n in range(2000):  # the front printer flaps while the disk is full
        agent.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
        agent.bus.publish(PrinterStatusChanged(printer="front", old="offline", new="online"))
        if n % 200 == 0:
            await asyncio.sleep(0.05)
    # The relay's 250 comes once the disk is full, which takes a while on a loaded machine (a full run saw the check
    # before it): waited for, then many retry rounds, each of which must not send the mail again.
    alerter = agent.alerter
    await eventually(alerter.outbox_status, lambda status: status.unrecorded == 1, 15, "the mail sent, not recorded")
    await asyncio.sleep(2.5)
    assert len(mails_about(sink, "Drucker kitchen")) == 1
    status = await alerter.outbox_status()
    assert status.unrecorded == 1 and status.waiting_signals <= 1000
    assert sink.connections <= 3  # the alert, at most the storage alert mailed directly, nothing in a loop
    await asyncio.to_thread(small_disk.free, db)
    await eventually(
        lambda: db_rows(db, "SELECT state FROM alert_mails WHERE id = 1"),
        lambda rows: rows == [("sent",)],
        8,
        "recorded",
    )
    await eventually(
        lambda: db_rows(db, "SELECT fires_total FROM alert_groups WHERE key = 'printer_offline:front'"),
        lambda rows: rows == [(2000,)],
        8,
        "every occurrence counted",
    )
    assert len(mails_about(sink, "Drucker kitchen")) == 1
    assert await db_rows(db, "SELECT attempts FROM alert_mails WHERE id = 1") == [(2,)]
    assert (await agent.alerter.outbox_status()).waiting_signals == 0


def on_small_disk(
    make_settings: Callable[..., Settings],
    alert_settings: Callable[..., Settings],
    small_disk: SmallDisk,
    **alerts: Any,
) -> Settings:
    """Fast alert settings with the data directory on the small disk; ``alerts``: more [alerts] keys."""
    base = fast(alert_settings)
    return make_settings(
        agent={"data_dir": str(small_disk.path / "data"), "store_name": "Filiale Mitte"},
        smtp={k: getattr(base.smtp, k) for k in ("host", "port", "security", "username", "sender", "timeout_s")}
        | {"password": base.smtp.password.get(), "ca_file": str(base.smtp.ca_file)},
        alerts={
            "to": base.alerts.to,
            "disk_free_min_mb": 0,
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "group_interval_s": 1.0,
            "retry_base_s": 0.2,
            "retry_max_s": 0.4,
            "check_interval_s": 0.2,
            **alerts,
        },
    )


@pytest.fixture
def disk_settings(
    make_settings: Callable[..., Settings], alert_settings: Callable[..., Settings], small_disk: SmallDisk
) -> Callable[..., Settings]:
    """``on_small_disk`` for this test's small disk: ``disk_settings(**alerts)``."""
    return lambda **alerts: on_small_disk(make_settings, alert_settings, small_disk, **alerts)


async def agent_on_a_full_disk(make_agent: MakeAgent, settings: Settings, small_disk: SmallDisk) -> Agent:
    """An agent on the small disk, then the disk full and the front printer going offline: a write that fails."""
    agent = await make_agent(settings)
    await asyncio.to_thread(small_disk.fill, settings.agent.db_path)
    agent.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
    return agent


async def storage_alarm_mailed_directly(
    make_agent: MakeAgent, settings: Settings, small_disk: SmallDisk, sink: SmtpSink
) -> Agent:
    """An agent on a disk that fills (agent_on_a_full_disk), once its storage alarm went straight to the relay."""
    agent = await agent_on_a_full_disk(make_agent, settings, small_disk)
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "STÖRUNG"), 10, "the storage alert mailed directly")
    return agent


async def storage_all_clear_alone_follows(sink: SmtpSink, small_disk: SmallDisk, db: Path, alarms: int = 1) -> None:
    """The disk gets room again: the storage all-clear comes, and no other storage alarm with or before it than the
    ``alarms`` the manager had."""
    await asyncio.to_thread(small_disk.free, db)
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 40, "the storage all-clear")
    await asyncio.sleep(1.5)
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == alarms, [str(m["Subject"]) for m in sink.messages]


async def test_the_storage_alert_mailed_directly_is_not_mailed_again_once_the_disk_has_room(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The disk fills: the storage alert goes straight to the relay, as it must (the outbox is in the database that
    refuses writes). Once the disk has room the manager gets the all-clear, and only that: before, the alarm the
    manager already had was mailed again through the outbox when the occurrences held in memory were stored, a
    problem already over announced as new, then its all-clear (found by a chaos run that filled the disk while a
    printer was down)."""
    settings = disk_settings()
    await storage_alarm_mailed_directly(make_agent, settings, small_disk, sink)
    await storage_all_clear_alone_follows(sink, small_disk, settings.agent.db_path)


async def test_a_card_that_fills_again_soon_after_its_all_clear_is_in_the_storm_guard_not_another_alarm(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """A card that fills again within critical_storm_s of its storage alarm (room given back by a purge, used up again)
    is a flapping device: its second episode goes to the digest, as a printer's would, not a second alarm and all-clear
    mailed straight to the relay (before stop 57, the direct mail did not look at the storm guard)."""
    settings = disk_settings()
    agent = await storage_alarm_mailed_directly(make_agent, settings, small_disk, sink)
    await storage_all_clear_alone_follows(sink, small_disk, settings.agent.db_path)
    await asyncio.to_thread(small_disk.fill, settings.agent.db_path)
    agent.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
    assert agent.deps is not None
    db = agent.deps.db
    await wait_until(lambda: db.write_problem is not None, 10, "writes fail again")
    await asyncio.sleep(1.5)  # rounds of the alert loop go by, each trying the storage alarm
    await asyncio.to_thread(small_disk.free, settings.agent.db_path)
    await wait_until(lambda: db.write_problem is None, 10, "the card has room again")
    await asyncio.sleep(2.0)  # an all-clear would be out by now (group_interval_s 1 s)
    subjects = [str(m["Subject"]) for m in mails_about(sink, "Speicherproblem")]
    assert len(subjects) == 2 and "STÖRUNG" in subjects[0] and "BEHOBEN" in subjects[1], subjects


async def a_run_mailed_the_storage_alert_directly_and_stopped(
    make_agent: MakeAgent, settings: Settings, sink: SmtpSink, small_disk: SmallDisk
) -> None:
    first = await storage_alarm_mailed_directly(make_agent, settings, small_disk, sink)
    # The relay has it; the run notes it in the runtime directory (the test's own, as systemd's RuntimeDirectory= is
    # the boot's) once its SMTP session ends (a stop before that is the documented window)
    await wait_until(lambda: storage_mark_path(settings).exists(), 10, "the direct mail noted")
    await first.stop()


class RebootedClock(Clock):
    """The system's clocks as a run after a reboot sees them: another boot id, and a monotonic clock from near 0."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def mono(self) -> float:
        return 30.0 + time.monotonic() - self._started  # booted 30 s ago

    def boot(self) -> str:
        return "the-next-boot"


def between_runs(settings: Settings, what: str) -> Clock:
    """The next run's clock after a ``restart`` or a ``reboot``, which leaves the runtime directory (a tmpfs) empty
    and the card as it was."""
    if what == "restart":
        return SYSTEM_CLOCK
    storage_mark_path(settings).unlink(missing_ok=True)
    return RebootedClock()


async def a_next_run_whose_writes_fail(
    make_agent: MakeAgent, settings: Settings, small_disk: SmallDisk, clock: Clock = SYSTEM_CLOCK
) -> Agent:
    """The next run on the still full disk: the room its start gave back is used up, and a write fails."""
    run = await make_agent(settings, clock=clock)
    await asyncio.to_thread(small_disk.fill, settings.agent.db_path)
    run.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
    await wait_until(lambda: run.deps is not None and run.deps.db.write_problem is not None, 10, "writes fail")
    return run


@pytest.mark.parametrize("between", ["restart", "reboot"])
async def test_the_storage_alert_mailed_directly_is_not_mailed_again_by_a_restart_or_reboot_on_the_full_disk(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
    between: str,
) -> None:
    """The disk is full and the storage alert was mailed directly; the agent is restarted (an upgrade, systemd after
    a crash) while the disk is still full. The new run must not mail the same alarm again: before, every start on the
    full disk mailed it anew (what it had mailed was kept in memory only), as the health check's agent-down alert
    would without its state file (found by the chaos harness, seeds 36 and 64: SIGTERM or SIGKILL and restart on a
    full disk). A reboot is no news either: the note is on the card too (before stop 50 the next boot mailed it
    again)."""
    # The storm guard off (seed 64): a restart is no new episode, the alarm is still not mailed at every start.
    settings = disk_settings(critical_storm_s=0)
    db = settings.agent.db_path
    await a_run_mailed_the_storage_alert_directly_and_stopped(make_agent, settings, sink, small_disk)
    await a_next_run_whose_writes_fail(make_agent, settings, small_disk, between_runs(settings, between))
    await asyncio.sleep(2.0)  # several rounds of the alert loop on the full disk
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == 1, [str(m["Subject"]) for m in sink.messages]
    await storage_all_clear_alone_follows(sink, small_disk, db)


async def test_a_recipient_the_relay_deferred_gets_the_storage_alert_mailed_directly_from_the_next_run(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The disk is full and the storage alert goes straight to the relay, which takes it for the store manager and
    greylists the area manager (450, RFC 5321 4.2.5: try again later); the agent is restarted before the greylist
    lets the mail pass. The next run, its writes failing too, owes the alarm to the area manager only: the note
    carries who is still owed. Before, the note said "mailed" and the area manager never got the alarm."""
    settings = disk_settings(critical_storm_s=0, critical_to=["area@store.test"])
    sink.rcpt_replies["area@store.test"] = GREYLISTED
    await a_run_mailed_the_storage_alert_directly_and_stopped(make_agent, settings, sink, small_disk)
    del sink.rcpt_replies["area@store.test"]  # the greylist lets it pass now
    await a_next_run_whose_writes_fail(make_agent, settings, small_disk)
    alarms = lambda: [  # noqa: E731
        list(e.rcpt_tos)
        for m, e in zip(sink.messages, sink.envelopes, strict=True)
        if "Speicherproblem" in str(m["Subject"]) and "STÖRUNG" in str(m["Subject"])
    ]
    await wait_until(lambda: len(alarms()) == 2, 10, "the storage alert mailed to the recipient still owed")
    await asyncio.sleep(1.0)  # rounds of the alert loop on the full disk: nobody gets it twice
    assert alarms() == [settings.alerts.to, ["area@store.test"]], alarms()


async def test_a_recipient_the_relay_still_defers_when_the_card_gets_room_gets_the_alarm_before_the_all_clear(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The storage alert goes straight to the relay, which takes it for the store manager and greylists the area
    manager; the card gets room while the greylist lasts. The alarm the area manager is owed goes into the outbox,
    ahead of the all-clear, so when the greylist lets mail pass the area manager reads STÖRUNG, then BEHOBEN. Before,
    the direct mail was recorded as told to everyone, and the area manager got an all-clear for an alarm never seen."""
    settings = disk_settings(critical_storm_s=0, critical_to=["area@store.test"], retry_base_s=0.2, retry_max_s=0.5)
    sink.rcpt_replies["area@store.test"] = GREYLISTED
    await storage_alarm_mailed_directly(make_agent, settings, small_disk, sink)
    await asyncio.to_thread(small_disk.free, settings.agent.db_path)
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 40, "the all-clear to the manager")
    del sink.rcpt_replies["area@store.test"]  # the greylist lets it pass now

    def to_area() -> list[str]:
        return [
            "STÖRUNG" if "STÖRUNG" in str(m["Subject"]) else "BEHOBEN"
            for m, e in zip(sink.messages, sink.envelopes, strict=True)
            if "Speicherproblem" in str(m["Subject"]) and "area@store.test" in e.rcpt_tos
        ]

    await wait_until(lambda: len(to_area()) == 2, 20, "the area manager's alarm and all-clear")
    await asyncio.sleep(1.0)  # room for a mail too many
    assert to_area() == ["STÖRUNG", "BEHOBEN"]


async def test_a_restart_whose_storage_alert_can_be_stored_takes_the_earlier_runs_direct_mail_as_its_alarm(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The disk is full and the storage alert was mailed directly; the agent is restarted, a write of the new run
    fails, and the disk gets room just before the new run stores that occurrence. The stored occurrence is
    the alarm the earlier run mailed (its note in the runtime directory says so): what follows is its all-clear, not
    the same alarm again through the outbox, as the manager got it before (chaos harness, alerts seed 612: 45 ms
    between the failing write and the room)."""
    settings = disk_settings(critical_storm_s=0)
    db = settings.agent.db_path
    await a_run_mailed_the_storage_alert_directly_and_stopped(make_agent, settings, sink, small_disk)
    await asyncio.to_thread(small_disk.free, db)
    second = await make_agent(settings)
    # Another alarm of the new run is its own, mailed as always: the earlier run's note is only about storage.
    second.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
    await wait_until(lambda: mails_about(sink, "Drucker front", "STÖRUNG"), 10, "the printer's own alarm")
    # What the database's write health says when a write fails, here just before the room came back.
    second.bus.publish(StorageProblem(detail=f"database {db}: cannot write: database or disk is full"))
    await eventually(
        lambda: db_rows(db, "SELECT notified FROM alert_groups WHERE type = 'storage_problem'"),
        lambda rows: rows == [("firing",)],
        10,
        "the storage alert stored",
    )
    second.bus.publish(StorageRecovered())
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == 1, [str(m["Subject"]) for m in sink.messages]
    assert not storage_mark_path(settings).exists()  # the database has it now


@pytest.mark.parametrize("between", ["restart", "reboot"])
async def test_a_disk_freed_while_the_agent_was_down_gets_the_storage_all_clear_from_the_next_run(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
    between: str,
) -> None:
    """The disk is full and the storage alert was mailed directly; the technician stops the agent, makes room and
    starts it. The new run never meets the problem, but the manager's last word on it is the alarm: the run that
    finds the earlier run's note and writes is the one to tell the all-clear, once, and the note goes. Before, no
    all-clear ever came (stop 47's note); after a reboot, which empties the runtime directory, none came until stop
    50 put the note on the card too."""
    settings = disk_settings()
    db = settings.agent.db_path
    await a_run_mailed_the_storage_alert_directly_and_stopped(make_agent, settings, sink, small_disk)
    await asyncio.to_thread(small_disk.free, db)
    await make_agent(settings, clock=between_runs(settings, between))
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")
    await asyncio.sleep(1.5)  # rounds of the alert loop: no second all-clear, no alarm again
    assert len(mails_about(sink, "Speicherproblem", "BEHOBEN")) == 1, [str(m["Subject"]) for m in sink.messages]
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == 1, [str(m["Subject"]) for m in sink.messages]
    assert not storage_mark_path(settings).exists() and storage_card_note(settings).read() is None
    assert await db_rows(db, "SELECT notified FROM alert_groups WHERE type = 'storage_problem'") == [("resolved",)]


async def test_a_restart_on_the_still_full_disk_tells_no_all_clear_until_the_card_has_room(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The storage alert was mailed directly and the agent restarted on the still full disk: the start gives back the
    room it keeps (edge.db-room), so its writes succeed for a while on a full card. That is no all-clear: it comes
    once the card has room, though this run never saw a write fail. Before, the all-clear went seconds after the
    start, while the disk was full (chaos alerts harness, storage D3); and a run that never saw a write fail never
    ended the alarm at all once the disk got room (D2)."""
    settings = disk_settings()
    db = settings.agent.db_path
    await a_run_mailed_the_storage_alert_directly_and_stopped(make_agent, settings, sink, small_disk)
    second = await make_agent(settings)
    assert second.deps is not None and second.deps.db.write_problem is None  # it writes, on the room it gave back
    await asyncio.sleep(2.0)  # ten checks of the alert loop
    assert not mails_about(sink, "Speicherproblem", "BEHOBEN"), [str(m["Subject"]) for m in sink.messages]
    await asyncio.to_thread(small_disk.free, db)
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")
    await asyncio.sleep(1.0)
    assert len(mails_about(sink, "Speicherproblem", "BEHOBEN")) == 1
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == 1


async def test_a_storage_alarm_an_earlier_run_stored_and_told_ends_once_a_later_run_finds_room(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """An earlier run stored the storage alarm and told it through the outbox, then was killed on the full disk; the
    disk got room while the agent was down. The next run meets no problem, so nothing ended the alarm: the manager's
    last word stayed "Speicherproblem", for good (chaos alerts harness, storage D2). It ends once the run finds room."""
    settings = disk_settings()
    db = settings.agent.db_path
    first = await make_agent(settings)
    await first.stop()
    await asyncio.to_thread(alarm_told_before, db, 60)  # what the killed run left in its database
    await make_agent(settings)
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")
    assert not mails_about(sink, "Speicherproblem", "STÖRUNG")  # told before, by the earlier run
    assert await db_rows(db, "SELECT state, notified FROM alert_groups WHERE type = 'storage_problem'") == [
        ("resolved", "resolved")
    ]


async def test_a_restart_on_the_full_disk_does_not_mail_again_the_storage_alarm_the_outbox_told(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """An earlier run told the storage alarm through its outbox (it fitted), and the agent was killed on the full disk.
    The next run meets the full disk too: its database, readable on the full disk, says the manager has that alarm, so
    it is not mailed directly again; the all-clear follows once there is room. Before, each restart on the full disk
    mailed it again (chaos alerts harness, storage D4: three alarms within a second, no all-clear between)."""
    settings = disk_settings()
    db = settings.agent.db_path
    first = await make_agent(settings)
    await first.stop()
    await asyncio.to_thread(alarm_told_before, db, 60)
    await asyncio.to_thread(small_disk.fill, db)  # killed on the full disk
    second = await make_agent(settings)
    await asyncio.to_thread(small_disk.fill, db)  # the start gave back the room kept beside the database: used up
    second.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))  # a write that fails
    await wait_until(lambda: second.deps is not None and second.deps.db.write_problem is not None, 10, "writes fail")
    await asyncio.sleep(2.0)  # rounds of the alert loop on the full disk
    assert not mails_about(sink, "Speicherproblem", "STÖRUNG"), [str(m["Subject"]) for m in sink.messages]
    await storage_all_clear_alone_follows(sink, small_disk, db, alarms=0)


def alarm_told_before(db: Path, ago_s: float, *, notified: str = "firing", mailed: str | None = "firing") -> None:
    """The storage alarm stored firing, as an earlier run leaves it: told (``notified``) ``ago_s`` ago, its last
    mail saying ``mailed`` (the outbox's; a digest tells without a mail; "resolved", None: never told)."""
    now = time.time()
    told_at = None if notified == "resolved" else now - ago_s
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO alert_groups(key, type, subject, severity, state, notified, first_at, changed_at,"
            " last_sent_at, fires_total, fires_since_mail, mailed, notified_severity)"
            " VALUES ('storage_problem:database', 'storage_problem', 'database', 'critical', 'firing', ?2,"
            " ?1, ?1, ?3, 1, ?5, ?4, 'critical')",
            (now - ago_s, notified, told_at, mailed, int(told_at is None)),
        )
    conn.close()


@pytest.mark.parametrize(
    ("notified", "mailed", "noted"),
    [("firing", "resolved", False), ("resolved", None, True)],
    ids=["told-by-a-digest-long-ago", "stored-untold-and-mailed-directly"],
)
async def test_an_earlier_runs_storage_alarm_is_not_mailed_again_by_a_run_that_finds_room(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
    notified: str,
    mailed: str | None,
    noted: bool,
) -> None:
    """An earlier run left the storage alarm stored firing: told by a digest two hours ago (the storm guard held its
    mail), or not told in the database because that run mailed it directly (its note) and was killed before it could
    record it. The disk got room meanwhile. The next run ends it before its first mail: no alarm about a disk that
    has room. Before, the first had the alarm mailed at once, then its all-clear (chaos alerts harness, storage R6);
    the second the same alarm again through the outbox (R2)."""
    settings = disk_settings()
    db = settings.agent.db_path
    first = await make_agent(settings)
    await first.stop()
    await asyncio.to_thread(alarm_told_before, db, 7200, notified=notified, mailed=mailed)
    if noted:
        mark = {"boot": SYSTEM_CLOCK.boot(), "mono": SYSTEM_CLOCK.mono() - 5}
        await asyncio.to_thread(storage_mark_path(settings).write_text, json.dumps(mark))
    await make_agent(settings)
    await eventually(
        lambda: db_rows(db, "SELECT state FROM alert_groups WHERE type = 'storage_problem'"),
        lambda rows: rows == [("resolved",)],
        10,
        "the alarm ended",
    )
    await asyncio.sleep(1.5)  # rounds of the mail loop
    assert not mails_about(sink, "Speicherproblem", "STÖRUNG"), [str(m["Subject"]) for m in sink.messages]
    if noted:  # its direct mail was the alarm: its all-clear follows
        await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")


async def test_a_storage_alarm_whose_occurrence_is_stored_but_whose_mail_is_not_goes_straight_to_the_relay(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """On a full disk a small write may still fit where a big one does not: the storage alarm's occurrence is stored,
    its mail (text and HTML) cannot be. It goes straight to the relay, as when nothing can be stored; once there is
    room, the all-clear follows and the alarm is not mailed again. Before, the manager got no mail at all (chaos alerts
    harness, storage D1)."""
    settings = disk_settings()
    db = settings.agent.db_path
    agent = await make_agent(settings)
    refuse = (
        "CREATE TRIGGER full_mails BEFORE INSERT ON alert_mails"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    await asyncio.to_thread(run_sql, db, refuse)
    agent.bus.publish(StorageProblem(detail=f"database {db}: cannot write: database or disk is full"))
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "STÖRUNG"), 10, "the storage alert mailed directly")
    await asyncio.to_thread(run_sql, db, "DROP TRIGGER full_mails")
    agent.bus.publish(StorageRecovered())
    await wait_until(lambda: mails_about(sink, "Speicherproblem", "BEHOBEN"), 20, "the storage all-clear")
    assert len(mails_about(sink, "Speicherproblem", "STÖRUNG")) == 1


def run_sql(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql)
    conn.close()


async def test_a_printer_problem_over_while_the_disk_was_full_is_told_once_as_resolved(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The front printer goes offline and comes back while the disk is full: nobody could be told meanwhile (the
    outbox is in the database that refuses writes). Once the disk has room the occurrences are stored and the manager
    gets one mail about it, the all-clear saying since and until when, as for any problem over before anyone was told,
    and that no alarm went before it; before, an alarm about a printer that worked again, and its all-clear a group
    interval later (the chaos helper's seed 34). Before stop 83 the all-clear did not say it was the first word, and
    read as an alarm lost (the storage83 probe, F9)."""
    settings = disk_settings()
    db = settings.agent.db_path
    agent = await agent_on_a_full_disk(make_agent, settings, small_disk)
    await asyncio.sleep(0.3)
    agent.bus.publish(PrinterStatusChanged(printer="front", old="offline", new="online"))
    await wait_until(lambda: mails_about(sink, "Speicherproblem"), 10, "storage mail")
    await asyncio.to_thread(small_disk.free, db)
    await eventually(
        lambda: db_rows(db, "SELECT notified, fires_since_mail FROM alert_groups WHERE key = 'printer_offline:front'"),
        lambda rows: rows == [("resolved", 0)],
        20,
        "the front printer's episode told",
    )
    await wait_until(lambda: mails_about(sink, "Drucker front"), 10, "its mail")
    await asyncio.sleep(1.5)  # past group_interval_s (1 s): nothing else follows
    front = [str(m["Subject"]) for m in mails_about(sink, "Drucker front")]
    assert len(front) == 1 and "BEHOBEN" in front[0], front
    body = mails_about(sink, "Drucker front")[0].get_body(("plain",)).get_content()
    assert "Seit:" in body and "Bis:" in body and "Dazu ging vorher keine Störungsmeldung" in body, body


async def test_a_card_below_its_free_space_limit_is_told_as_filling_up_while_orders_are_still_taken(
    make_agent: MakeAgent, alert_settings: Callable[..., Settings], sink: SmtpSink
) -> None:
    """Less free than alerts.disk_free_min_mb, the card still writes: orders are taken and printed, and the manager's
    mail says so and what to do before it is full. Before: the mail said "new orders are refused, or wait" while every
    order got 201, and sent the manager calling the technician "now" for a card that still took orders (the
    disk-fault probe, diskfault F3)."""
    agent = await make_agent(fast(alert_settings, disk_free_min_mb=100_000_000))
    [mail] = await sink.wait_for(1, timeout=10)
    assert "Speicherkarte fast voll" in str(mail["Subject"]), mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    assert "werden noch angenommen" in text and "abgelehnt oder warten" not in text, text
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, prefix="low", print_receipt=False)))[0] == 201


async def test_a_german_card_filling_up_mail_says_how_much_is_free_in_german(
    make_agent: MakeAgent, alert_settings: Callable[..., Settings], sink: SmtpSink
) -> None:
    """A German store's card below alerts.disk_free_min_mb: the mail says in German, numbers as a German reads them,
    how much is free and how much should be. Before (the i18n82 probe, F2): "Letzte Meldung: 65276 MB free, at least
    100000000 MB wanted", the agent's English."""
    agent = await make_agent(fast(alert_settings, disk_free_min_mb=100_000_000))
    [mail] = await sink.wait_for(1, timeout=10)
    free_mb = shutil.disk_usage(agent.settings.agent.data_dir).free // 2**20
    for part in ("plain", "html"):
        text = html.unescape(mail.get_body((part,)).get_content())
        assert "mindestens 100.000.000 MB frei bleiben" in text, (part, text)
        free = re.search(r"Es sind noch ([\d.]+) MB frei", text)
        assert free and abs(int(free[1].replace(".", "")) - free_mb) < 1000, (part, text)
        assert "wanted" not in text and "Letzte Meldung" not in text, (part, text)


async def test_the_storage_alarm_mailed_directly_keeps_the_relays_rest_after_a_refused_password(
    make_agent: MakeAgent,
    disk_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """The disk is full and the relay refuses the store's password for good (535 5.7.8: changed at the provider). The
    storage alarm goes straight to the relay; before, every round of the alert loop whose writes failed logged in
    again, each one more failed login toward the provider's lockout (fail2ban bans after 5). It keeps the outbox's
    rest after a refused login: one login, and the outbox says when the relay is tried again."""
    sink.auth_reply = "535 5.7.8 Authentication credentials invalid"
    settings = disk_settings(critical_storm_s=0)
    agent = await agent_on_a_full_disk(make_agent, settings, small_disk)
    await wait_until(lambda: sink.logins >= 1, 10, "the storage alarm's login")
    for n in range(6):  # the front printer flaps: each round's writes fail, and each tries the storage alarm
        new, old = ("online", "offline") if n % 2 == 0 else ("offline", "online")
        agent.bus.publish(PrinterStatusChanged(printer="front", old=old, new=new))
        await asyncio.sleep(0.4)  # two rounds of the alert loop (check_interval_s 0.2)
    assert sink.logins == 1, f"{sink.logins} logins to a relay that refused the password"
    assert agent.alerter is not None
    error = (await agent.alerter.outbox_status()).server_error or ""
    assert "535 5.7.8" in error and "not tried again before" in error, error


async def test_a_full_card_is_one_alerts_failed_line_a_part_not_one_a_retry(
    make_agent: MakeAgent,
    make_settings: Callable[..., Settings],
    alert_settings: Callable[..., Settings],
    sink: SmtpSink,
    small_disk: SmallDisk,
) -> None:
    """While the card refuses the alerter's writes, each part of it waits and tries again, the wait doubling: the log
    says so once (and again every twenty failures, about ten minutes at the longest wait), not at every retry, and
    says when it works again. Before (the disk78 probe, F3): an error line at every retry, twice a minute for as long
    as the card was full, each one more write to that card."""
    settings = on_small_disk(make_settings, alert_settings, small_disk)
    agent = await make_agent(settings)
    with capture_logs() as logs:
        await asyncio.to_thread(small_disk.fill, settings.agent.db_path)
        for _ in range(10):  # a printer flapping: occurrences the alerter must store
            agent.bus.publish(PrinterStatusChanged(printer="front", old="online", new="offline"))
            agent.bus.publish(PrinterStatusChanged(printer="front", old="offline", new="online"))
            await asyncio.sleep(0.4)
        await asyncio.to_thread(small_disk.free, settings.agent.db_path)
        await wait_until(lambda: any(e["event"] == "alerts_resumed" for e in logs), 15, "resumed")
    parts = [e["part"] for e in logs if e["event"] == "alerts_failed"]
    assert parts and len(parts) == len(set(parts)), parts
