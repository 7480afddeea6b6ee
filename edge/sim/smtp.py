"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: for tests, the benchmark and setup rehearsals."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import warnings
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


class SmtpSink:
    """Listens on 127.0.0.1; optional LOGIN/PLAIN auth, STARTTLS (tls_context) or implicit TLS (implicit_tls)."""

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
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received_at.append(asyncio.get_running_loop().time())
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default))  # type: ignore[arg-type]
        self._arrived.set()
        return "250 OK"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = auth_data.login.decode() == self.username and auth_data.password.decode() == self.password
        self.failed_logins += not ok
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def _protocol(self) -> SMTP:
        auth = self.username is not None
        with warnings.catch_warnings():
            # aiosmtpd cannot see implicit TLS from its transport and warns about AUTH without STARTTLS; the line is encrypted.
            warnings.simplefilter("ignore", UserWarning)
            return self._smtp(auth)

    def _smtp(self, auth: bool) -> SMTP:
        return SMTP(
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, "127.0.0.1", self.port, ssl=self.tls_context if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"smtp sink: {len(self.messages)} of {count} mails after {timeout:g}s") from None
        return list(self.messages)
