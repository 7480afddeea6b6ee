"""The nightly backup that stopped succeeding is told to the manager: a failing card leaves no copy otherwise, and
each failed run only ended in the journal (the upgrade79 probe, S1: a read-only stick, three nights, nothing said)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.ops.backup import backup_database
from edge.sim.smtp import SmtpSink
from tests.helpers import wait_until


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
    assert "Datensicherung seit 3 d nicht gelungen" in str(mail["Subject"]), mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    assert str(backups) in body and "edge backup --config" in body, body
    await backup_database(agent.settings)
    clock.advance(601)
    mails = await sink.wait_for(2, timeout=15)
    assert "BEHOBEN" in str(mails[1]["Subject"]) and "Datensicherung" in str(mails[1]["Subject"]), mails[1]["Subject"]


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
    assert "Datensicherung seit 1 d 12 h nicht gelungen" in str(mail["Subject"]), mail["Subject"]
