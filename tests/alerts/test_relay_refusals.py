"""Relays that refuse before any mail is looked at (a login, encryption or a fully-qualified greeting name demanded,
a sender rate limit): every mail would meet the same refusal, so the whole outbox backs off and keeps its mails, and
the log, `edge doctor` and the status name the setting to change. A refusal about the From address stays the
sender's."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from edge.alerts.alerter import Alerter
from edge.config import Settings
from edge.ops.technician import _smtp_check
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER, FakeClock, relay_settings
from tests.alerts.helpers import dead_ticket, run, two_alarms
from tests.helpers import db_rows

# The replies real relays give at MAIL FROM, and the setting each must name.
SESSION_REFUSALS = {
    # Gmail / Office 365 (RFC 4954 6) to a client that did not log in
    "login": ("530 5.7.0 Authentication required", "smtp.username"),
    # Gmail, Postfix smtpd_tls_auth_only (RFC 3207 4) to a client that did not encrypt
    "starttls": ("530 5.7.0 Must issue a STARTTLS command first", "smtp.security"),
    # a provider's sender rate limit: temporary (RFC 5321 4.2.1), and the same for every mail from this sender
    "rate_limit": ("451 4.7.1 Sender rate limit exceeded", "tries again"),
    # any relay closing down (RFC 5321 3.8), here at MAIL FROM: before stop 67 told as the sender refused, which sent
    # the technician to smtp.sender (the adversarial probe, fuzzdoors2 S2)
    "closing": ("421 4.3.2 Service shutting down", "tried again"),
}


@pytest.mark.parametrize("case", list(SESSION_REFUSALS))
async def test_a_relay_refusing_at_mail_from_for_a_login_encryption_or_a_rate_limit_backs_off_and_keeps_the_mails(
    case: str,
    relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    clock: FakeClock,
) -> None:
    """Before: both alarms dead-lettered at their first attempt with "refused the sender … the From address must
    belong to the account", no backoff, nothing sent once the relay took mail again; doctor said "login … works"."""
    reply, setting = SESSION_REFUSALS[case]
    relay.mail_reply = reply
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    with capture_logs() as logs:
        await two_alarms(alerter)
    db = settings.agent.db_path
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("pending",), ("pending",)]
    error = alerter.outbox.server_error or ""
    assert setting in error and reply in error and "From address" not in error
    wait = alerter.outbox.server_wait()
    assert wait is not None and wait > 0  # the whole outbox backs off: one refusal, not one per mail
    assert relay.connections == 1
    assert not [e for e in logs if e["event"] == "alert_mail_dead"]
    assert [e["error"] for e in logs if e["event"] == "alert_mail_failed"] == [error]
    assert (await alerter.outbox_status()).server_error == error
    check = await _smtp_check(settings)
    assert check.level == "fail" and setting in check.detail, check

    relay.mail_reply = None  # the relay (or its account) is put right
    clock.advance(5)
    assert await alerter.deliver_due() == 2
    assert len(relay.messages) == 2
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("sent",), ("sent",)]
    assert (await alerter.outbox_status()).server_error is None


async def test_a_relay_refusing_to_relay_at_rcpt_backs_off_keeps_the_mails_and_the_doctor_says_so(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """Postfix without a login (or from a network it does not relay for) answers RCPT "554 5.7.1 <…>: Relay access
    denied" (smtpd_relay_restrictions): no address is wrong, the box may not relay, and every mail meets it. The
    outbox backs off and keeps the mails, naming smtp.username; the doctor tries a recipient too and says so; once the
    relay is put right both alarms go. Before stop 68 both were dead-lettered at once as refused recipients, nothing
    went after the fix, and the doctor said OK (the mail probe, finding 2)."""
    relay.rcpt_replies["chef@store.test"] = "554 5.7.1 <chef@store.test>: Relay access denied"
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    db = settings.agent.db_path
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("pending",), ("pending",)]
    error = alerter.outbox.server_error or ""
    assert "smtp.username" in error and "Relay access denied" in error, error
    assert alerter.outbox.server_wait() is not None
    check = await _smtp_check(settings)
    assert check.level == "fail" and "smtp.username" in check.detail, check

    del relay.rcpt_replies["chef@store.test"]
    clock.advance(5)
    assert await alerter.deliver_due() == 2
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("sent",), ("sent",)]


