"""SMTP delivery with aiosmtplib: STARTTLS, implicit TLS or plain, login, timeouts; failures explained in plain
words."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.policy
import email.utils
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from typing import TYPE_CHECKING, TypeVar

import structlog

from edge.alerts.addresses import smtp_address
from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock
from edge.config import SmtpSettings
from edge.dns import lookup, unresolved
from edge.errors import AlertError, ConfigError
from edge.heap import lazy_module
from edge.orders.model import storable_text
from edge.store.alerts import Mail
from edge.tls import clock_hint, verifying_context

if TYPE_CHECKING:
    import aiosmtplib
else:
    # Loaded at the first mail, not at the start: an idle agent keeps 0.3 MB less of its 50 MB (bench: 50.1 MB).
    aiosmtplib = lazy_module("aiosmtplib")

log = structlog.get_logger()
# How far ahead of now the last mail's Date may be and still be the next one's floor (Mailer._dated).
_DATE_FLOOR_MAX_S = 86400.0

T = TypeVar("T")


class _Subject(UnstructuredHeader, BaseHeader):
    """A subject folded the way RFC 2047 wants: Python 3.11's folder doubles a space at a fold before an encoded word
    and drops the one between two encoded words on a line ("Bon  zurückgehalten", "fürLänge" in the manager's
    inbox). The older encoder (email.header) puts the spaces inside encoded words of at most 75 characters, so they
    decode to the subject as written. A plain ASCII one it folds at spaces from the first line on, where Python's
    folder may break right after "Subject:" (a parser then reads a leading space)."""

    def fold(self, *, policy: email.policy.Policy) -> str:
        charset = "us-ascii" if str(self).isascii() else "utf-8"
        encoded = Header(str(self), charset, header_name=self.name).encode(linesep=policy.linesep)
        return f"{self.name}: {encoded}{policy.linesep}"


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("subject", _Subject)
_POLICY = email.policy.default.clone(header_factory=_HEADERS)


def _mailbox(address: str) -> Address:
    """An address (with its name, if any) as From/To carry it without SMTPUTF8: an umlaut domain as its A-labels.
    Python would write it as an encoded word, which RFC 2047 (5) does not allow in an address, and clients misread."""
    name, addr = email.utils.parseaddr(address)
    return Address(display_name=name, addr_spec=smtp_address(addr or address))


def _sendable(address: str) -> bool:
    try:
        smtp_address(address)
    except ValueError:
        return False
    return True


def build_message(
    mail: Mail, *, sender: str, message_id: str | None = None, dated: float | None = None
) -> EmailMessage:
    """The sender must be sendable (smtp_address); a recipient that is not is left out: it is never sent to.
    ``dated``: the Date header's time (None: the system clock's now)."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _mailbox(sender)
    msg["To"] = [_mailbox(r) for r in mail.recipients if _sendable(r)]
    msg["Subject"] = mail.subject
    msg["Date"] = email.utils.formatdate(dated, localtime=True)
    # Stable per outbox row: should a crash between "accepted" and "marked sent" resend it, clients can see it is the
    # same mail.
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain="edge-agent")
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


def explain(err: BaseException, smtp: SmtpSettings) -> str:
    """One sentence a technician on site can act on, in words a person reads (``_readable``)."""
    return _readable(_explained(err, smtp))


