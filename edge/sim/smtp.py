"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: for tests, the benchmark and setup
rehearsals."""

from __future__ import annotations

import asyncio
import email
import email.policy
import inspect
import ssl
import warnings
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from edge.sim.ports import free_port


class _Relay(SMTP):
    """aiosmtpd's server with the answers SmtpSink scripts where aiosmtpd has no handler hook."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        if reply := self.event_handler.starttls_reply:
            await self.push(reply)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if self.event_handler.drops_at_data and isinstance(self.transport, asyncio.Transport):
            self.event_handler.drops_at_data -= 1
            self.transport.abort()
            return
        await super().smtp_DATA(arg)


class SmtpSink:
    """Listens on 127.0.0.1; optional LOGIN/PLAIN auth, STARTTLS (tls_context) or implicit TLS (implicit_tls).

    Like a real relay (RFC 5321) it can refuse single recipients at RCPT (``rcpt_replies``: 550 for good, 450 for
    now, §4.2.5), refuse a message after its body (``data_reply``), and take its time before the final reply after
    the body (``data_delay_s``; §4.5.3.2.6 gives a client 10 minutes for it). A message whose client gave up
    waiting is still delivered, as a relay that has taken it does (§6.1): that is how a too short timeout duplicates
    mail.

    It can also answer as relays do before any mail is looked at: ``mail_reply`` answers MAIL FROM instead of 250
    (Gmail and Office 365 "530 5.7.0 Authentication required" to a client that did not log in, "530 5.7.0 Must issue
    a STARTTLS command first" to one that did not encrypt, a provider's "451 4.7.1 Sender rate limit exceeded"), and
    ``fqdn_helo_at`` ("MAIL" or "RCPT") refuses there a greeting name that is neither a dotted name nor an address
    literal, as Postfix's reject_non_fqdn_helo_hostname does (at RCPT with its default smtpd_delay_reject = yes, at
    MAIL with the check among smtpd_sender_restrictions and smtpd_delay_reject = no). ``helo_names`` keeps every
    EHLO/HELO name it was greeted with. ``command_delay_s`` holds every answer to EHLO, HELO, MAIL and RCPT that
    long, as a tarpitting relay does (Postfix smtpd_error_sleep_time, a provider throttling a busy sender).
    ``sessions`` holds, per connection, the subjects of the messages it took, in order.

    It can lose the line as relays behind a firewall or NAT do: ``drops_after_body`` messages it takes (and keeps, as
    a relay that queued them) and then drops the connection before its final reply (RFC 1047: the client cannot know
    it was delivered), ``drops_at_data`` DATA commands it answers by dropping the connection before its 354.

    ``auth_reply`` answers every AUTH instead of checking the login, as relays do whose login is refused for another
    reason than the password (RFC 4954 6): "454 4.7.0 Temporary authentication failure" (the provider's login backend
    is down), Gmail's "534-5.7.9 Application-specific password required"; ``logins`` counts AUTH commands answered.
    ``starttls_reply`` answers STARTTLS instead of "220 Ready", as a relay whose TLS is broken for now does (RFC 3207
    4: "454 4.7.0 TLS not available due to local problem").
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        port: int = 0,
    ) -> None:
        self.username, self.password = username, password
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.port = port
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self.received_at: list[float] = []  # loop.time() of each message, for latency measurements
        self.failed_logins = 0
        self.logins = 0
        self.auth_reply: str | None = None
        self.starttls_reply: str | None = None
        # recipient -> the reply to its RCPT TO, e.g. "550 5.1.1 user unknown"; bytes go out as they are: a relay that
        # answers in its own language and Latin-1 (b"550 5.1.1 Empf\xe4nger unbekannt"), as old localised ones do
        self.rcpt_replies: dict[str, str | bytes] = {}
        # A refusal instead of "250 OK" (or None); may be a coroutine function, so that a test can act while the relay
        # holds the message without blocking the loop both of them run on.
        self.data_reply: Callable[[EmailMessage], str | Awaitable[str | None] | None] | None = None
        self.data_delay_s = 0.0
        self.mail_reply: str | None = None
        self.fqdn_helo_at: str | None = None
        self.helo_names: list[str] = []
        self.command_delay_s = 0.0
        self.sessions: dict[str, list[str]] = {}  # the client's address and port -> subjects taken on that connection
        self.connections = 0
        self.refused_messages = 0  # bodies answered with data_reply
        self.drops_after_body = 0
        self.drops_at_data = 0
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Event()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        await self._tarpit()
        session.host_name = hostname
        self.helo_names.append(hostname)
        if self.username is None:  # a relay that authorises by address (Postfix without SASL) offers no AUTH
            return [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        await self._tarpit()
        session.host_name = hostname
        self.helo_names.append(hostname)
        return "250 sink.test"

    async def _tarpit(self) -> None:
        if self.command_delay_s:
            await asyncio.sleep(self.command_delay_s)

    def _helo_refusal(self, stage: str, session: Session) -> str | None:
        name = session.host_name or ""
        if self.fqdn_helo_at != stage or name.startswith("[") or "." in name.strip("."):
            return None
        return f"504 5.5.2 <{name}>: Helo command rejected: need fully-qualified hostname"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        await self._tarpit()
        if reply := self._helo_refusal("MAIL", session) or self.mail_reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str | bytes:
        await self._tarpit()
        if reply := self._helo_refusal("RCPT", session) or self.rcpt_replies.get(address):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        reply = self.data_reply(message) if self.data_reply is not None else None
        if inspect.isawaitable(reply):
            reply = await reply
        if reply:
            self.refused_messages += 1
            return reply
        self.received_at.append(asyncio.get_running_loop().time())
        self.envelopes.append(envelope)
        self.messages.append(message)
        self.sessions.setdefault(str(session.peer), []).append(str(message["Subject"]))
        self._arrived.set()
        if self.drops_after_body and isinstance(server.transport, asyncio.Transport):
            self.drops_after_body -= 1
            server.transport.abort()  # before aiosmtpd writes the 250
        return "250 OK"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.logins += 1
        if self.auth_reply:
            self.failed_logins += 1
            return AuthResult(success=False, handled=False, message=self.auth_reply)
        ok = auth_data.login.decode() == self.username and auth_data.password.decode() == self.password
        self.failed_logins += not ok
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def _protocol(self) -> SMTP:
        self.connections += 1
        auth = self.username is not None
        with warnings.catch_warnings():
            # aiosmtpd cannot see implicit TLS from its transport and warns about AUTH without STARTTLS; the line is
            # encrypted.
            warnings.simplefilter("ignore", UserWarning)
            return self._smtp(auth)

    def _smtp(self, auth: bool) -> SMTP:
        return _Relay(
            self,
            hostname="sink.test",
            authenticator=self._authenticate if auth else None,
            auth_required=auth,
            # Auth over plain text only where the whole line is plain (a local relay test); with TLS, demand it.
            auth_require_tls=self.tls_context is not None and not self.implicit_tls,
            tls_context=None if self.implicit_tls else self.tls_context,
            require_starttls=self.tls_context is not None and not self.implicit_tls,
        )

    async def start(self) -> None:
        """Listen; started again after stop() (the mail server back up), on the same port: one from free_port, which
        no outgoing connection or other test takes while the server is down."""
        loop = asyncio.get_running_loop()
        self.port = self.port or free_port()
        self._server = await loop.create_server(
            self._protocol, "127.0.0.1", self.port, ssl=self.tls_context if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:  # noqa: ASYNC109 (tests' helper)
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"smtp sink: {len(self.messages)} of {count} mails after {timeout:g}s") from None
        return list(self.messages)
