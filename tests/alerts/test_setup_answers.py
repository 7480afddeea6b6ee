"""setup-notifications typed as a technician types it (pexpect on a pseudo-terminal): an answer the wizard cannot use
is asked again with the reason, the security offered follows the port, and a port that speaks TLS at once is named
as such."""

from __future__ import annotations

import asyncio
import io
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest
from dotenv import dotenv_values

from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.test_setup import OLD_ENV, SCRIPT, clean_env, write_config

Answers = list[tuple[str, str]]


def wizard(config: Path, answers: Answers, timeout: float = 10) -> tuple[str, int]:
    """Each (prompt pattern, reply) in turn, then the end: (everything printed, exit code)."""
    child = pexpect.spawn(
        sys.executable,
        [str(SCRIPT), "--config", str(config)],
        env=clean_env(),
        encoding="utf-8",
        timeout=timeout,
        cwd=str(config.parent),
    )
    child.logfile_read = transcript = io.StringIO()
    try:
        for prompt, reply in answers:
            child.expect(prompt)
            child.sendline(reply)
        child.expect(pexpect.EOF)
    except pexpect.TIMEOUT as err:  # which prompt never came, and what was said instead
        raise AssertionError(f"{err.args[0].splitlines()[0]}\n{transcript.getvalue()}") from None
    child.close()
    return transcript.getvalue(), child.exitstatus


def custom(
    port: int | str, ca_file: Path, *, security: str = "", sender: str = "", to: str = "chef@store.test"
) -> Answers:
    """Custom provider at the test server: every answer up to the arrival question."""
    return [
        ("Choose 1-4: ", "4"),
        (r"SMTP server.*: ", "127.0.0.1"),
        (r"Port \[587\]: ", str(port)),
        (r"Security: .*: ", security),
        (r"CA certificate file.*: ", str(ca_file)),
        ("User name.*: ", SMTP_USER),
        (r"Password \(not shown\): ", SMTP_PASSWORD),
        (r"Sender address.*: ", sender),
        ("Recipients, comma-separated: ", to),
        (r"\(de/en\) \[de\]: ", ""),
    ]


ARRIVED = ("Did the test e-mail arrive.*: ", "y")


def replace(answers: Answers, prompt: str, *new: tuple[str, str]) -> Answers:
    """The answers with the one at ``prompt`` replaced by ``new`` (several: asked again)."""
    at = next(n for n, (p, _) in enumerate(answers) if p.startswith(prompt))
    return [*answers[:at], *new, *answers[at + 1 :]]


async def run(config: Path, answers: Answers, wait_s: float = 10) -> tuple[str, int]:
    return await asyncio.wait_for(asyncio.to_thread(wizard, config, answers, wait_s), timeout=wait_s + 30)


def written(tmp_path: Path) -> dict[str, str | None]:
    return dotenv_values(tmp_path / "edge.env", interpolate=False)


@pytest.fixture
async def implicit_tls(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpSink]:
    """A relay that speaks TLS from the first byte (port 465 style), with AUTH."""
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=server_tls, implicit_tls=True)
    await server.start()
    yield server
    await server.stop()


