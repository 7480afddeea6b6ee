"""SMTP delivery against aiosmtpd: STARTTLS, implicit TLS and plain; verified certificates; failures in plain words."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import ssl
import threading
from pathlib import Path

import pytest

from edge.alerts.mailer import Mailer
from edge.config import Secret, SmtpSettings
from edge.errors import AlertError
from edge.sim.smtp import SmtpSink
from edge.store.alerts import Mail
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER, FakeClock
from tests.helpers import issue_server_cert, make_ca

MAIL = Mail(recipients=["chef@store.test"], subject="Grüße €", text="Hallo ä\n", html="<p>Hallo ä</p>")


def smtp(sink: SmtpSink, cert: tuple[Path, Path], **kw: object) -> SmtpSettings:
    base = SmtpSettings(
        host="127.0.0.1",
        port=sink.port,
        security="starttls",
        username=SMTP_USER,
        password=Secret(SMTP_PASSWORD),
        sender="edge@store.test",
        ca_file=cert[0],
        timeout_s=3.0,
    )
    return dataclasses.replace(base, **kw)


async def test_starttls_login_and_send(sink: SmtpSink, cert: tuple[Path, Path]) -> None:
    """STARTTLS with a certificate trusted through ca_file, then login: the mail arrives with text and HTML parts."""
    await Mailer(smtp(sink, cert)).send(MAIL)
    [msg] = await sink.wait_for(1)
    assert str(msg["Subject"]).strip() == "Grüße €" and msg["From"] == "edge@store.test"
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo ä"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hallo ä</p>"


@pytest.mark.parametrize(
    "subject",
    [
        # folded before an encoded word, Python's folder doubled the space there: "Bon  zurückgehalten"
        "[Filiale Mitte (test-store)] BEHOBEN: Bestellung A-1001: Bon zurückgehalten (Drucker pass)",
        # two encoded words on one folded line, it dropped the space between them: "fürLänge"
        "[Filiale Mitte (test-store)] BEHOBEN: Bestellung A-1001: Bon zurückgehalten (Drucker pass) für Länge",
        "[Bäckerei Müller Süd (Filiale Nord-Ost, Straße am Bahnhof)] STÖRUNG (kritisch): Drucker Küche aus",
        # plain ASCII, too long for one line: Python's folder broke right after "Subject:", and a parser read the
        # subject with a leading space (the mail probe, s04; before stop 62)
        "[Probe Pizza (probe-store)] ALERT (critical): Printer kitchen unreachable",
        "[Probe Pizza (probe-store)] RESOLVED: Order A-1001: ticket held back (printer pass) for its age",
    ],
)
async def test_a_long_subject_with_umlauts_arrives_as_it_was_written(
    sink: SmtpSink, cert: tuple[Path, Path], subject: str
) -> None:
    """The manager reads the subject the agent wrote, word for word: an alert's subject is folded into encoded words
    (RFC 2047) that decode to it exactly. Before, Python's own folding of a long subject with umlauts doubled a space
    at a fold, or dropped the one between two encoded words."""
    await Mailer(smtp(sink, cert)).send(dataclasses.replace(MAIL, subject=subject))
    [msg] = await sink.wait_for(1)
    assert str(msg["Subject"]) == subject
    head = bytes(sink.envelopes[0].content).split(b"\r\n\r\n")[0]  # as it came over the wire
    assert max(len(line) for line in head.split(b"\r\n")) <= 78, head  # RFC 5322's line length, encoded words of 75


async def test_the_trusted_certificates_are_read_once_and_off_the_event_loop(
    sink: SmtpSink, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the system's CA files takes ~20 ms of CPU and disk here (more on a box's SD card): a mailer does it
    once, in a worker thread, not on the event loop for every mail while orders come in."""
    loop_thread = threading.get_ident()
    loads: list[bool] = []  # for each load of the system's CAs: was it on the event loop's thread?
    real = ssl.SSLContext.load_default_certs

    def recording(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(threading.get_ident() == loop_thread)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", recording)
    mailer = Mailer(smtp(sink, cert))
    for _ in range(3):
        await mailer.send(MAIL)
    assert len(await sink.wait_for(3)) == 3
    assert loads == [False]


async def test_implicit_tls(server_tls: ssl.SSLContext, cert: tuple[Path, Path]) -> None:
    """security = tls speaks TLS from the first byte (port 465 style)."""
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=server_tls, implicit_tls=True)
    await server.start()
    try:
        await Mailer(smtp(server, cert, security="tls")).send(MAIL)
        assert len(await server.wait_for(1)) == 1
    finally:
        await server.stop()


async def test_plain_relay_without_auth(cert: tuple[Path, Path]) -> None:
    """security = none and no user: a local relay; nothing is upgraded behind the operator's back."""
    server = SmtpSink()
    await server.start()
    try:
        await Mailer(smtp(server, cert, security="none", username="")).send(MAIL)
        assert len(await server.wait_for(1)) == 1
    finally:
        await server.stop()