async def test_a_sender_refused_at_rcpt_is_told_as_the_sender_not_as_the_recipient(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter]
) -> None:
    """Postfix checks the sender at RCPT by default (smtpd_delay_reject): reject_sender_login_mismatch answers there
    "553 5.7.1 <edge@…>: Sender address rejected: not owned by user". Told as at MAIL FROM, naming smtp.sender;
    before stop 68 as the manager's address refused (the mail probe, finding 2)."""
    relay.rcpt_replies["chef@store.test"] = "553 5.7.1 <edge@store.test>: Sender address rejected: not owned by user"
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    rows = await db_rows(settings.agent.db_path, "SELECT state, last_error FROM alert_mails ORDER BY id")
    assert [state for state, _ in rows] == ["dead", "dead"]
    assert all("smtp.sender" in error and "553 5.7.1" in error for _, error in rows), rows


async def test_doctor_tries_the_sender_and_says_the_relay_wants_a_login_when_none_is_configured(
    make_settings: Callable[..., Settings],
) -> None:
    """aiosmtpd with auth_required answers MAIL FROM "530 5.7.0 Authentication required", as Gmail does. Before:
    doctor said "ok login to … works" with no login configured, having only connected."""
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD)
    await server.start()
    try:
        settings = relay_settings(make_settings, server)
        check = await _smtp_check(settings)
        assert check.level == "fail" and "smtp.username" in check.detail and "530" in check.detail, check
        settings = relay_settings(make_settings, server, username=SMTP_USER, password=SMTP_PASSWORD)
        check = await _smtp_check(settings)
        assert check.level == "ok" and f"logged in as {SMTP_USER}" in check.detail, check
        assert server.messages == []  # MAIL FROM, then RSET: nothing is sent
    finally:
        await server.stop()


