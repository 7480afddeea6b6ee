"""The outbox against a slow (tarpitting) relay: critical mails go before warnings, and the mails due go in one SMTP
session, one transaction after another (RFC 5321 3.3), not a new connection each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import pytest

from edge.alerts.alerter import Alerter
from edge.config import Settings
from edge.events import JobDead, JobHeld
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import relay_settings
from tests.helpers import db_rows


@pytest.fixture
async def tarpit() -> AsyncIterator[SmtpSink]:
    """A relay that holds every answer to EHLO, MAIL and RCPT 50 ms."""
    server = SmtpSink()
    server.command_delay_s = 0.05
    await server.start()
    yield server
    await server.stop()


def held(n: int, printer: str) -> JobHeld:
    return JobHeld(job_id=n, order_id=f"h{n}", printer=printer, age_s=3600, order_number=f"H-{n}")


def printer_of(subject: str) -> str:
    return next(p for p in ("bar", "front", "terrace", "pizza", "kitchen") if p in subject)


async def test_a_critical_mail_goes_before_the_warnings_waiting_and_all_share_one_session(
    tarpit: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter]
) -> None:
    """Four warnings wait in the outbox and the first is being taken by the relay when a ticket goes dead
    (critical): the critical mail is the next one sent, on the same connection, then the other warnings, oldest
    first. Before: each mail on a connection of its own, the critical one after all four warnings (at the relay's
    3-second tarpit of the probe, 101 s after the fault against the 10 s the docs promise)."""
    settings = relay_settings(make_settings, tarpit)
    alerter = make_alerter(settings)
    for n, printer in enumerate(["bar", "front", "terrace", "pizza"]):
        alerter.on_event(held(n, printer))
    await alerter.step()  # four warnings in the outbox
    taking, go_on = asyncio.Event(), asyncio.Event()

    async def hold_the_first(message: EmailMessage) -> None:
        if not taking.is_set():
            taking.set()
            await go_on.wait()

    tarpit.data_reply = hold_the_first
    delivering = asyncio.create_task(alerter.deliver_due())
    await asyncio.wait_for(taking.wait(), 10)
    alerter.on_event(JobDead(job_id=9, order_id="o9", order_number="A-9", printer="kitchen", error="jam", attempts=5))
    await alerter.step()  # the critical mail joins the outbox while the relay holds the first warning
    go_on.set()
    assert await asyncio.wait_for(delivering, 30) == 5
    [session] = tarpit.sessions.values()
    assert [printer_of(s) for s in session] == ["bar", "kitchen", "front", "terrace", "pizza"]
    assert tarpit.connections == 1
    rows = await db_rows(settings.agent.db_path, "SELECT state, attempts FROM alert_mails")
    assert rows == [("sent", 1)] * 5


async def test_a_mail_refused_in_a_shared_session_is_reset_and_the_next_one_still_goes(
    tarpit: SmtpSink, make_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter]
) -> None:
    """A relay refusing one message for good after its body (554): the session
    goes on with RSET (RFC 5321 4.1.1.5) and the next mails are taken on the same connection."""
    tarpit.data_reply = lambda msg: "554 5.7.1 message refused" if "front" in str(msg["Subject"]) else None
    settings = relay_settings(make_settings, tarpit)
    alerter = make_alerter(settings)
    for n, printer in enumerate(["bar", "front", "terrace"]):
        alerter.on_event(held(n, printer))
    await alerter.step()
    assert await alerter.deliver_due() == 2
    assert [[printer_of(s) for s in session] for session in tarpit.sessions.values()] == [["bar", "terrace"]]
    assert tarpit.connections == 1
    rows = await db_rows(settings.agent.db_path, "SELECT state FROM alert_mails ORDER BY id")
    assert rows == [("sent",), ("dead",), ("sent",)]