@pytest.mark.parametrize(("back_s", "floor_kept"), [(3600, True), (2 * 86400, False)], ids=["hour", "two-days"])
async def test_a_mail_after_a_step_back_is_dated_no_earlier_than_the_one_before_unless_that_was_days_ahead(
    cert: tuple[Path, Path], back_s: float, floor_kept: bool
) -> None:
    """NTP sets the clock back an hour (a hardware clock kept in local time): the next mail is dated as the last, so
    it does not sort under it. Set back two days, the last mail's date was that wrong: the next is dated now, or every
    mail would be dated then until that day came (a box booted years ahead)."""
    server = SmtpSink()
    await server.start()
    clock = FakeClock()
    try:
        mailer = Mailer(smtp(server, cert, security="none", username=""), clock=clock)
        await mailer.send(MAIL)
        clock.step(-back_s)
        await mailer.send(MAIL)
        first, second = (email.utils.parsedate_to_datetime(m["Date"]).timestamp() for m in await server.wait_for(2))
    finally:
        await server.stop()
    assert second == (first if floor_kept else first - back_s), (first, second)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"password": "wrong"}, "check smtp.username and smtp.password"),
        ({"ca_file": None}, "could not be verified"),
        ({"security": "tls"}, "TLS mismatch"),
        ({"port": 1}, "cannot reach 127.0.0.1:1"),
    ],
    ids=["wrong-password", "untrusted-certificate", "tls-mismatch", "unreachable"],
)
async def test_failures_explained(
    sink: SmtpSink, cert: tuple[Path, Path], change: dict[str, object], words: str
) -> None:
    """Each failure a technician meets on site comes back as one plain sentence, and nothing is sent."""
    if "password" in change:
        change = {"password": Secret(str(change["password"]))}
    with pytest.raises(AlertError) as err:
        await Mailer(smtp(sink, cert, **change)).check()
    assert words in str(err.value)
    assert SMTP_PASSWORD not in str(err.value)
    assert sink.messages == []


async def test_timeout_explained(cert: tuple[Path, Path]) -> None:
    """A server that accepts the connection but never greets is a timeout, named as such."""
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SmtpSettings(host="127.0.0.1", port=port, security="starttls", sender="a@b.test", timeout_s=0.5)
    try:
        with pytest.raises(AlertError, match=r"no answer from 127\.0\.0\.1"):
            await Mailer(settings).check()
    finally:
        server.close()


async def delivered_over_tls(server_cert: tuple[Path, Path], ca_file: Path) -> int:
    """Mails sent to a STARTTLS relay showing ``server_cert``, with smtp.ca_file = ``ca_file``."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*server_cert)
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=tls)
    await server.start()
    try:
        await Mailer(smtp(server, (ca_file, ca_file))).send(MAIL)
        return len(await server.wait_for(1))
    finally:
        await server.stop()


async def test_ca_file_adds_to_the_system_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp.ca_file is trusted in addition to the system's CAs: a relay with a publicly trusted certificate still
    verifies when a company CA file is configured (the docs say "plus"), and the company's own relay does too."""
    # openssl runs in threads: waiting for it on the loop would stall it
    public_ca, company_ca = (
        await asyncio.to_thread(make_ca, tmp_path, "public"),
        await asyncio.to_thread(make_ca, tmp_path, "company"),
    )
    relay_cert = await asyncio.to_thread(issue_server_cert, tmp_path, public_ca, "relay")
    company_cert = await asyncio.to_thread(issue_server_cert, tmp_path, company_ca, "company-relay")
    monkeypatch.setenv("SSL_CERT_FILE", str(public_ca[0]))  # OpenSSL's system CA bundle, here the "public" CA
    assert await delivered_over_tls(relay_cert, company_ca[0]) == 1
    assert await delivered_over_tls(company_cert, company_ca[0]) == 1


async def test_mailer_never_logs_in_unencrypted_to_another_host(sink: SmtpSink) -> None:
    """Even with settings that skipped the config check, the mailer refuses a login over security = none to a host
    that is not this box before it opens a connection: the password never crosses the network in clear."""
    settings = SmtpSettings(
        host="192.0.2.1",  # TEST-NET-1 (RFC 5737): not this box
        port=sink.port,
        security="none",
        username=SMTP_USER,
        password=Secret(SMTP_PASSWORD),
        sender="edge@store.test",
        timeout_s=0.3,
    )
    with pytest.raises(AlertError) as err:
        await Mailer(settings).send(MAIL)
    assert "unencrypted" in str(err.value) and "192.0.2.1" in str(err.value)
    assert SMTP_PASSWORD not in str(err.value)


async def test_final_reply_has_its_own_timeout(sink: SmtpSink, cert: tuple[Path, Path]) -> None:
    """The reply after the message body may take longer than a command's timeout (RFC 5321 4.5.3.2.6): it is waited
    for up to smtp.data_timeout_s, and a relay silent beyond that is named as such (the mail may have arrived)."""
    sink.data_delay_s = 0.6
    delivery = await Mailer(smtp(sink, cert, timeout_s=0.3)).send(MAIL)
    assert delivery.accepted == ("chef@store.test",) and len(sink.messages) == 1
    with pytest.raises(AlertError, match=r"no final answer within 0\.2s \(smtp\.data_timeout_s\)"):
        await Mailer(smtp(sink, cert, timeout_s=0.3, data_timeout_s=0.2)).send(MAIL)
