"""A relay that loses the line during DATA: after the whole message went (before its final reply: RFC 5321 4.1.1.4,
6.1, RFC 1047, the mail may have been delivered) it is sent again once, and only once; before the relay's 354 nothing
went, so the relay is down and the mail waits for it. Found by the ops72 probe: a relay behind a NAT that cut the line
while it scanned each mail had the manager get the same alarm 5 times in 80 s, then about 6 an hour, for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.alerts.alerter import Alerter
from edge.config import Settings
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import FakeClock, relay_settings
from tests.alerts.helpers import dead_ticket, restarted, run
from tests.helpers import db_rows

EVERY_TIME = 1000  # drops a relay scripted so never runs out of in a test
MAIL_ROW = "SELECT state, last_error FROM alert_mails"


def message_ids(relay: SmtpSink) -> list[str]:
    return [str(m["Message-ID"]) for m in relay.messages]


async def hours_of_retries(alerter: Alerter, clock: FakeClock) -> None:
    """Ten hours of the outbox's rounds: well past its backoffs (retry_max_s 4 s in relay_settings)."""
    for _ in range(10):
        clock.advance(3600)
        await alerter.deliver_due()


@pytest.mark.parametrize("drops", [EVERY_TIME, 1], ids=["every-time", "once"])
async def test_a_relay_that_drops_the_line_after_the_message_gets_it_twice_and_no_more(
    relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    clock: FakeClock,
    drops: int,
) -> None:
    """The relay takes the whole alarm and drops the connection before its 250: sent once more (the one duplicate,
    same Message-ID). Once: then the relay answers, the row is sent with no error and no warning. Every time: then it
    is taken as delivered, with a warning naming what to check and the row saying so. Before: a plain "relay down",
    never counted nor given up: one more copy at every backoff (11 here)."""
    relay.drops_after_body = drops
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    with capture_logs() as logs:
        alerter.on_event(dead_ticket(1, "kitchen"))
        await run(alerter)
        await hours_of_retries(alerter, clock)
    ids = message_ids(relay)
    assert len(ids) == 2 and ids[0] == ids[1], ids
    [(state, error)] = await db_rows(settings.agent.db_path, MAIL_ROW)
    unconfirmed = [e for e in logs if e["event"] == "alert_mail_unconfirmed"]
    if drops == 1:
        assert (state, error, unconfirmed) == ("sent", None, [])
        return
    assert state == "sent" and "twice" in error and "not sent again" in error, (state, error)
    [warning] = unconfirmed
    assert warning["log_level"] == "warning" and warning["message_id"] == ids[0] and "firewall" in warning["error"]


async def test_the_one_resend_after_a_drop_after_the_message_is_kept_across_a_restart(
    relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock, tmp_path: Path
) -> None:
    """The first drop after the message, then a restart (the count is in the database), then the same again: two
    copies in all, and none after. Before: a copy at every backoff after the restart too."""
    relay.drops_after_body = EVERY_TIME
    settings = relay_settings(make_settings, relay)
    alerter, db = await restarted(settings, settings.agent.db_path, clock)
    try:
        alerter.on_event(dead_ticket(1, "kitchen"))
        await run(alerter)
    finally:
        await db.close()
    assert len(relay.messages) == 1
    alerter, db = await restarted(settings, settings.agent.db_path, clock)
    try:
        await hours_of_retries(alerter, clock)
    finally:
        await db.close()
    assert len(relay.messages) == 2
    [(state, _)] = await db_rows(settings.agent.db_path, MAIL_ROW)
    assert state == "sent"


async def test_a_relay_silent_after_every_message_past_the_data_timeout_gets_it_twice(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """The relay takes the alarm but its final answer never comes within smtp.data_timeout_s (a content filter that
    hangs): "it may have been delivered", so one resend, then taken as delivered. Before: a copy at every backoff."""
    bodies = 0

    async def hangs(message: EmailMessage) -> None:
        nonlocal bodies
        bodies += 1
        await asyncio.sleep(0.5)

    relay.data_reply = hangs
    settings = relay_settings(make_settings, relay, data_timeout_s=0.1)
    alerter = make_alerter(settings)
    alerter.on_event(dead_ticket(1, "kitchen"))
    await run(alerter)
    await hours_of_retries(alerter, clock)
    assert bodies == 2
    [(state, error)] = await db_rows(settings.agent.db_path, MAIL_ROW)
    assert state == "sent" and "smtp.data_timeout_s" in error, (state, error)


async def test_a_relay_that_drops_the_line_before_its_354_is_down_and_the_mail_waits_for_it(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """Two drops at DATA, before the relay said 354: the message never went, so these are no copies that may have
    arrived (not taken as delivered after two); the mail waits and goes once the relay answers."""
    relay.drops_at_data = 2
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    alerter.on_event(dead_ticket(1, "kitchen"))
    await run(alerter)
    clock.advance(3600)
    await alerter.deliver_due()
    assert relay.drops_at_data == 0 and relay.messages == []
    [(state, error)] = await db_rows(settings.agent.db_path, MAIL_ROW)
    assert state == "pending" and "closed the connection" in error, (state, error)
    await hours_of_retries(alerter, clock)
    assert len(relay.messages) == 1
    assert await db_rows(settings.agent.db_path, MAIL_ROW) == [("sent", None)]
