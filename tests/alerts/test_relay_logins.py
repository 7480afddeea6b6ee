"""How a relay's answer to the login is told and acted on (RFC 4954 6): a refused password (535 5.7.8) is tried once
per connection and then not for an hour, as fail2ban and account lockouts count every failed login; a temporary
failure (454 4.7.0) is said as such and retried at the normal pace; an app password demanded (534 5.7.9) is named;
a relay that offers no login is told what to change; the relay's reply is shown in its own words, never the
password."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.alerts.alerter import Alerter
from edge.app import Agent
from edge.clock import SteppedClock, shown_at
from edge.config import Settings
from edge.ops.technician import _smtp_check
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from edge.store.alerts import MailState
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER, T0, FakeClock, relay_settings
from tests.alerts.helpers import WRONG, login_settings, printer_down_with_a_ticket, restarted, two_alarms, with_password
from tests.helpers import api_client, db_rows, eventually, wait_until


async def test_a_refused_password_is_tried_once_and_then_not_for_an_hour(
    login_relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    clock: FakeClock,
) -> None:
    """535 5.7.8 is wrong for every mechanism and every try: one failed login, then the relay rests an hour (fail2ban
    bans after 5, Microsoft 365 locks after 10); the mails stay pending and the status names the settings. Before:
    two failed logins per try (PLAIN, then LOGIN) and the next try seconds later."""
    settings = login_settings(make_settings, login_relay, WRONG)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    assert login_relay.failed_logins == 1
    db = settings.agent.db_path
    assert await db_rows(db, "SELECT state FROM alert_mails ORDER BY id") == [("pending",), ("pending",)]
    error = alerter.outbox.server_error or ""
    assert f"refused the login as {SMTP_USER!r}" in error and "smtp.password" in error and "535 5.7.8" in error, error
    assert WRONG not in error
    wait = alerter.outbox.server_wait()
    assert wait is not None and wait >= 3000, wait
    clock.advance(30 * 60)
    assert await alerter.deliver_due() == 0
    assert login_relay.failed_logins == 1 and login_relay.connections == 1
    check = await _smtp_check(settings)
    assert check.level == "fail" and "smtp.password" in check.detail and WRONG not in check.detail, check
    clock.advance(31 * 60)
    await alerter.deliver_due()
    assert login_relay.connections == 3  # the doctor's, then the hour is up


@pytest.mark.parametrize(
    ("reply", "said", "held"),
    [
        # the provider's login backend is down (RFC 4954 6): not the password, and it passes
        ("454 4.7.0 Temporary authentication failure", "cannot log anyone in just now", False),
        # Gmail to an account password where an app password is needed
        ("534 5.7.9 Application-specific password required", "app password", True),
        # RFC 4954 6: the mechanism needs an encrypted connection first (an Exchange receive connector without TLS)
        ("538 5.7.11 Encryption required for requested authentication mechanism", "smtp.security to 'starttls'", True),
    ],
    ids=["454", "534", "538"],
)
async def test_a_login_refused_for_another_reason_is_told_as_what_it_is(
    reply: str,
    said: str,
    held: bool,
    login_relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
) -> None:
    """Before: "wrong user name or password" for all three, the relay's reply dropped, and 454 retried as a 535 is
    (538 until stop 69: "check smtp.username and smtp.password", where the password was right)."""
    login_relay.auth_reply = reply
    settings = login_settings(make_settings, login_relay, SMTP_PASSWORD)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    assert login_relay.logins == 1
    error = alerter.outbox.server_error or ""
    assert said in error and reply in error and "wrong user name" not in error, error
    wait = alerter.outbox.server_wait()
    assert wait is not None and (wait >= 3000) == held, wait
    check = await _smtp_check(settings)
    assert reply in check.detail, check


async def test_a_relay_offering_no_login_is_told_to_leave_the_user_name_empty(
    relay: SmtpSink, make_settings: Callable[..., Settings]
) -> None:
    """An IP-authorised relay offers no AUTH. Before: "does not offer STARTTLS: use security 'tls' (port 465)"."""
    settings = login_settings(make_settings, relay, SMTP_PASSWORD)
    check = await _smtp_check(settings)
    assert "offers no login (AUTH)" in check.detail and "smtp.username" in check.detail, check
    assert "does not offer STARTTLS" not in check.detail, check


async def test_a_relay_offering_login_only_after_starttls_is_told_to_use_starttls(
    sink: SmtpSink, make_settings: Callable[..., Settings], cert: tuple[Path, Path]
) -> None:
    """Postfix (smtpd_tls_auth_only) and aiosmtpd offer AUTH only after STARTTLS. Before: "does not offer STARTTLS"."""
    settings = login_settings(make_settings, sink, SMTP_PASSWORD)
    check = await _smtp_check(settings)
    assert "offers no login (AUTH)" in check.detail and "'starttls'" in check.detail, check
    assert "does not offer STARTTLS" not in check.detail, check


async def test_a_failed_tls_handshake_after_starttls_names_tls(
    make_settings: Callable[..., Settings], cert: tuple[Path, Path], server_tls: ssl.SSLContext
) -> None:
    """A relay speaking only TLS 1.1 (which this box's OpenSSL refuses). Before: "closed the connection half-way
    (Connection reset while upgrading transport); the mail is tried again", TLS not named."""
    server_tls.minimum_version = server_tls.maximum_version = ssl.TLSVersion.TLSv1_1
    old = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=server_tls)
    await old.start()
    try:
        settings = relay_settings(
            make_settings, old, username=SMTP_USER, password=SMTP_PASSWORD, security="starttls", ca_file=str(cert[0])
        )
        check = await _smtp_check(settings)
    finally:
        await old.stop()
    assert "TLS handshake" in check.detail and "half-way" not in check.detail, check