def _explained(err: BaseException, smtp: SmtpSettings) -> str:
    where = f"{smtp.host}:{smtp.port}"
    if isinstance(err, aiosmtplib.SMTPAuthenticationError):
        return _login_refused(err, smtp)
    if isinstance(err, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return f"no answer from {where} within {smtp.timeout_s:g}s: wrong port, or a firewall drops the connection"
    cause = err.__cause__ or err.__context__
    if isinstance(err, ssl.SSLCertVerificationError) or isinstance(cause, ssl.SSLCertVerificationError):
        reason = getattr(err, "verify_message", None) or getattr(cause, "verify_message", err)
        if hint := clock_hint(err):
            return f"the TLS certificate of {where} could not be verified ({reason}){hint}"
        return (
            f"the TLS certificate of {where} could not be verified ({reason}); set smtp.ca_file if the relay uses its"
            " own CA"
        )
    if (
        isinstance(err, ssl.SSLError)
        or isinstance(cause, ssl.SSLError)
        or "SSL" in str(err)
        or (smtp.security == "tls" and isinstance(err, aiosmtplib.SMTPServerDisconnected))
    ):
        return f"TLS mismatch with {where}: use security 'tls' for port 465 and 'starttls' for port 587 ({err})"
    if isinstance(err, aiosmtplib.SMTPException) and "STARTTLS" in str(err):
        return f"{where} does not offer STARTTLS: use security 'tls' (port 465) or ask for the right port ({err})"
    if isinstance(err, aiosmtplib.SMTPResponseException) and err.code == 421:  # RFC 5321 3.8: at any command
        return f"{where} is closing the connection ({_reply(err)}): busy or restarting; the mail is tried again"
    if isinstance(err, aiosmtplib.SMTPConnectResponseError):
        return f"{where} refused the connection at its greeting ({_reply(err)})"
    if isinstance(err, aiosmtplib.SMTPServerDisconnected):
        return f"{where} closed the connection half-way ({err}); the mail is tried again"
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        return f"{where} refused the recipients: {', '.join(r.recipient for r in err.recipients)}"
    if isinstance(err, aiosmtplib.SMTPSenderRefused):
        return f"{where} refused the sender {err.sender!r}: the From address must belong to the account"
    if hint := unresolved(err, smtp.host):
        return f"{hint} (smtp.host)"
    if isinstance(err, (aiosmtplib.SMTPConnectError, OSError)):
        return f"cannot reach {where}: host name wrong, no network, or nothing listening on that port ({err})"
    if isinstance(err, aiosmtplib.SMTPResponseException):  # the reply in words, not a Python tuple
        return f"{where} answered {_reply(err)}"
    return f"{where}: {err}"


def _login_refused(err: aiosmtplib.SMTPAuthenticationError, smtp: SmtpSettings) -> str:
    """Each refusal RFC 4954 6 names told as what it is, with the relay's own words (never the password)."""
    where, user, reply = f"{smtp.host}:{smtp.port}", smtp.username, _reply(err)
    if err.code < 500:  # "454 4.7.0 Temporary authentication failure": the provider's login backend, not the password
        return f"{where} cannot log anyone in just now ({reply}): not the password; try again later"
    if err.code == 534 or "5.7.9" in err.message:  # Gmail: "534-5.7.9 Application-specific password required"
        return (
            f"{where} wants an app password for {user!r} ({reply}): create one in the account's security settings"
            " and set it as smtp.password"
        )
    if err.code == 538:  # "538 5.7.11 Encryption required for requested authentication mechanism": not the password
        return (
            f"{where} wants an encrypted connection before the login as {user!r} ({reply}): set smtp.security to"
            " 'starttls' (port 587) or 'tls' (port 465)"
        )
    return (
        f"{where} refused the login as {user!r} ({reply}): check smtp.username and smtp.password (Gmail and Yahoo"
        " need an app password, not the account password)"
    )


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What the relay answered for one mail, per recipient (RFC 5321 4.2.1: 2xx done, 4xx try later, 5xx never)."""

    accepted: tuple[str, ...] = ()
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # 5xx at RCPT: this address will never work
    deferred: dict[str, str] = dataclasses.field(default_factory=dict)  # 4xx at RCPT: try this address again later


# How relays say they will not relay for this client (Postfix, Exim, Sendmail, Exchange, Gmail): no address is wrong.
_NOT_RELAYING = ("relay access denied", "relaying denied", "unable to relay", "relay not permitted", "relay denied")


class RelayRefusedError(AlertError):
    """The relay refused this connection (a login, encryption or a greeting name demanded, the sender held back for
    now): no mail can pass until the relay or a setting changes, so the whole outbox backs off and keeps its mails."""


class LoginRefusedError(RelayRefusedError):
    """The relay refused the login. ``permanent`` (5xx, e.g. 535 5.7.8): the same password fails every time, and each
    try is one more failed login toward fail2ban's ban or the account's lockout."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class MailRefusedError(AlertError):
    """The relay refused this mail (its sender at MAIL FROM, or its content after DATA); others may still pass."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class UnansweredError(AlertError):
    """The relay took the whole message, then its final answer never came (the line lost, or no answer within
    smtp.data_timeout_s): it may have been delivered (RFC 5321 4.1.1.4, RFC 1047). ``delivery``: the recipients as the
    relay answered their RCPT, whom it reached if it was."""

    def __init__(self, message: str, *, delivery: Delivery) -> None:
        super().__init__(message)
        self.delivery = delivery


def _reply(err: aiosmtplib.SMTPResponseException) -> str:
    return _readable(f"{err.code} {err.message}".strip())


def _readable(text: str) -> str:
    """A relay's words as a person reads them, and SQLite can store them: aiosmtplib keeps a reply's bytes that are
    not UTF-8 as lone surrogates, which no UTF-8 carries (a German relay's Latin-1 "Empf\xe4nger unbekannt": before,
    storing it failed at every round and no mail went out after it). Such a reply is read as Latin-1."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that was no byte of the reply
        return storable_text(text)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _meaningful(name: str) -> bool:
    """A dotted name other than localhost's: what relays checking the greeting take as fully qualified."""
    return "." in name.strip(".") and not name.lower().startswith("localhost")


def _address_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"  # RFC 5321 4.1.3


class Mailer:
    def __init__(self, smtp: SmtpSettings, *, clock: Clock = SYSTEM_CLOCK, central: RemoteClock | None = None) -> None:
        """``central``: central's clock as its answers tell it: mails are dated by it once known (a box booted years
        behind dated its alarms so, and mail clients sort them out of sight), else by ``clock``; never earlier than
        the mail before (an all-clear after a step back sorted before its alarm)."""
        self._smtp = smtp
        self._clock, self._central = clock, central
        self._last_dated = 0.0
        self.sender = smtp.sender or smtp.username
        # Made on the first mail, in a thread, then kept: it reads the system's CA files (~20 ms of CPU and disk here),
        # which on the event loop would stall every order coming in meanwhile. New settings come with a restart.
        self._tls: ssl.SSLContext | None = None
        # The EHLO name: smtp.helo_name, else the box's FQDN, looked up once (in a thread: /etc/hosts, maybe DNS).
        self._helo: str | None = smtp.helo_name or None
        self._helo_looked_up = bool(smtp.helo_name)
        self._connecting = 0  # connections being made: the relay has been handed no mail on them yet

    @property
    def last_dated(self) -> float:
        """The Date of the last mail sent (0: none yet): what ``dated_after`` takes at the next start."""
        return self._last_dated

    def dated_after(self, at: float) -> None:
        """An earlier run's last mail was dated ``at``: the next is not dated before it."""
        self._last_dated = max(self._last_dated, at)

    def _dated(self) -> float:
        now = (self._central.wall() if self._central is not None else None) or self._clock.wall()
        # A mail dated more than a day ahead of now had a clock that wrong (a box ahead by years): no floor for the
        # next, which would go on being dated then, until that day came.
        if self._last_dated - now > _DATE_FLOOR_MAX_S:
            self._last_dated = now
        self._last_dated = max(now, self._last_dated)
        return self._last_dated

    @property
    def connecting(self) -> bool:
        """A connection is being made (name lookup, connect, greeting, TLS, login): cut off now, no mail is lost or
        half-sent."""
        return self._connecting > 0

    @property
    def _where(self) -> str:
        return f"{self._smtp.host}:{self._smtp.port}"

    async def _client(self) -> aiosmtplib.SMTP:
        s = self._smtp
        if s.security != "none" and self._tls is None:
            try:
                self._tls = await asyncio.to_thread(verifying_context, s.ca_file, "smtp.ca_file")
            except ConfigError as err:  # every mail would meet it: the relay's problem, named with its setting
                raise AlertError(str(err)) from None
        if not self._helo_looked_up:
            fqdn = await asyncio.to_thread(socket.getfqdn)
            self._helo, self._helo_looked_up = (fqdn if _meaningful(fqdn) else None), True
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_s,
            use_tls=s.security == "tls",
            # STARTTLS is ours to start (_greet), after the greeting name is known; and 'none' means none: aiosmtplib
            # would otherwise upgrade on its own when offered, with other failure modes.
            start_tls=False,
            tls_context=self._tls if s.security != "none" else None,
            # A box without a meaningful name (a Pi's "raspberrypi") greets with its address, set once connected.
            local_hostname=self._helo or "[127.0.0.1]",
        )

    async def _greet(self, client: aiosmtplib.SMTP) -> None:
        """EHLO (HELO for a relay without ESMTP), then STARTTLS when configured."""
        if self._helo is None:  # RFC 5321 4.1.4: a client without a meaningful name uses its address literal
            client.local_hostname = _address_literal(client.get_transport_info("sockname")[0])
        try:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        except aiosmtplib.SMTPHeloError as err:
            raise RelayRefusedError(self._greeting_refused(client, err)) from err
        if self._smtp.security == "starttls":
            try:
                await client.starttls()
            except aiosmtplib.SMTPResponseException as err:  # RFC 3207 4: "454 4.7.0 TLS not available …"
                said = f"{self._where} cannot start TLS just now ({_reply(err)}); try again later"
                raise RelayRefusedError(said) from err
            except aiosmtplib.SMTPServerDisconnected as err:  # the relay's "220 Ready", then the handshake failed
                raise RelayRefusedError(
                    f"the TLS handshake with {self._where} failed ({err}): the relay may speak only TLS 1.1 or older,"
                    " which this box refuses; ask its owner for TLS 1.2, or try security 'tls' (port 465)"
                ) from err
            await client.ehlo()  # RFC 3207 4.2: what the relay offers (AUTH among it) is asked again over TLS

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """One mechanism, another only when the relay does not know it (504, RFC 4954 4): a refused password is wrong
        for every mechanism, and aiosmtplib's login() tried each (two failed logins per try toward a lockout)."""
        if not client.supports_extension("auth"):
            raise RelayRefusedError(self._no_login(client))
        s, unknown = self._smtp, None
        for mechanism in client.supported_auth_methods:
            authenticate = getattr(client, f"auth_{mechanism.replace('-', '').lower()}")
            try:
                await authenticate(s.username, s.password.get())
                return
            except aiosmtplib.SMTPAuthenticationError as err:
                if err.code != 504:
                    raise LoginRefusedError(explain(err, s), permanent=err.code >= 500) from err
                unknown = err
        answer = f"{_reply(unknown)}; " if unknown else ""
        raise RelayRefusedError(
            f"{self._where} offers no login this box can use ({answer}offered: {' '.join(client.server_auth_methods)})"
        )

    def _no_login(self, client: aiosmtplib.SMTP) -> str:
        said = f"{self._where} offers no login (AUTH) on this connection"
        if client.supports_extension("starttls"):  # Postfix smtpd_tls_auth_only, aiosmtpd: AUTH only after STARTTLS
            return f"{said}: set smtp.security to 'starttls' (it offers STARTTLS, and logins after it)"
        return (
            f"{said}: leave smtp.username empty if it relays for this box by its address, or ask for the port that"
            " takes logins (587 or 465)"
        )

    def _greeting_refused(self, client: aiosmtplib.SMTP, err: aiosmtplib.SMTPResponseException) -> str:
        return (
            f"{self._where} refused this box's greeting name {client.local_hostname!r} ({_reply(err)}): set"
            " smtp.helo_name to the box's fully-qualified host name (e.g. till-3.shop.example.com)"
        )

    def _session_refusal(self, client: aiosmtplib.SMTP, err: aiosmtplib.SMTPResponseException) -> str | None:
        """A refusal about this connection (its login, encryption or greeting name), not about the mail or an address:
        every mail would meet it, so it is the relay's problem to the outbox, named with the setting that fixes it."""
        text = err.message.lower()
        if "helo" in text or "ehlo" in text:  # Postfix reject_non_fqdn_helo_hostname: "Helo command rejected"
            return self._greeting_refused(client, err)
        if "starttls" in text or " tls" in text:  # RFC 3207 4: "530 5.7.0 Must issue a STARTTLS command first"
            return (
                f"{self._where} wants an encrypted connection before it takes mail ({_reply(err)}): set smtp.security"
                " to 'starttls' (port 587) or 'tls' (port 465)"
            )
        if err.code == 530 or "authenticat" in text:  # RFC 4954 6: "530 5.7.0 Authentication required"
            login = f"the login as {self._smtp.username!r} is not enough" if self._smtp.username else "none is set"
            return (
                f"{self._where} wants a login before it takes mail and {login} ({_reply(err)}): set smtp.username and"
                " smtp.password (Gmail and Yahoo need an app password)"
            )
        if any(words in text for words in _NOT_RELAYING):  # Postfix at RCPT: "554 5.7.1 <…>: Relay access denied"
            return (
                f"{self._where} will not relay this box's mail ({_reply(err)}): set smtp.username and smtp.password"
                " (it relays for senders who log in), or ask its owner to relay for this box's address"
            )
        return None

    def _sender_refused(self, err: aiosmtplib.SMTPResponseException) -> AlertError:
        """The From address refused (at MAIL FROM, or at RCPT where Postfix checks the sender by default): for now,
        the whole outbox waits; for good, the mail waits for a person who fixes smtp.sender."""
        if err.code < 500:
            # The envelope sender is the same for every mail (a rate limit, a full queue): the whole outbox waits.
            return RelayRefusedError(
                f"{self._where} does not take mail from {self.sender!r} for now ({_reply(err)}); the outbox waits"
                " and tries again"
            )
        return MailRefusedError(
            f"{self._where} refused the sender {self.sender!r} ({_reply(err)}): set smtp.sender to an address the"
            " account may send from",
            permanent=True,
        )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[MailSession]:
        """One connection for several mails, one transaction after another (RFC 5321 3.3): a slow relay's greeting,
        TLS and login are paid once. Raises AlertError when the relay cannot be used at all."""
        client = await self._connect()
        try:
            yield MailSession(self, client)
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()  # what was sent is done; a relay that goes away at QUIT changes nothing

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._smtp
        if s.sends_password_in_clear and not s.allow_plain_login:
            # Checked here too, not only in the config: the setup wizard and tests build settings directly.
            raise AlertError(
                f"refusing to log in to {s.host}:{s.port} with security 'none': the password would cross the network"
                " unencrypted (use starttls or tls, or set smtp.allow_plain_login for a relay on a network you trust)"
            )
        self._connecting += 1
        try:
            try:
                # Looked up first, within the connect's own time: aiosmtplib looks the name up inside its connect,
                # where a DNS server that does not answer ends as a timeout told as a wrong port or a firewall (and
                # the resolver's thread holds the exit of `edge doctor` for its whole 10-30 s).
                await asyncio.to_thread(lookup, s.host, s.port, s.timeout_s)
            except socket.gaierror as err:
                raise AlertError(explain(err, s)) from err
            client = await self._client()
            try:
                await client.connect()
                await self._greet(client)
                if s.username:
                    await self._login(client)
            except BaseException as err:
                client.close()
                if s.security != "tls" and await self._waited_for_tls(err):
                    raise AlertError(
                        f"TLS mismatch with {self._where}: port {s.port} speaks TLS at once: choose security tls"
                        f" (smtp.security), not {s.security!r}"
                    ) from err
                if isinstance(err, (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError)):
                    raise AlertError(explain(err, s)) from err
                raise
            return client
        finally:
            self._connecting -= 1

    async def _waited_for_tls(self, err: BaseException) -> bool:
        """Whether a greeting that never came is a relay speaking TLS at once (port 465): it waits silently for the
        client's TLS hello, as a plain client waits for its greeting. Asked on a connection of its own, TLS without
        verification: only whether it answers in TLS matters."""
        if not isinstance(err.__cause__, aiosmtplib.SMTPReadTimeoutError):  # the connection itself never came up
            return False
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # not the default context: no CA files read on the loop
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
        try:
            async with asyncio.timeout(min(self._smtp.timeout_s, 5.0)):
                _, writer = await asyncio.open_connection(self._smtp.host, self._smtp.port, ssl=probe)
        except (OSError, TimeoutError):  # ssl.SSLError too: it answered, but not in TLS
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        return True

    async def _mail_from(self, client: aiosmtplib.SMTP) -> None:
        try:
            sender = smtp_address(email.utils.parseaddr(self.sender)[1])
        except ValueError as err:  # every mail would meet it: the setting's to change
            raise RelayRefusedError(f"smtp.sender: {err}") from None
        try:
            await client.mail(sender)
        except aiosmtplib.SMTPResponseException as err:
            if err.code == 421:  # the service is closing: a server problem, not this mail's
                raise
            if problem := self._session_refusal(client, err):
                raise RelayRefusedError(problem) from err
            raise self._sender_refused(err) from err

    async def _recipients(self, client: aiosmtplib.SMTP, recipients: list[str]) -> Delivery:
        """One RCPT per recipient: who was accepted, refused (5xx) or deferred (4xx). Raises for a refusal that is the
        relay's or the sender's, not the address's."""
        accepted: list[str] = []
        refused: dict[str, str] = {}
        deferred: dict[str, str] = {}
        for recipient in recipients:
            try:
                await client.rcpt(smtp_address(recipient))
                accepted.append(recipient)
            except ValueError as err:
                # An address the command line cannot carry (smtp_address's refusal, or aiosmtplib's for a character
                # it will not send) is refused for that recipient alone, as a 5xx would be: the others still get it.
                refused[recipient] = str(err)
            except aiosmtplib.SMTPRecipientRefused as err:
                if err.code == 421:
                    raise
                if problem := self._session_refusal(client, err):  # Postfix checks the greeting at RCPT by default
                    raise RelayRefusedError(problem) from err
                if "sender address rejected" in err.message.lower():  # and the sender (smtpd_delay_reject)
                    raise self._sender_refused(err) from err
                (refused if err.code >= 500 else deferred)[recipient] = _reply(err)
        return Delivery(tuple(accepted), refused, deferred)

    async def _transaction(self, client: aiosmtplib.SMTP, mail: Mail, message_id: str | None) -> Delivery:
        """MAIL, one RCPT per recipient, DATA: each recipient's answer is kept, not only whether all failed."""
        where = self._where
        await self._mail_from(client)
        delivery = await self._recipients(client, mail.recipients)
        if not delivery.accepted:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                pass  # the envelope is void anyway; the connection closes next
            return delivery
        msg = build_message(mail, sender=self.sender, message_id=message_id, dated=self._dated())
        try:
            await self._data(client, aiosmtplib.email.flatten_message(msg), delivery)
        except aiosmtplib.SMTPDataError as err:
            if err.code == 421:
                raise
            raise MailRefusedError(f"{where} refused the message ({_reply(err)})", permanent=err.code >= 500) from err
        return delivery

    async def _data(self, client: aiosmtplib.SMTP, message: bytes, delivery: Delivery) -> None:
        """DATA in its two steps (aiosmtplib's data() does both at once), so that a line lost after the message went
        is told from one lost before: only the first may have delivered it."""
        start = await client.execute_command(b"DATA")
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:  # the relay went away with its 354
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        # As aiosmtplib's data() sends it: CRLF line ends, a leading dot doubled (RFC 5321 4.5.2), the final dot.
        body = aiosmtplib.protocol.normalize_message_line_endings(message)
        body = aiosmtplib.protocol.PERIOD_REGEX.sub(b"..", body) + b".\r\n"
        protocol.write(body)
        try:
            # The reply after the body gets its own timeout: RFC 5321 4.5.3.2.6 lets the relay take 10 minutes, and
            # giving up sooner only means sending again what it has most likely accepted.
            reply = await protocol.read_response(timeout=self._smtp.data_timeout_s)
        except aiosmtplib.SMTPTimeoutError as err:
            client.close()  # its late answer must not be read as the next command's
            raise UnansweredError(
                f"{self._where} took the whole message but gave no final answer within"
                f" {self._smtp.data_timeout_s:g}s (smtp.data_timeout_s); it may have been delivered",
                delivery=delivery,
            ) from err
        except aiosmtplib.SMTPServerDisconnected as err:
            client.close()
            raise UnansweredError(
                f"{self._where} took the whole message but closed the connection before its final answer ({err});"
                " it may have been delivered",
                delivery=delivery,
            ) from err
        if reply.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    async def check(self, recipient: str | None = None) -> str:
        """Connect, greet, secure the line, log in and try the sender and ``recipient`` (then RSET), without sending
        anything; returns the name it greeted with."""
        async with self.session() as session:
            await session.try_sender(recipient)
        return self._helo or "its address"

    async def deliver(self, mail: Mail, *, message_id: str | None = None) -> Delivery:
        """One attempt on a connection of its own; see MailSession.deliver."""
        async with self.session() as session:
            return await session.deliver(mail, message_id=message_id)

    async def send_without_outbox(self, mail: Mail) -> Delivery:
        """``send`` for a caller with no outbox to count a mail's tries (the health timer, the storage alarm while the
        database refuses writes): a mail the relay took whole without its final answer most likely arrived (RFC
        1047), so it is taken as sent and said so, not sent again at every run while the relay keeps losing the line."""
        try:
            return await self.send(mail)
        except UnansweredError as err:
            log.warning("alert_mail_unconfirmed", subject=mail.subject, error=str(err))
            return err.delivery

    async def send(self, mail: Mail, *, message_id: str | None = None) -> Delivery:
        """Like deliver, but a mail no recipient accepted is an AlertError (for callers without an outbox)."""
        delivery = await self.deliver(mail, message_id=message_id)
        if not delivery.accepted:
            where = f"{self._smtp.host}:{self._smtp.port}"
            reasons = {**delivery.deferred, **delivery.refused}
            raise AlertError(f"{where} refused the recipients: " + "; ".join(f"{r} ({e})" for r, e in reasons.items()))
        return delivery


