"""`edge alerts test` and `edge alerts outbox` use the outbox: the running agent's, or right here without one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import structlog

from edge.app import Agent
from edge.cli import main
from edge.config import Settings
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.helpers import fast, printer_down_with_a_ticket
from tests.helpers import TOKEN, db_rows, eventually

MakeAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture(autouse=True)
def cli_logging() -> Iterator[None]:
    """The CLI configures structlog onto pytest's captured stderr; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()


def cli_config(tmp_path: Path, settings: Settings, *, api_port: int, cert: Path) -> Path:
    """The technician's edge.toml for the same data directory (password in edge.env, as setup-notifications writes
    it)."""
    to = ", ".join(f'"{r}"' for r in settings.alerts.to)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "test-store"\ndata_dir = "{settings.agent.data_dir}"\n'
        f'[api]\nport = {api_port}\ntoken = "{TOKEN}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {settings.smtp.port}\nusername = "{SMTP_USER}"\nca_file = "{cert}"\n'
        f'sender = "edge@store.test"\n[alerts]\nto = [{to}]\n',
        encoding="utf-8",
    )
    secrets = tmp_path / "edge.env"
    secrets.write_text(f'EDGE_SMTP_PASSWORD="{SMTP_PASSWORD}"\n', encoding="utf-8")
    secrets.chmod(0o600)
    return config


async def edge(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_alerts_test_goes_through_the_running_agents_outbox(
    make_agent: MakeAgent,
    alert_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    cert: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an old address the relay refuses, `edge alerts test` does not look verified: the test mail goes through
    the agent's outbox, reports the refused address (exit 1) and the dead-lettered alert waiting for a person."""
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    sink.rcpt_replies["old@store.test"] = "550 5.1.1 user unknown"
    settings = fast(alert_settings, to=["chef@store.test", "old@store.test"])
    agent = await make_agent(settings)
    await printer_down_with_a_ticket(agent, printers)
    db = settings.agent.db_path
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM alert_mails WHERE state = 'dead'"), lambda rows: rows[0][0], 8, "dead"
    )
    config = cli_config(tmp_path, settings, api_port=agent.port or 0, cert=cert[0])
    capsys.readouterr()
    assert await edge("alerts", "test", "--config", str(config)) == 1
    out = capsys.readouterr().out
    assert "NOT sent to everyone" in out and "refused for old@store.test: 550 5.1.1 user unknown" in out
    assert "2 dead-lettered" in out  # the alert and the test mail itself
    assert await db_rows(db, "SELECT state, delivered FROM alert_mails WHERE kind = 'test'") == [
        ("dead", '["chef@store.test"]')
    ]
    [(dead_id,)] = await db_rows(db, "SELECT id FROM alert_mails WHERE kind != 'test'")
    assert await edge("alerts", "outbox", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert f"#{dead_id} " in out and "dead-lettered: 2" in out
    assert await edge("alerts", "outbox", "--discard", str(dead_id), "--config", str(config)) == 0
    assert await edge("alerts", "outbox", "--retry", str(dead_id), "--config", str(config)) == 1
    assert "only a dead or waiting mail can be retried" in capsys.readouterr().err
    assert await db_rows(db, "SELECT state FROM alert_mails WHERE id = ?", dead_id) == [("discarded",)]


async def test_alerts_test_without_an_agent_uses_the_outbox_here(
    alert_settings: Callable[..., Settings],
    sink: SmtpSink,
    cert: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no agent running, `edge alerts test` writes the test mail to the same outbox and delivers it itself; a
    retry of an unknown mail says so."""
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    settings = alert_settings()
    config = cli_config(tmp_path, settings, api_port=9, cert=cert[0])
    assert await edge("alerts", "test", "--config", str(config)) == 0
    assert "sent to chef@store.test, vize@store.test" in capsys.readouterr().out
    assert await db_rows(settings.agent.db_path, "SELECT kind, state FROM alert_mails") == [("test", "sent")]
    assert len(sink.messages) == 1
    assert await edge("alerts", "outbox", "--retry", "77", "--config", str(config)) == 1
    assert "alert mail 77 does not exist" in capsys.readouterr().err


async def test_alerts_test_after_a_refused_password_tries_at_once_and_says_when_alert_mail_does(
    alert_settings: Callable[..., Settings],
    sink: SmtpSink,
    cert: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay refuses the store's password for good (535 5.7.8), so alert mail rests an hour. A technician's
    `edge alerts test` is a person asking: it logs in at once, also during that rest, and says so, with when alert
    mail is tried again. Before: "it stays in the outbox and is tried again like every alert", nothing of the rest."""
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    sink.auth_reply = "535 5.7.8 Authentication credentials invalid"
    settings = alert_settings()
    config = cli_config(tmp_path, settings, api_port=9, cert=cert[0])
    for logins in (1, 2):  # the second one within the rest the first began
        assert await edge("alerts", "test", "--config", str(config)) == 1
        out = capsys.readouterr().out
        assert sink.logins == logins
        assert "535 5.7.8" in out and "not tried again before" in out and "a test mail" in out, out


async def test_alerts_outbox_names_a_mail_taken_as_delivered_without_the_relays_answer(
    make_agent: MakeAgent,
    alert_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    cert: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay takes the printer's alarm whole and drops the line before its answer, twice: the mail is taken as
    delivered (sent, not sent again). A technician asking "did the manager get it?" runs `edge alerts outbox`, which
    names it as unconfirmed by the relay with its Message-ID, through the running agent and without one. Before: only
    "waiting: 0", "dead-lettered: 0", as if every mail had surely gone out."""
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    sink.drops_after_body = 1000  # every message
    settings = fast(alert_settings)
    agent = await make_agent(settings)
    await printer_down_with_a_ticket(agent, printers)
    db = settings.agent.db_path
    [(mail_id, message_id)] = await eventually(
        lambda: db_rows(db, "SELECT id, message_id FROM alert_mails WHERE state = 'sent' AND unanswered = 2"),
        lambda rows: rows,
        8,
        "the alarm taken as delivered",
    )
    config = cli_config(tmp_path, settings, api_port=agent.port or 0, cert=cert[0])
    for how in ("through the agent", "without an agent"):
        capsys.readouterr()
        assert await edge("alerts", "outbox", "--config", str(config)) == 0
        out = capsys.readouterr().out
        assert "taken as delivered, unconfirmed by the relay: 1" in out, f"{how}:\n{out}"
        listed = out.split("taken as delivered, unconfirmed by the relay: 1", 1)[1]
        assert f"#{mail_id} " in listed and message_id in listed and "twice without answering" in listed, listed
        await agent.stop()
    assert len(sink.messages) == 2  # the one resend, no more