async def test_starttls_refused_for_now_is_said_in_words(
    sink: SmtpSink, make_settings: Callable[..., Settings]
) -> None:
    """RFC 3207 4: "454 4.7.0 TLS not available due to local problem". Before: shown as a Python tuple
    "(454, '4.7.0 …')"."""
    sink.starttls_reply = "454 4.7.0 TLS not available due to local problem"
    settings = relay_settings(make_settings, sink, username=SMTP_USER, password=SMTP_PASSWORD, security="starttls")
    check = await _smtp_check(settings)
    assert "cannot start TLS just now (454 4.7.0 TLS not available due to local problem)" in check.detail, check


async def test_a_persons_retry_tries_the_relay_at_once_after_a_refused_password(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter]
) -> None:
    """The relay's admin sets the account's password to the one the box has; a person's `--retry` (the documented
    "try again now") goes at once, not after the hour's hold. Before: the retried mail waited out the relay's
    backoff."""
    settings = login_settings(make_settings, login_relay, WRONG)
    alerter = make_alerter(settings)
    await two_alarms(alerter)
    login_relay.password = WRONG  # put right on the relay's side
    await alerter.retry_mail(1)
    assert await alerter.deliver_due() == 2
    assert login_relay.failed_logins == 1 and alerter.outbox.server_error is None


