"""Mails that go straight to the relay, without the outbox (agent down from the health-check timer, the storage alert
while the database refuses writes): a recipient the relay defers (450 greylisting, RFC 5321 4.2.5) is tried again,
and the log says who has it and who does not yet."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from edge.alerts.agent_down import AgentDownAlert
from edge.alerts.alerter import Alerter
from edge.config import Settings
from edge.errors import StoreError
from edge.events import StorageProblem
from edge.sim.smtp import SmtpSink
from tests.alerts.helpers import run

# postgrey's answer to a (sender, recipient) it has not seen before
GREYLISTED = "450 4.7.1 <area@store.test>: Recipient address rejected: Greylisted, try again in 60s"


def settings_for(make_settings: Callable[..., Settings], relay: SmtpSink) -> Settings:
    settings = make_settings(
        smtp={"host": "127.0.0.1", "port": relay.port, "security": "none", "sender": "edge@store.test"},
        alerts={
            "to": ["chef@store.test"],
            "critical_to": ["area@store.test"],
            "critical_group_wait_s": 0,
            "disk_free_min_mb": 0,
        },
        agent={"language": "en"},
    )
    settings.agent.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def envelopes(relay: SmtpSink) -> list[tuple[str, list[str]]]:
    return [
        (str(m["Subject"]).split("] ", 1)[1], list(e.rcpt_tos))
        for m, e in zip(relay.messages, relay.envelopes, strict=True)
    ]


async def test_agent_down_tries_a_greylisted_recipient_again_at_the_next_run_and_logs_the_truth(
    relay: SmtpSink, make_settings: Callable[..., Settings]
) -> None:
    """Before: the log said recipients=2 though the area manager's address was deferred; nobody tried it again, and
    the area manager got only the RESOLVED mail."""
    relay.rcpt_replies["area@store.test"] = GREYLISTED
    down = AgentDownAlert(settings_for(make_settings, relay))
    with capture_logs() as logs:
        for _ in range(2):  # two failed checks in a row: the alert goes
            await down.observe(False, "agent: connection refused")
    [mailed] = [e for e in logs if e["event"] == "health_alert_mailed"]
    assert mailed["recipients"] == 1 and mailed["deferred"] == ["area@store.test"], mailed
    del relay.rcpt_replies["area@store.test"]  # the greylist lets it pass now
    await down.observe(False, "agent: connection refused")  # the timer's next run
    await down.observe(False, "agent: connection refused")  # and the one after: nothing more to send
    await down.observe(True, "ready")
    assert envelopes(relay) == [
        ("ALERT: edge agent is not running", ["chef@store.test"]),
        ("ALERT: edge agent is not running", ["area@store.test"]),
        ("RESOLVED: edge agent is back", ["chef@store.test", "area@store.test"]),
    ]


async def test_the_storage_alert_mailed_directly_reaches_a_greylisted_recipient_later(
    relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database refuses writes (as a full disk makes it: StoreError from the alert tables), so the storage alert
    goes straight to the relay. Before: the greylisted area manager was dropped and never tried again."""
    relay.rcpt_replies["area@store.test"] = GREYLISTED
    alerter = make_alerter(settings_for(make_settings, relay))

    async def refused(*args: object) -> None:
        raise StoreError("database or disk is full")

    monkeypatch.setattr(alerter._store, "apply", refused)
    alerter.on_event(StorageProblem(detail="database or disk is full"))
    with capture_logs() as logs, pytest.raises(StoreError):
        await run(alerter)
    [partial] = [e for e in logs if e["event"] == "alert_mail_deferred"]
    assert partial["deferred"] == ["area@store.test"]
    del relay.rcpt_replies["area@store.test"]
    for _ in range(2):  # the alert loop's next rounds, the database still full
        with pytest.raises(StoreError):
            await run(alerter)
    assert [rcpts for _, rcpts in envelopes(relay)] == [["chef@store.test"], ["area@store.test"]]


async def test_agent_down_mailed_to_a_relay_that_never_answers_after_the_message_goes_once(
    relay: SmtpSink, make_settings: Callable[..., Settings]
) -> None:
    """The relay takes the whole mail, then the line is lost before its 250, every time (a firewall or NAT cutting
    it while the relay checks the mail; RFC 1047): the mail most likely arrived, and the timer has no outbox to count
    its tries, so it is taken as sent, said in the log. Before (the ops72 probe's finding, left by the outbox's fix):
    the same ALERT at every timer run while the agent stayed down."""
    relay.drops_after_body = 100
    down = AgentDownAlert(settings_for(make_settings, relay))
    with capture_logs() as logs:
        for _ in range(5):  # two failed checks send the alert; three more timer runs, the agent still down
            await down.observe(False, "agent: connection refused")
    assert [subject for subject, _ in envelopes(relay)] == ["ALERT: edge agent is not running"]
    assert [e["event"] for e in logs if e["event"].startswith("health_alert_m")] == ["health_alert_mailed"]
    assert any(e["event"] == "alert_mail_unconfirmed" for e in logs), logs


async def test_the_storage_alert_mailed_directly_to_a_relay_that_never_answers_after_the_message_goes_once(
    relay: SmtpSink,
    make_settings: Callable[..., Settings],
    make_alerter: Callable[..., Alerter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, for the storage alert mailed while the database refuses writes: once, not at every round."""
    relay.drops_after_body = 100
    alerter = make_alerter(settings_for(make_settings, relay))

    async def refused(*args: object) -> None:
        raise StoreError("database or disk is full")

    monkeypatch.setattr(alerter._store, "apply", refused)
    alerter.on_event(StorageProblem(detail="database or disk is full"))
    for _ in range(3):  # the alert loop's rounds, the database still full
        with pytest.raises(StoreError):
            await run(alerter)
    assert len(relay.messages) == 1
