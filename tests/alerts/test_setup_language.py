"""setup-notifications and the store's language: mails follow agent.language (tickets and receipts too), so the wizard
offers the language the store has now and never changes it unasked."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pexpect
from dotenv import dotenv_values

from edge.config import load_settings
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.helpers import non_interactive
from tests.alerts.test_setup import OLD_ENV, ROOT, clean_env


def english_store(tmp_path: Path) -> Path:
    """An English store (agent.language = "en" in edge.toml) with install.sh's edge.env."""
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "london-01"\ndata_dir = "{tmp_path / "data"}"\nlanguage = "en"\n', encoding="utf-8"
    )
    (tmp_path / "edge.env").write_text(OLD_ENV, encoding="utf-8")
    (tmp_path / "edge.env").chmod(0o600)
    return config


async def edge_setup(*args: str, stdin: bytes) -> tuple[int, str]:
    """`python -m edge setup-notifications …` in a subprocess: (exit code, everything it printed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "setup-notifications",
        *args,
        env=clean_env(PYTHONPATH=str(ROOT)),  # this checkout's edge, whatever the venv installed
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=40)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_an_english_store_set_up_without_a_language_keeps_english(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The fleet form without --language at an English store: the test mail is English, edge.env gets no
    EDGE_AGENT_LANGUAGE, the agent still prints in English (before: EDGE_AGENT_LANGUAGE="de" written, the test mail
    German, agent.language "de" from then on)."""
    config = english_store(tmp_path)
    code, out = await edge_setup(*non_interactive(config, sink, cert[0]), stdin=f"{SMTP_PASSWORD}\n".encode())
    assert code == 0, out
    [mail] = sink.messages
    assert "Test message: e-mail alerts for store london-01 work." in mail.get_body(("plain",)).get_content()
    assert "EDGE_AGENT_LANGUAGE" not in dotenv_values(tmp_path / "edge.env", interpolate=False)
    assert load_settings(config, environ={}).agent.language == "en"


def _answer_up_to_the_language(child: pexpect.spawn, port: int, ca_file: Path) -> None:
    child.expect("Choose 1-4: ")
    child.sendline("4")
    for answer in ("127.0.0.1", str(port), "", str(ca_file), SMTP_USER):
        child.expect(r": $")
        child.sendline(answer)
    child.expect("Password \\(not shown\\): ")
    child.sendline(SMTP_PASSWORD)
    child.expect(r"Sender address .*: ")
    child.sendline("")
    child.expect("Recipients, comma-separated: ")
    child.sendline("chef@store.test")


def _wizard(config: Path, port: int, ca_file: Path, language_answer: str) -> tuple[str, int]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "edge", "setup-notifications", "--config", str(config)],
        env=clean_env(PYTHONPATH=str(ROOT)),
        encoding="utf-8",
        timeout=10,
        cwd=str(config.parent),
    )
    child.logfile_read = transcript = io.StringIO()
    _answer_up_to_the_language(child, port, ca_file)
    child.expect(r"\(de/en\) \[\w+\]: ")
    child.sendline(language_answer)
    child.expect("Did the test e-mail arrive.*: ")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    return transcript.getvalue(), child.exitstatus


async def test_the_language_question_offers_the_stores_language_and_says_it_is_the_tickets_too(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """Interactive, at an English store: the question names tickets and receipts and offers [en]; Enter keeps it and
    edge.env gets no language (before: "Language of the mails (de/en) [de]", Enter wrote EDGE_AGENT_LANGUAGE="de")."""
    config = english_store(tmp_path)
    output, status = await asyncio.wait_for(asyncio.to_thread(_wizard, config, sink.port, cert[0], ""), timeout=40)
    assert status == 0, output
    assert "Language of the store's tickets, receipts and these mails (de/en) [en]: " in output
    assert "EDGE_AGENT_LANGUAGE" not in (tmp_path / "edge.env").read_text(encoding="utf-8")
    assert load_settings(config, environ={}).agent.language == "en"


async def test_another_language_than_edge_toml_s_is_written_with_a_line_saying_tickets_change_too(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """Answering "de" at an English store is a deliberate change: written to edge.env, and the wizard says that it
    overrides edge.toml and switches tickets and receipts too (before: written without a word)."""
    config = english_store(tmp_path)
    output, status = await asyncio.wait_for(asyncio.to_thread(_wizard, config, sink.port, cert[0], "de"), timeout=40)
    assert status == 0, output
    env = tmp_path / "edge.env"
    assert dotenv_values(env, interpolate=False)["EDGE_AGENT_LANGUAGE"] == "de"
    assert (
        f'! EDGE_AGENT_LANGUAGE="de" in {env} overrides agent.language = "en" in {config}: tickets and receipts'
        " print in German from the agent's restart on"
    ) in output.replace("\r\n", "\n")
    assert load_settings(config, environ={}).agent.language == "de"


async def test_the_test_mail_is_headed_with_the_store_name_as_the_agents_alerts_are(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The test mail's subject and text carry agent.store_name as every alert's do: "[Bäckerei Müller (muenchen-01)]".
    Before, the wizard put the store id in for the name ("[muenchen-01 (muenchen-01)] TEST"), so an inbox rule tried
    on the test mail missed the real alerts (the i18n82 probe, F4)."""
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nstore_id = "muenchen-01"\nstore_name = "Bäckerei Müller"\ndata_dir = "{tmp_path / "data"}"\n',
        encoding="utf-8",
    )
    (tmp_path / "edge.env").write_text(OLD_ENV, encoding="utf-8")
    (tmp_path / "edge.env").chmod(0o600)
    code, out = await edge_setup(*non_interactive(config, sink, cert[0]), stdin=f"{SMTP_PASSWORD}\n".encode())
    assert code == 0, out
    [mail] = sink.messages
    assert str(mail["Subject"]).startswith("[Bäckerei Müller (muenchen-01)] TEST"), mail["Subject"]
    assert "der Filiale Bäckerei Müller funktioniert" in mail.get_body(("plain",)).get_content()
