"""Addresses with umlauts: a German shop's internationalised domain (bäckerei-müller.de) gets its alert mail, an
address whose part before the @ is not ASCII is refused by the config check, and whatever one address does at RCPT
never stops the mail to the others."""

from __future__ import annotations

import asyncio
import dataclasses
import email.headerregistry
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import idna
import pytest
import structlog

from edge.app import Agent
from edge.cli import main
from edge.config import Settings
from edge.sim.smtp import SmtpSink
from tests.helpers import TOKEN, api_client, edge

IDN = "inhaber@bäckerei-müller.de"
IDN_ASCII = "inhaber@xn--bckerei-mller-bfb28a.de"  # its A-labels (RFC 5891), what the relay is given


@pytest.fixture(autouse=True)
def cli_logging() -> Iterator[None]:
    """The CLI configures structlog onto pytest's captured stderr; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()


def mail_settings(make_settings: Callable[..., Settings], relay: SmtpSink, to: list[str], sender: str) -> Settings:
    return make_settings(
        smtp={"host": "127.0.0.1", "port": relay.port, "security": "none", "sender": sender},
        alerts={"to": to, "group_wait_s": 0, "critical_group_wait_s": 0, "disk_free_min_mb": 0},
    )


def config_file(tmp_path: Path, settings: Settings, api_port: int) -> Path:
    """The technician's edge.toml for the same agent."""
    to = ", ".join(f'"{r}"' for r in settings.alerts.to)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "test-store"\ndata_dir = "{settings.agent.data_dir}"\n'
        f'[api]\nport = {api_port}\ntoken = "{TOKEN}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {settings.smtp.port}\nsecurity = "none"\n'
        f'sender = "{settings.smtp.sender}"\n[alerts]\nto = [{to}]\n',
        encoding="utf-8",
    )
    return config


def addresses(header: object) -> list[email.headerregistry.Address]:
    assert isinstance(header, email.headerregistry.AddressHeader)
    return list(header.addresses)


async def test_an_umlaut_domain_gets_the_test_mail_and_so_does_everyone_else(
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    relay: SmtpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """alerts.to = [inhaber@bäckerei-müller.de, ok@store.test] and a sender at an umlaut domain: `edge alerts test`
    exits 0 and the relay gets one mail for both, the domains as their A-labels in the envelope (MAIL FROM, RCPT TO)
    and in From/To, which decode back to what the technician wrote. Before: UnicodeEncodeError at RCPT, `edge alerts
    test` answered 500 and nobody got any alert mail."""
    settings = mail_settings(make_settings, relay, [IDN, "ok@store.test"], "edge@bäckerei-müller.de")
    agent = await make_agent(settings)
    config = config_file(tmp_path, settings, agent.port or 0)
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["alerts", "test", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out
    [envelope] = relay.envelopes
    assert sorted(envelope.rcpt_tos) == [IDN_ASCII, "ok@store.test"]
    assert envelope.mail_from == "edge@xn--bckerei-mller-bfb28a.de"
    [mail] = relay.messages
    raw = bytes(envelope.original_content or b"").decode("ascii")  # plain ASCII: no relay needs SMTPUTF8 for it
    assert "=?" not in raw.split("\r\n\r\n")[0].split("Subject:")[0], raw  # no encoded words inside an address
    [sender] = addresses(mail["From"])
    to = addresses(mail["To"])
    assert [a.addr_spec for a in to] == [IDN_ASCII, "ok@store.test"]
    assert f"{to[0].username}@{idna.decode(to[0].domain)}" == IDN
    assert idna.decode(sender.domain) == "bäckerei-müller.de"


async def test_an_address_no_relay_can_take_is_that_recipient_refused_and_the_others_get_the_mail(
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    relay: SmtpSink,
) -> None:
    """Defensively, an address that cannot go on the SMTP command line (an umlaut before the @ that reached the agent
    past the config check) is that recipient refused: the test mail answers 201 naming it, the other recipient gets
    the mail, no traceback is logged. Before: 500, and every alert stayed queued for everyone."""
    settings = mail_settings(make_settings, relay, ["ok@store.test"], "edge@store.test")
    settings = dataclasses.replace(
        settings, alerts=dataclasses.replace(settings.alerts, to=["jürgen@store.test", "ok@store.test"])
    )
    with structlog.testing.capture_logs() as logs:
        agent = await make_agent(settings)
        async with api_client(agent) as api:
            response = await api.post("/api/v1/alerts/test")
            answer = await response.json()
    assert response.status == 201, answer
    assert [e.rcpt_tos for e in relay.envelopes] == [["ok@store.test"]]
    assert "jürgen@store.test" in str(answer["mail"]), answer
    assert not [e for e in logs if e.get("exc_info") or e["event"] in ("request_failed", "alerts_failed")], logs


@pytest.mark.parametrize("key", ["to", "critical_to"])
async def test_the_config_check_refuses_an_umlaut_before_the_at_in_one_line_and_takes_an_umlaut_domain(
    relay: SmtpSink, tmp_path: Path, key: str
) -> None:
    """An umlaut in the part before the @ cannot go without SMTPUTF8, which relays rarely offer: `edge config check`
    exits 2 with one line naming the setting and the address; an umlaut domain passes. Before: both passed, and then
    no alert mail went to anyone."""

    def write(address: str) -> Path:
        config = tmp_path / "edge.toml"
        others = 'to = ["ok@store.test"]\n' if key == "critical_to" else ""
        config.write_text(
            f'[agent]\nstore_id = "berlin-01"\ndata_dir = "{tmp_path / "data"}"\n[api]\ntoken = "{TOKEN}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
            f'[alerts]\n{others}{key} = ["{address}", "vize@store.test"]\n',
            encoding="utf-8",
        )
        return config

    refused = await edge("config", "check", "--config", str(write("jürgen@store.test")))
    assert refused.returncode == 2, refused
    said = (refused.stdout + refused.stderr).strip().splitlines()
    assert len(said) == 1 and f"alerts.{key}" in said[0] and "jürgen@store.test" in said[0], said
    assert "Traceback" not in refused.stderr
    taken = await edge("config", "check", "--config", str(write(IDN)))
    assert taken.returncode == 0, taken


@pytest.mark.parametrize(("sender", "refused"), [("küche@store.test", True), ("Filiale <edge@bäckerei.de>", False)])
async def test_the_config_check_refuses_a_sender_with_an_umlaut_before_the_at(
    relay: SmtpSink, tmp_path: Path, sender: str, refused: bool
) -> None:
    """The same for `smtp.sender` (the wizard and the mailer refused it, the check took it and every mail then failed
    at the relay): one line naming `smtp.sender`, exit 2; an umlaut domain, with a display name, passes."""
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "berlin-01"\ndata_dir = "{tmp_path / "data"}"\n[api]\ntoken = "{TOKEN}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\nsender = "{sender}"\n'
        '[alerts]\nto = ["ok@store.test"]\n',
        encoding="utf-8",
    )
    checked = await edge("config", "check", "--config", str(config))
    said = (checked.stdout + checked.stderr).strip().splitlines()
    if refused:
        assert checked.returncode == 2 and len(said) == 1 and "smtp.sender" in said[0], said
    else:
        assert checked.returncode == 0, said
