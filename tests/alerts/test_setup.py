"""setup-notifications driven through a pseudo-terminal (pexpect) against a real SMTP server with STARTTLS and AUTH."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import stat
import sys
from pathlib import Path

import pexpect
from dotenv import dotenv_values

from edge.config import load_settings
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup-notifications.py"
OLD_ENV = "# keys of other parts stay\nEDGE_API_TOKEN='tok-0123456789abcdef'\nEDGE_SMTP_HOST=old.example.com\n"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "edge.toml"
    config.write_text(f'[agent]\nstore_id = "berlin-01"\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    (tmp_path / ".env").write_text(OLD_ENV, encoding="utf-8")
    return config


def drive(config: Path, port: int, ca_file: Path, password: str, sink: SmtpSink) -> tuple[str, int]:
    """Answers the wizard like a technician: Custom provider, the test server, STARTTLS with its CA."""
    child = pexpect.spawn(
        sys.executable,
        [str(SCRIPT), "--config", str(config)],
        env=clean_env(),
        encoding="utf-8",
        timeout=10,
        cwd=str(config.parent),
    )
    child.logfile_read = transcript = io.StringIO()
    child.expect("Choose 1-4: ")
    child.sendline("4")
    child.expect(r"SMTP server \[old.example.com\]: ")  # the current .env value is offered as default
    child.sendline("127.0.0.1")
    child.expect(r"Port \[587\]: ")
    child.sendline(str(port))
    child.expect(r"\[starttls\]: ")
    child.sendline("")
    child.expect(r"CA certificate file.*: ")
    child.sendline(str(ca_file))
    child.expect("User name.*: ")
    child.sendline(SMTP_USER)
    child.expect("Password \\(not shown\\): ")
    child.sendline(password)
    child.expect(r"Sender address \[edge@store.test\]: ")
    child.sendline("")
    child.expect("Recipients, comma-separated: ")
    child.sendline("chef@store.test, vize@store.test")
    child.expect(r"\(de/en\) \[de\]: ")
    child.sendline("en")
    if child.expect(["Did the test e-mail arrive.*: ", pexpect.EOF]) == 0:
        child.sendline("y" if sink.messages else "n")
        child.expect(pexpect.EOF)
    child.close()
    return transcript.getvalue(), child.exitstatus


async def test_setup_custom_provider_end_to_end(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """Custom provider at the test server: login checked, test mail received, .env written 0600 with old keys kept and a backup, database migrated."""
    config = write_config(tmp_path)
    output, status = await asyncio.wait_for(
        asyncio.to_thread(drive, config, sink.port, cert[0], SMTP_PASSWORD, sink), timeout=40
    )
    assert status == 0, output
    [mail] = sink.messages
    assert "TEST" in str(mail["Subject"]) and "berlin-01" in str(mail["Subject"])
    assert sorted(sink.envelopes[0].rcpt_tos) == ["chef@store.test", "vize@store.test"]
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text(encoding="utf-8").startswith(
        "# keys of other parts stay\nEDGE_API_TOKEN='tok-0123456789abcdef'\n"
    )
    values = dotenv_values(env_file)
    assert (
        values["EDGE_SMTP_HOST"] == "127.0.0.1"
        and values["EDGE_SMTP_PORT"] == str(sink.port)
        and values["EDGE_SMTP_SECURITY"] == "starttls"
    )
    assert (
        values["EDGE_SMTP_PASSWORD"] == SMTP_PASSWORD and values["EDGE_ALERT_TO"] == "chef@store.test,vize@store.test"
    )
    assert (tmp_path / ".env.bak").read_text(encoding="utf-8") == OLD_ENV
    assert stat.S_IMODE((tmp_path / ".env.bak").stat().st_mode) == 0o600
    settings = load_settings(config, environ={})
    assert (
        settings.smtp.host == "127.0.0.1"
        and settings.smtp.password.get() == SMTP_PASSWORD
        and settings.alerts.to == ["chef@store.test", "vize@store.test"]
    )
    assert settings.agent.language == "en" and settings.api.token.get() == "tok-0123456789abcdef"
    assert (tmp_path / "data" / "edge.db").exists()
    assert SMTP_PASSWORD not in output  # hidden input, never echoed


async def test_setup_wrong_password_writes_nothing(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """A wrong password ends the wizard with a plain message; .env is untouched and no backup appears."""
    config = write_config(tmp_path)
    output, status = await asyncio.wait_for(
        asyncio.to_thread(drive, config, sink.port, cert[0], "not-the-password", sink), timeout=40
    )
    assert status == 1
    assert "wrong user name or password" in output and "Nothing was written." in output
    assert (tmp_path / ".env").read_text(encoding="utf-8") == OLD_ENV
    assert not (tmp_path / ".env.bak").exists()
    assert sink.messages == [] and sink.failed_logins >= 1


async def test_setup_non_interactive_dry_run(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """Non-interactive with flags and EDGE_SMTP_PASSWORD from the environment; --dry-run tests and shows, writes nothing, hides the password."""
    config = write_config(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--config",
        str(config),
        "--non-interactive",
        "--dry-run",
        "--provider",
        "custom",
        "--host",
        "127.0.0.1",
        "--port",
        str(sink.port),
        "--security",
        "starttls",
        "--ca-file",
        str(cert[0]),
        "--username",
        SMTP_USER,
        "--to",
        "chef@store.test",
        env=clean_env(EDGE_SMTP_PASSWORD=SMTP_PASSWORD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=40)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "EDGE_SMTP_PASSWORD=********" in text and SMTP_PASSWORD not in text
    assert len(sink.messages) == 1
    assert (tmp_path / ".env").read_text(encoding="utf-8") == OLD_ENV


async def test_gmail_preset_asks_for_app_password_and_checks_arrival(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The Gmail preset fills smtp.gmail.com:587 STARTTLS and says an app password is needed; answering 'n' to "did it arrive" writes nothing."""
    from edge.alerts.setup import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # The preset's host is overridden to reach the test server; everything else comes from the preset and the answers.
    args = parser.parse_args(
        [
            "--env-file",
            str(tmp_path / ".env"),
            "--provider",
            "gmail",
            "--host",
            "127.0.0.1",
            "--port",
            str(sink.port),
            "--ca-file",
            str(cert[0]),
        ]
    )
    answers = iter([SMTP_USER, "", "chef@store.test", "de", "n"])
    said: list[str] = []
    status = await asyncio.wait_for(
        asyncio.to_thread(run, args, ask=lambda _: next(answers), ask_secret=lambda _: SMTP_PASSWORD, say=said.append),
        timeout=30,
    )
    assert status == 1
    assert "Gmail: 127.0.0.1, port %d, STARTTLS" % sink.port in said
    assert any("app password" in line for line in said)
    assert len(sink.messages) == 1 and not (tmp_path / ".env").exists()