async def test_an_umlaut_before_the_at_is_asked_again_and_an_umlaut_domain_gets_the_test_mail(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """jürgen@store.test is asked again with the reason (SMTPUTF8); inhaber@bäckerei-müller.de then gets the test
    mail under its A-labels and is written as typed. Before: a raw traceback after "connection and login work"."""
    config = write_config(tmp_path)
    answers = replace(
        custom(sink.port, cert[0]),
        "Recipients",
        ("Recipients, comma-separated: ", "jürgen@store.test, ok@store.test"),
        ("Recipients, comma-separated: ", "inhaber@bäckerei-müller.de, ok@store.test"),
    )
    output, status = await run(config, [*answers, ARRIVED])
    assert status == 0, output
    assert "'jürgen@store.test': letters like ä, ö, ü or ß before the @ need SMTPUTF8" in output
    assert "Traceback" not in output
    [envelope] = sink.envelopes
    assert sorted(envelope.rcpt_tos) == ["inhaber@xn--bckerei-mller-bfb28a.de", "ok@store.test"]
    assert written(tmp_path)["EDGE_ALERT_TO"] == "inhaber@bäckerei-müller.de,ok@store.test"


async def test_port_465_offers_tls_and_enter_takes_it(
    server_tls: ssl.SSLContext, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """Port 465 typed, Enter at the security question: the offer is [tls] and the test mail goes. Before: [starttls]
    was offered, and Enter cost 16 s and "wrong port, or a firewall drops the connection"."""
    relay = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=server_tls, implicit_tls=True, port=465)
    try:
        await relay.start()
    except OSError as err:  # not root, or the port taken on this machine
        pytest.skip(f"cannot listen on 127.0.0.1:465: {err}")
    try:
        config = write_config(tmp_path)
        answers = replace(custom(465, cert[0]), "Security", (r"Security: .* \[tls\]: ", ""))
        output, status = await run(config, [*answers, ARRIVED])
    finally:
        await relay.stop()
    assert status == 0, output
    assert len(relay.messages) == 1 and written(tmp_path)["EDGE_SMTP_SECURITY"] == "tls"


async def test_starttls_at_a_port_that_speaks_tls_at_once_says_choose_tls(
    implicit_tls: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """security starttls at a relay that speaks TLS at once: the wait for its greeting ends in what to choose, as the
    reverse mix-up's "TLS mismatch" does. Before: "wrong port, or a firewall drops the connection"."""
    config = write_config(tmp_path)
    output, status = await run(config, custom(implicit_tls.port, cert[0], security="starttls"), wait_s=40)
    assert status == 1, output
    assert f"port {implicit_tls.port} speaks TLS at once: choose security tls" in output, output
    assert "firewall" not in output
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


async def test_security_is_read_in_any_case_ssl_means_tls_and_a_typo_is_asked_again(
    sink: SmtpSink, implicit_tls: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """ "startls" is asked again (that one question), "STARTTLS" is starttls; "ssl" is tls. Before: either ended the
    whole wizard, exit 2, every answer to be typed again."""
    config = write_config(tmp_path)
    answers = replace(
        custom(sink.port, cert[0]),
        "Security",
        (r"Security: .*: ", "startls"),
        (r"Security: .*: ", "STARTTLS"),
    )
    output, status = await run(config, [*answers, ARRIVED])
    assert status == 0, output
    assert "type starttls, tls or none" in output
    assert written(tmp_path)["EDGE_SMTP_SECURITY"] == "starttls"
    other = tmp_path / "ssl"
    other.mkdir()
    output, status = await run(write_config(other), [*custom(implicit_tls.port, cert[0], security="ssl"), ARRIVED])
    assert status == 0, output
    assert written(other)["EDGE_SMTP_SECURITY"] == "tls" and len(implicit_tls.messages) == 1


async def test_a_sender_without_at_is_asked_again(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """A sender typed without its @ is asked again with the reason; Enter then takes the user name. Before: written
    as typed, exit 0 (a strict relay refuses it later)."""
    config = write_config(tmp_path)
    answers = replace(
        custom(sink.port, cert[0]),
        "Sender",
        (r"Sender address.*: ", "edge.store.test"),
        (rf"Sender address \[{SMTP_USER}\]: ", ""),
    )
    output, status = await run(config, [*answers, ARRIVED])
    assert status == 0, output
    assert "'edge.store.test' is not an e-mail address" in output
    assert written(tmp_path)["EDGE_SMTP_FROM"] == SMTP_USER


async def test_a_wrong_password_is_asked_again(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """A password the server refuses is asked again (not every answer); the right one then goes on. Before: the
    wizard ended, exit 1."""
    config = write_config(tmp_path)
    answers = replace(custom(sink.port, cert[0]), "Password", (r"Password \(not shown\): ", "not-the-password"))
    answers += [(r"Password \(not shown\): ", SMTP_PASSWORD), ARRIVED]
    output, status = await run(config, answers)
    assert status == 0, output
    assert "535 5.7.8" in output and "smtp.password" in output and output.count("Password (not shown): ") == 2
    assert len(sink.messages) == 1 and written(tmp_path)["EDGE_SMTP_PASSWORD"] == SMTP_PASSWORD


async def test_a_temporary_login_failure_is_not_asked_as_a_wrong_password(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The provider's login backend is down: "454 4.7.0 Temporary authentication failure" (RFC 4954 6). Said with the
    relay's words, the password is not asked again, nothing written. Before: "wrong user name or password" and the
    technician retyped a correct password three times (the mail probe, finding 4)."""
    sink.auth_reply = "454 4.7.0 Temporary authentication failure"
    config = write_config(tmp_path)
    output, status = await run(config, custom(sink.port, cert[0]))
    assert status == 1, output
    assert "454 4.7.0 Temporary authentication failure" in output and "wrong user name" not in output, output
    assert output.count("Password (not shown): ") == 1 and sink.logins == 1 and "Nothing was written." in output


async def test_a_recipient_the_relay_refuses_is_named_and_nothing_is_written(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A mistyped recipient the relay refuses at RCPT (550 user unknown) is named with the relay's reason and nothing
    is written: the manager would never get an alert there. Before: "✓ test e-mail accepted by … for chef@…, chfe@…"
    (both listed as accepted), then the question whether it arrived."""
    sink.rcpt_replies = {"chfe@store.test": "550 5.1.1 <chfe@store.test>: Recipient address rejected: User unknown"}
    config = write_config(tmp_path)
    output, status = await run(config, custom(sink.port, cert[0], to="chef@store.test, chfe@store.test"))
    assert status == 1, output
    assert "chfe@store.test" in output and "User unknown" in output, output
    assert "for chef@store.test, chfe@store.test" not in output, output
    assert "Nothing was written." in output and "Did the test e-mail arrive" not in output
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV
    [envelope] = sink.envelopes  # the one the relay took still went out
    assert envelope.rcpt_tos == ["chef@store.test"]