def secret_stored(settings: Settings, secret: str) -> list[str]:
    """The files of the data directory (the database, its log) that hold ``secret``."""
    data = settings.agent.data_dir
    return [p.name for p in data.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("end", ["stopped", "killed"])
async def test_a_refused_password_rests_across_restarts_of_the_agent(
    end: str, login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """A crash loop (systemd's RestartSec=5s), a box rebooting at every power blip, a technician restarting: each
    start tried the refused password again at once, and Microsoft 365 locks the account after 10 failed logins, so
    every later alarm was lost. The relay's rest now outlives the run, stopped or killed: restarted every 5 minutes,
    no start logs in within the hour, the mails stay pending and the status says when the relay is tried; an hour
    after the refusal, one login. The database keeps a hash of the refused settings, never the password."""
    settings = login_settings(make_settings, login_relay, WRONG)
    db_path = settings.agent.db_path
    alerter, db = await restarted(settings, db_path, clock)
    opened = [db]
    try:
        await two_alarms(alerter)
        assert login_relay.failed_logins == 1
        for _ in range(11):
            if end == "stopped":
                await alerter.stop()
                await db.close()
            clock.advance(5 * 60)
            alerter, db = await restarted(settings, db_path, clock)
            opened.append(db)
            assert await alerter.deliver_due() == 0
            assert login_relay.failed_logins == 1, f"a start {clock.now - T0:.0f} s after the refusal logged in"
            error = (await alerter.outbox_status()).server_error or ""
            assert "refused the login" in error and "smtp.password" in error, error
            assert f"not tried again before {shown_at(T0 + 3600, None)}" in error, error
        assert await db_rows(db_path, "SELECT state FROM alert_mails ORDER BY id") == [("pending",), ("pending",)]
        assert secret_stored(settings, WRONG) == []
        clock.advance(6 * 60)  # 61 minutes after the refusal
        alerter, db = await restarted(settings, db_path, clock)
        opened.append(db)
        assert await alerter.deliver_due() == 0
        assert login_relay.failed_logins == 2
    finally:
        for each in opened:
            await each.close()


async def test_a_restart_with_new_mail_settings_tries_the_relay_at_once(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """The technician puts the right password in the secrets file and restarts: the change may be the fix, so the
    new run logs in at once and the mails go (not an hour later). Before the fix the same, as every restart tried."""
    settings = login_settings(make_settings, login_relay, WRONG)
    db_path = settings.agent.db_path
    alerter, db = await restarted(settings, db_path, clock)
    try:
        await two_alarms(alerter)
        await alerter.stop()
    finally:
        await db.close()
    clock.advance(60)
    alerter, db = await restarted(with_password(settings, SMTP_PASSWORD), db_path, clock)
    try:
        assert await alerter.deliver_due() == 2
        assert login_relay.logins == 2 and login_relay.failed_logins == 1
        assert (await alerter.outbox_status()).server_error is None
    finally:
        await db.close()


async def test_a_test_mail_or_a_persons_retry_after_a_restart_tries_the_relay_at_once(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """The rest kept across restarts still gives way to a person: `edge alerts test` tries at once, and so does the
    start after `edge alerts outbox --retry` (given while the agent was stopped: it ends the stored rest)."""
    settings = login_settings(make_settings, login_relay, WRONG)
    db_path = settings.agent.db_path
    for step in ("refused", "test mail", "retry"):
        alerter, db = await restarted(settings, db_path, clock)
        try:
            if step == "refused":
                await two_alarms(alerter)
            elif step == "test mail":
                assert (await alerter.send_test()).state == MailState.PENDING
                assert login_relay.failed_logins == 2
                login_relay.password = WRONG  # put right on the relay's side
                await alerter.retry_mail(1)
            else:
                assert await alerter.deliver_due() == 3
                assert login_relay.failed_logins == 2 and login_relay.logins == 3
        finally:
            await db.close()
        clock.advance(60)


async def test_the_rest_across_a_restart_is_no_longer_than_an_hour_whatever_the_wall_clock_did(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """NTP sets a box that booted 8 h ahead just after the refusal, and the agent starts again after a reboot (the
    step is not known to the new run: since stop 83 one in the same boot is, and the rest moves with it): the rest,
    kept as a wall time, would seem to end 9 h from now. It ends at most an hour after the restart."""
    settings = login_settings(make_settings, login_relay, WRONG)
    db_path = settings.agent.db_path
    alerter, db = await restarted(settings, db_path, clock)
    try:
        await two_alarms(alerter)
    finally:
        await db.close()
    clock.step(-8 * 3600)
    clock.monotonic, clock.boot_id = 20.0, "boot-2"  # booted 20 s ago
    for minutes in (1, 59):
        clock.advance(minutes * 60)
        alerter, db = await restarted(settings, db_path, clock)
        try:
            await alerter.deliver_due()
        finally:
            await db.close()
    assert login_relay.failed_logins == 1, "tried within the hour after the restart"
    clock.advance(2 * 60)
    alerter, db = await restarted(settings, db_path, clock)
    try:
        await alerter.deliver_due()
    finally:
        await db.close()
    assert login_relay.failed_logins == 2, "not tried an hour after the restart"


async def test_the_restarted_agent_keeps_the_relays_rest_and_says_so(
    login_relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
) -> None:
    """The real agent, stopped and started again on the same data and config while the kitchen printer's alarm waits
    behind a refused password: no login at the start, GET /api/v1/alerts/outbox says the relay refused the login and
    when it is tried, and an hour after the refusal it is tried once."""
    settings = login_settings(make_settings, login_relay, WRONG)
    clock = SteppedClock()
    first = await make_agent(settings, clock=clock)
    await printer_down_with_a_ticket(first, printers)
    await wait_until(lambda: login_relay.failed_logins == 1, what="the alarm's login refused")
    await first.stop()
    second = await make_agent(settings, clock=clock)
    async with api_client(second) as api:

        async def outbox() -> dict[str, Any]:
            async with api.get("/api/v1/alerts/outbox") as response:
                return await response.json()

        body = await eventually(outbox, lambda b: b["server_error"], what="the relay's problem shown")
        assert login_relay.failed_logins == 1, "the restarted agent logged in at once"
        assert "refused the login" in body["server_error"] and "not tried again before" in body["server_error"], body
        assert body["pending"] >= 1 and body["dead"] == [], body
        clock.advance(61 * 60)
        # A new alarm wakes the mail loop: it slept the rest's real seconds, which no clock moved since shortens (the
        # test raced that sleep when the loop's first look ended before the clock moved), and it mails with the
        # rest over.
        printers["front"].set_offline(True)
        assert second.deps is not None
        await second.deps.intake.accept(make_order(2, prefix="front"))
        await wait_until(lambda: login_relay.failed_logins == 2, what="the relay tried an hour after the refusal")
    rows = await db_rows(settings.agent.db_path, "SELECT state FROM alert_mails")
    assert ("pending",) in rows and ("dead",) not in rows, rows


async def test_the_doctor_logs_in_during_the_rest_and_says_so(
    login_relay: SmtpSink, make_settings: Callable[..., Settings]
) -> None:
    """`edge doctor` is a person's check: it logs in at once, also while the agent's alert mail rests after a refused
    password, and says that it did and until when alert mail waits. Before: the refusal alone, nothing of the rest."""
    settings = login_settings(make_settings, login_relay, WRONG)
    alerter, db = await restarted(settings, settings.agent.db_path, SteppedClock())
    try:
        await two_alarms(alerter)
    finally:
        await db.close()
    check = await _smtp_check(settings)
    assert login_relay.failed_logins == 2
    assert "535 5.7.8" in check.detail and "this check logged in although alert mail rests" in check.detail, check