@pytest.mark.parametrize("stage", ["MAIL", "RCPT"])
async def test_a_relay_wanting_a_fully_qualified_greeting_gets_one_and_is_told_the_setting_otherwise(
    stage: str,
    relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Pi is "raspberrypi", no domain; Postfix with reject_non_fqdn_helo_hostname refuses that name (504 5.5.2).
    Without smtp.helo_name the agent greets with its address literal, as RFC 5321 4.1.4 says a client without a
    meaningful name does; a helo_name the relay refuses backs the outbox off, naming smtp.helo_name. Before: EHLO
    raspberrypi, both alarms dead-lettered as "refused the sender … the From address must belong to the account"
    (stage MAIL) or as refused recipients (stage RCPT)."""
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "raspberrypi")
    relay.fqdn_helo_at = stage
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    assert len(relay.messages) == 2
    assert set(relay.helo_names) == {"[127.0.0.1]"}
    db = settings.agent.db_path
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("sent",), ("sent",)]

    other = make_alerter(relay_settings(make_settings, relay, helo_name="till-3"))
    other.on_event(dead_ticket(3, "bar"))
    await run(other)
    error = other.outbox.server_error or ""
    assert "smtp.helo_name" in error and "till-3" in error and "504 5.5.2" in error, error
    assert await db_rows(db, "SELECT state FROM alert_mails WHERE id = 3") == [("pending",)]
    assert len(relay.messages) == 2


async def test_a_relay_refusing_the_from_address_itself_still_dead_letters_the_mail(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter]
) -> None:
    """Postfix reject_sender_login_mismatch (553 5.7.1): the From address is wrong for the account, for good; the
    mail waits for a person (fix smtp.sender, retry) and the relay is not backed off."""
    relay.mail_reply = "553 5.7.1 <edge@store.test>: Sender address rejected: not owned by user"
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    rows = await db_rows(settings.agent.db_path, "SELECT state, last_error FROM alert_mails ORDER BY id")
    assert [state for state, _ in rows] == ["dead", "dead"]
    assert all("smtp.sender" in error and "553 5.7.1" in error for _, error in rows)
    assert alerter.outbox.server_wait() is None


async def test_a_recipient_the_relay_keeps_deferring_is_given_up_after_a_day_with_its_last_answer(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """The second manager's mailbox is full: the relay answers 452 4.2.2 for it at every try, the first manager has
    the mail. Tried with backoff for a day, the mail is then dead with the relay's last answer, for a person to see
    (`edge alerts`, the outbox's dead letters), not tried again every few minutes for ever (a mail server gives up too,
    RFC 5321 4.5.4.1; an alarm a day old is no news). Before: still pending after two days, tried at every backoff."""
    relay.rcpt_replies["vize@store.test"] = "452 4.2.2 Mailbox full"
    settings = relay_settings(make_settings, relay)
    settings.alerts.to.append("vize@store.test")
    alerter = make_alerter(settings)
    alerter.on_event(dead_ticket(1, "kitchen"))
    await run(alerter)
    for _ in range(8):  # six hours at a time, for two days
        clock.advance(6 * 3600)
        await alerter.deliver_due()
    [(state, error)] = await db_rows(settings.agent.db_path, "SELECT state, last_error FROM alert_mails")
    assert state == "dead" and "452 4.2.2 Mailbox full" in error and "24 h" in error, (state, error)
    assert len(relay.messages) == 1  # the first manager's, once


async def test_a_mail_kept_through_a_long_relay_outage_is_not_given_up_at_its_first_greylisting(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """The relay was away for two days (the mail waited, untried by the recipient); back, it greylists the recipient
    once (450 4.7.1, postgrey) and takes the mail on the next try: the day's limit counts tries that met the
    recipient, not the mail's age alone. The first version of the limit above dead-lettered such a mail at once."""
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await relay.stop()
    alerter.on_event(dead_ticket(1, "kitchen"))
    await run(alerter)  # tried once: no relay
    clock.advance(2 * 24 * 3600)
    await relay.start()
    relay.rcpt_replies["chef@store.test"] = "450 4.7.1 Greylisted, try again in 60s"
    await alerter.deliver_due()
    [(state,)] = await db_rows(settings.agent.db_path, "SELECT state FROM alert_mails")
    assert state == "pending"
    del relay.rcpt_replies["chef@store.test"]
    clock.advance(3600)
    await alerter.deliver_due()
    assert await db_rows(settings.agent.db_path, "SELECT state FROM alert_mails") == [("sent",)]
    assert len(relay.messages) == 1


async def test_a_mail_tried_again_and_again_while_the_relay_is_down_is_not_given_up_before_it_met_the_relay(
    relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock
) -> None:
    """The relay is down for a day and a half; the outbox tries it at every backoff meanwhile (eight tries). Those
    tries met no relay: they are not the three the day's limit counts, and the alarm goes once the relay is back.
    Before stop 68 every try counted: a day on, the next try (still no relay) dead-lettered it, without a log line,
    and the manager never had the alarm (the mail probe, finding 1)."""
    settings = relay_settings(make_settings, relay)
    alerter = make_alerter(settings)
    await relay.stop()
    alerter.on_event(dead_ticket(1, "kitchen"))
    await run(alerter)
    for _ in range(8):  # every 4.5 hours, relay still down
        clock.advance(4.5 * 3600)
        await alerter.deliver_due()
    tried = "SELECT state, attempts, relay_tries FROM alert_mails"
    [(state, attempts, relay_tries)] = await db_rows(settings.agent.db_path, tried)
    assert state == "pending" and attempts >= 8 and relay_tries == 0, (state, attempts, relay_tries)
    await relay.start()
    clock.advance(3600)
    await alerter.deliver_due()
    assert await db_rows(settings.agent.db_path, "SELECT state FROM alert_mails") == [("sent",)]
    assert len(relay.messages) == 1
