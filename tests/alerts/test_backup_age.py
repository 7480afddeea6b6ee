"""The nightly backup that stopped succeeding is told to the manager: a failing card leaves no copy otherwise, and
each failed run only ended in the journal (the upgrade79 probe, S1: a read-only stick, three nights, nothing said)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.ops.backup import backup_database
from edge.sim.orders import make_order
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client, db_execute, post, wait_until


async def test_a_backup_that_stopped_succeeding_is_mailed_and_the_next_one_ends_it(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    sink: SmtpSink,
    tmp_path: Path,
) -> None:
    """The newest backup is three days old: one warning names the age and the command that says why; a backup
    written again ends it with its all-clear at the next look (ten minutes on)."""
    backups = tmp_path / "data" / "backups"
    backups.mkdir(parents=True)
    old = backups / "edge-20261204T033000000Z-1.db"
    old.write_bytes(b"")
    three_days_ago = time.time() - 3 * 86400
    os.utime(old, (three_days_ago, three_days_ago))
    clock = SteppedClock()
    agent = await make_agent(alert_settings(group_wait_s=0.2, group_interval_s=1.0, check_interval_s=0.2), clock=clock)
    [mail] = await sink.wait_for(1, timeout=15)
    assert "STÖRUNG: Datensicherung gelingt nicht" in str(mail["Subject"]), mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    assert "Seit 3 d ist keine Sicherung" in body and str(backups) in body and "edge backup --config" in body, body
    assert "Letzte Meldung" not in body, body  # no line of the agent's English (the verify79 probe, V1)
    await backup_database(agent.settings)
    clock.advance(601)
    mails = await sink.wait_for(2, timeout=15)
    # not "BEHOBEN: Datensicherung seit 3 d nicht gelungen", which read as a new alarm (the verify79 probe, V1)
    assert "BEHOBEN: Datensicherung gelingt nicht" in str(mails[1]["Subject"]), mails[1]["Subject"]


async def test_a_new_box_is_not_mailed_before_its_first_night_and_one_that_never_backs_up_is(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    sink: SmtpSink,
) -> None:
    """No backup yet on a new box: nothing to say; 36 hours after its first start still none: the warning."""
    clock = SteppedClock()
    agent = await make_agent(alert_settings(group_wait_s=0.2, group_interval_s=1.0, check_interval_s=0.2), clock=clock)
    assert agent.alerter is not None
    await wait_until(lambda: agent.alerter is not None and agent.alerter._backup_looked is not None)
    assert sink.messages == []
    clock.step(36 * 3600)
    clock.advance(601)
    [mail] = await sink.wait_for(1, timeout=15)
    assert "Seit 1 d 12 h ist keine Sicherung" in mail.get_body(("plain",)).get_content()


async def test_a_box_first_started_on_a_clock_years_behind_counts_from_its_orders_not_from_that_start(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    sink: SmtpSink,
) -> None:
    """A new box's first start was recorded on a clock three years behind (a dead RTC battery, NTP not yet there);
    orders came since, no backup yet: nothing is due. Before, "no backup for 1095 d" (the verify79 probe, V2): the
    oldest order, by central's clock, is a later bound."""
    settings = alert_settings(group_wait_s=0.2, check_interval_s=0.2)
    first = await make_agent(settings)
    async with api_client(first) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await first.stop()
    await db_execute(str(settings.agent.db_path), "UPDATE store_identity SET recorded_at = recorded_at - 94608000")
    again = await make_agent(settings)
    await wait_until(lambda: again.alerter is not None and again.alerter._backup_looked is not None)
    await asyncio.sleep(3)  # a mail would be out by now: it came within 3 s on the code before
    assert [m["Subject"] for m in sink.messages] == []


async def test_a_backup_dated_ahead_of_the_clock_is_counted_from_when_it_was_seen_not_from_its_date(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    sink: SmtpSink,
    tmp_path: Path,
) -> None:
    """The newest backup was taken while the box's clock was a month ahead (a failing RTC), then NTP stepped the
    clock back and the nightly backups failed: no mail ever came, its age was negative for a month (the verify79
    probe, V4). Its date says nothing; stale_after_h after this run first saw it, the warning."""
    backups = tmp_path / "data" / "backups"
    backups.mkdir(parents=True)
    ahead = backups / "edge-20270104T033000000Z-1.db"
    ahead.write_bytes(b"")
    a_month_on = time.time() + 30 * 86400
    os.utime(ahead, (a_month_on, a_month_on))
    clock = SteppedClock()
    agent = await make_agent(alert_settings(group_wait_s=0.2, group_interval_s=1.0, check_interval_s=0.2), clock=clock)
    alerter = agent.alerter
    assert alerter is not None
    await wait_until(lambda: alerter._backup_looked is not None)
    for hours in (35, 1):
        looked = alerter._backup_looked
        clock.step(hours * 3600)
        clock.advance(601)
        await wait_until(lambda looked=looked: alerter._backup_looked != looked, what="the next look")
        if hours == 35:
            await asyncio.sleep(0.5)
            assert sink.messages == []  # not yet stale_after_h since it was seen
    [mail] = await sink.wait_for(1, timeout=15)
    assert "Seit 1 d 12 h ist keine Sicherung" in mail.get_body(("plain",)).get_content()