class MailSession:
    """An open connection to the relay (Mailer.session)."""

    def __init__(self, mailer: Mailer, client: aiosmtplib.SMTP) -> None:
        self._mailer = mailer
        self._client = client
        self.usable = True  # False once the connection failed: the next mail needs a new one

    async def try_sender(self, recipient: str | None = None) -> None:
        """MAIL FROM (and RCPT TO ``recipient``), then RSET: most relays refuse a missing login, TLS or greeting name
        only there, and Postfix a box it does not relay for only at RCPT."""
        await self._run(self._try_sender(recipient))

    async def _try_sender(self, recipient: str | None) -> Delivery:
        await self._mailer._mail_from(self._client)
        if recipient is not None:
            delivery = await self._mailer._recipients(self._client, [recipient])
            if not delivery.accepted:
                why = {**delivery.deferred, **delivery.refused}[recipient]
                raise AlertError(f"{self._mailer._where} refuses the address {recipient} ({why})")
        await self._client.rset()
        return Delivery()

    async def deliver(self, mail: Mail, *, message_id: str | None = None) -> Delivery:
        """One attempt; refused recipients come back in the result. Raises AlertError when the relay could not be
        used at all (unreachable, TLS, login, a refusal of the session), MailRefusedError when it refused this mail
        as a whole."""
        try:
            delivery = await self._run(self._mailer._transaction(self._client, mail, message_id))
        except MailRefusedError:
            # RFC 5321 4.1.1.5: whatever is left of the refused transaction goes before the next mail's MAIL FROM.
            with contextlib.suppress(AlertError):  # then the connection is marked unusable; the refusal stands
                await self._run(self._client.rset())
            raise
        log.info(
            "alert_mail_delivered",
            subject=mail.subject,
            accepted=len(delivery.accepted),
            refused=len(delivery.refused),
            deferred=len(delivery.deferred),
        )
        return delivery

    async def _run(self, step: Awaitable[T]) -> T:
        try:
            return await step
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as err:
            self.usable = False
            raise AlertError(explain(err, self._mailer._smtp)) from err
        except AlertError as err:
            self.usable = isinstance(err, MailRefusedError)  # only a refusal of this one mail leaves the line usable
            raise
