"""Delivers the mails the alerter wrote to the outbox, critical ones first, several on one connection: each its own
transaction, so one refused mail never holds up the rest."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

import structlog

from edge.alerts.login_rest import LOGIN_HOLD_S, begin_rest, rest_until
from edge.alerts.mailer import Delivery, LoginRefusedError, Mailer, MailRefusedError, MailSession, UnansweredError
from edge.clock import Clock, shown_at
from edge.config import Settings
from edge.errors import AlertError, StoreError
from edge.events import AlertSent, EventBus
from edge.printing.spooler import retry_delay
from edge.store.alerts import AlertStore, Attempt, Audience, LoginRest, Mail, MailState, OutboxMail

log = structlog.get_logger()

# Mails per connection before the next round opens a new one: Exchange's MaxMessagesPerConnection is 20, and others
# close a session after a similar count.
_PER_SESSION = 20
# A recipient the relay keeps deferring (a full mailbox: 452 4.2.2) is given up this long after the mail was made:
# mail servers give up after days (RFC 5321 4.5.4.1), but an alarm a day old is no news, only noise at every retry.
# And only after this many tries met the relay: a mail kept through a relay's long outage may meet a greylisting
# (450, taken a minute later) at its first try back.
_GIVE_UP_S = 24 * 3600.0
_GIVE_UP_TRIES = 3
# Tries whose whole message went without the relay's final answer, after which the mail is taken as delivered: each
# may have delivered it (RFC 1047), so one resend is the one duplicate docs/alerts.md allows; a relay (or a NAT before
# it) that cuts every line after the message would otherwise get it again at every backoff, for ever.
_UNANSWERED_MAX = 2
_UNANSWERED_CHECK = (
    "check the relay's log for this Message-ID, a firewall or NAT between this box and the relay that cuts the line"
    " while the relay checks a mail (its idle timeout), and the relay's content filter"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxStatus:
    """What the status page and `edge alerts outbox` show."""

    pending: int  # mails waiting for their next attempt
    dead: list[OutboxMail]  # refused for good: retry (after fixing the address) or discard
    unconfirmed: list[OutboxMail]  # taken as delivered, the relay never answered for the message: may not have arrived
    unrecorded: int  # accepted by the relay, the database has not taken the record yet (full disk)
    waiting_signals: int  # alert occurrences held in memory while the database refuses writes
    server_error: str | None  # why the relay cannot be used at all right now (unreachable, login), else None


class Outbox:
    """One attempt per due mail, every recipient's answer kept (RFC 5321 4.2.1): 2xx is done, 5xx is never (that mail
    or that address is dead-lettered), 4xx is later (that mail backs off). A relay that cannot be used at all
    (unreachable, TLS, login) backs off the whole outbox instead of failing each mail in turn."""

    def __init__(self, *, settings: Settings, store: AlertStore, mailer: Mailer, bus: EventBus, clock: Clock) -> None:
        self._cfg = settings.alerts
        self._smtp = settings.smtp
        self._zone = settings.agent.timezone
        self.stopping = False  # set by the agent's stop: the mail being sent is finished, no other one is started
        self._store = store
        self._mailer = mailer
        self._bus = bus
        self._clock = clock
        self._lock = asyncio.Lock()  # one attempt at a time: the loop, a test mail and a person's retry
        self._dated_loaded = False  # the last mail's Date an earlier run recorded, given to the mailer (see _attempt)
        self._server_failures = 0
        self._server_retry_at: float | None = None  # monotonic
        self.server_error: str | None = None
        # Whether an earlier run's rest after a refused login was looked for (_resume_rest), and one is stored.
        self._rest_read = False
        self._rest_stored = False
        self._login_resting = False  # the backoff under way (server_wait) is the rest after a refused login
        # Attempts the relay answered but the database did not record (full disk). Kept so the mail is not sent again
        # while the disk is full; at most one, since no further mail goes out before it is recorded.
        self._unrecorded: dict[int, Attempt] = {}

    def recipients(self, audience: Audience) -> list[str]:
        extra = self._cfg.critical_to if audience == Audience.CRITICAL else []
        return list(dict.fromkeys([*self._cfg.to, *extra]))

    def server_wait(self) -> float | None:
        """Seconds until the relay is tried again after it could not be used, None when it is not backing off."""
        if self._server_retry_at is None:
            return None
        return max(0.0, self._server_retry_at - self._clock.mono())

    @property
    def unrecorded(self) -> int:
        return len(self._unrecorded)

    async def deliver_due(self) -> int:
        """Attempts due mails once each, critical ones first, on one connection; returns how many reached all their
        recipients."""
        async with self._lock:
            await self._record_unrecorded()
            await self._resume_rest()
            if (wait := self.server_wait()) is not None and wait > 0:
                return 0
            sent = 0
            async with contextlib.AsyncExitStack() as connection:
                session: MailSession | None = None

                async def deliver(mail: Mail, message_id: str) -> Delivery:
                    nonlocal session
                    if session is None or not session.usable:
                        session = await connection.enter_async_context(self._mailer.session())
                    return await session.deliver(mail, message_id=message_id)

                for _ in range(_PER_SESSION):
                    # Asked again after each mail: a critical one queued meanwhile is the next to go, not the last.
                    due = await self._store.due_mails(self._clock.wall(), limit=1)
                    if not due or self.stopping:
                        break
                    attempt = await self._attempt(due[0], deliver)
                    if attempt is None:
                        break  # the relay cannot be used at all: the others wait for the same backoff
                    sent += attempt.state == MailState.SENT
            return sent

    async def send_now(self, kind: str, mail: Mail, audience: Audience) -> OutboxMail:
        """Writes a mail to the outbox and attempts it at once, even while the relay is backing off: a person asked."""
        async with self._lock:
            await self._record_unrecorded()
            await self._resume_rest()
            mail_id = await self._store.add_mail(kind, mail, self._clock.wall(), audience)
            await self._attempt(await self._store.mail(mail_id), self._deliver_alone)
            return await self._store.mail(mail_id)

    async def _record_unrecorded(self) -> None:
        for mail_id, attempt in list(self._unrecorded.items()):
            await self._store.record(mail_id, attempt, self._clock.wall())  # a StoreError leaves it for later
            del self._unrecorded[mail_id]

    async def _resume_rest(self) -> None:
        """Once per run: the rest an earlier run began after the relay refused the login goes on, if the settings are
        the ones refused (new ones may be the fix: they are tried at once); never longer than an hour from now,
        whatever the wall clock did since it was written."""
        if self._rest_read:
            return
        rest, now = await self._store.login_rest(), self._clock.wall()
        until = None if rest is None else await rest_until(rest, self._smtp, now)
        if self._rest_read:  # another caller (the status, the delivery) got there first
            return
        self._rest_read, self._rest_stored = True, rest is not None
        if rest is None or until is None:
            return
        self._server_retry_at, self._login_resting = self._clock.mono() + (until - now), True
        self.server_error = self._resting(rest.error, until)
        log.warning("alert_mail_resting", error=self.server_error, retry_in_s=round(until - now, 1))
        if until < rest.until:  # the clock was set back since: the next start measures from here too
            await self._store.shorten_login_rest(until)

    def _resting(self, error: str, until: float) -> str:
        return (
            f"{error}; not tried again before {shown_at(until, self._zone)} (a test mail, a retry, or changed smtp"
            " settings and a restart try at once)"
        )

    async def _deliver_alone(self, mail: Mail, message_id: str) -> Delivery:
        return await self._mailer.deliver(mail, message_id=message_id)

    async def _attempt(self, mail: OutboxMail, deliver: Callable[[Mail, str], Awaitable[Delivery]]) -> Attempt | None:
        """One attempt; None when the relay could not be used at all (the attempt is recorded all the same)."""
        wanted = self.recipients(mail.audience)
        # A group's mails reach each person in order: not an all-clear before the alarm the relay deferred for them.
        waiting = {r for m in await self._store.pending_before(mail) for r in self._owed(m)}
        remaining = [r for r in self._owed(mail, wanted) if r not in waiting]
        delivery, error, server_down, held, unanswered = Delivery(), None, False, False, False
        if remaining and not self._dated_loaded:
            # Mails are dated never before the one before, also across a restart: after NTP set the clock back, an
            # all-clear dated before its alarm sorted under it, and the newest mail on top said "down".
            if (dated := await self._store.last_mail_dated()) is not None:
                self._mailer.dated_after(dated)
            self._dated_loaded = True
        if remaining:
            try:
                delivery = await deliver(
                    Mail(recipients=remaining, subject=mail.subject, text=mail.text, html=mail.html), mail.message_id
                )
            except MailRefusedError as err:
                error = str(err)
                if err.permanent:
                    delivery = Delivery(refused=dict.fromkeys(remaining, error))
            except UnansweredError as err:
                unanswered = True
                if mail.unanswered + 1 >= _UNANSWERED_MAX:  # its accepted recipients have it, most likely twice
                    delivery = err.delivery
                    error = (
                        f"{err}; the relay took the whole mail twice without answering: taken as delivered, not"
                        f" sent again; {_UNANSWERED_CHECK}"
                    )
                else:  # sent once more, the same Message-ID: a copy the manager's mail client can tell as such
                    delivery = dataclasses.replace(err.delivery, accepted=())
                    error = f"{err}; sent once more, with the same Message-ID"
            except AlertError as err:
                error, server_down = str(err), True
                held = isinstance(err, LoginRefusedError) and err.permanent
        attempt = self._outcome(mail, wanted, delivery, error, met_relay=not server_down, unanswered=unanswered)
        if delivery.accepted:
            attempt = dataclasses.replace(attempt, dated=self._mailer.last_dated)
        if server_down:
            rest = await self._server_failed(error or "", held=held)
            attempt = dataclasses.replace(attempt, rest=rest)
        elif remaining:
            self._server_failures, self._server_retry_at, self.server_error = 0, None, None
            self._login_resting = False
            attempt = dataclasses.replace(attempt, rest_over=self._rest_stored)
        self._rest_stored = attempt.rest is not None or (self._rest_stored and not attempt.rest_over)
        self._unrecorded[mail.id] = attempt
        await self._store.record(mail.id, attempt, self._clock.wall())
        del self._unrecorded[mail.id]
        if server_down:
            return None
        self._tell(mail, delivery, attempt)
        return attempt

    def _owed(self, mail: OutboxMail, wanted: list[str] | None = None) -> list[str]:
        """Who ``mail`` has yet to reach, of ``wanted`` (its audience as configured now)."""
        wanted = self.recipients(mail.audience) if wanted is None else wanted
        return [r for r in wanted if r not in mail.delivered and r not in mail.refused]

    def _outcome(
        self,
        mail: OutboxMail,
        wanted: list[str],
        delivery: Delivery,
        error: str | None,
        *,
        met_relay: bool,
        unanswered: bool = False,
    ) -> Attempt:
        """``met_relay``: False when the relay could not be used at all (down, TLS, login): such a try says nothing
        of the mail, is not one of the tries the day's limit counts, and never gives it up (the relay's backoff
        governs). ``unanswered``: the whole message went without the relay's final answer; a mail so taken as
        delivered keeps ``error``, which says so."""
        delivered = (*mail.delivered, *delivery.accepted)
        refused = {**mail.refused, **delivery.refused}
        problems = {**delivery.deferred, **delivery.refused}
        error = error or ("; ".join(f"{r}: {e}" for r, e in problems.items()) or None)
        still = [r for r in wanted if r not in delivered and r not in refused]
        late = (
            met_relay and self._clock.wall() - mail.created_at >= _GIVE_UP_S and mail.relay_tries + 1 >= _GIVE_UP_TRIES
        )
        if still and late:  # deferred all along: a person must look
            return Attempt(
                state=MailState.DEAD,
                delivered=delivered,
                refused=refused,
                error=f"not taken within {_GIVE_UP_S // 3600:g} h, given up; last answer: {error or 'none'}",
                next_attempt_at=self._clock.wall(),
                unanswered=unanswered,
            )
        if still:  # some still to try: back off, then again
            delay = retry_delay(mail.attempts + 1, base=self._cfg.retry_base_s, cap=self._cfg.retry_max_s)
            return Attempt(
                state=MailState.PENDING,
                delivered=delivered,
                refused=refused,
                error=error,
                next_attempt_at=self._clock.wall() + delay,
                met_relay=met_relay,
                unanswered=unanswered,
            )
        # Everyone configured now has it, or was refused for good: a refusal needs a person (fix the address, retry).
        state = MailState.DEAD if any(r in refused for r in wanted) else MailState.SENT
        return Attempt(
            state=state,
            delivered=delivered,
            refused=refused,
            error=error if state == MailState.DEAD or unanswered else None,
            next_attempt_at=self._clock.wall(),
            unanswered=unanswered,
        )

    async def _server_failed(self, error: str, *, held: bool) -> LoginRest | None:
        """Backs the outbox off; returns the rest a refused login begins, for the attempt's record."""
        self._server_failures += 1
        delay = retry_delay(self._server_failures, base=self._cfg.retry_base_s, cap=self._cfg.retry_max_s)
        rest = None
        if held:
            delay = max(delay, LOGIN_HOLD_S)
            rest = await begin_rest(self._smtp, error, self._clock.wall() + delay)
            error = self._resting(error, rest.until)
        self._server_retry_at, self._login_resting = self._clock.mono() + delay, held
        self.server_error = error
        log.warning("alert_mail_failed", error=error, retry_in_s=round(delay, 1), failures=self._server_failures)
        return rest

    async def login_rest_left(self) -> float | None:
        """Seconds the relay still rests after it refused the login (this run's refusal or an earlier run's), None
        when it does not: for the mail that goes around the outbox (the full disk's storage alarm), which must not
        log in again meanwhile either."""
        await self._resume_rest()
        wait = self.server_wait()
        return wait if self._login_resting and wait else None

    async def login_refused(self, error: str) -> float:
        """The relay refused the login for good to a mail that went around the outbox: the outbox rests as after its
        own refusal, kept in the database if that takes the write (a full disk does not: then for this run). Returns
        the rest's length in seconds."""
        rest = await self._server_failed(error, held=True)
        assert rest is not None
        try:
            await self._store.begin_login_rest(rest)
            self._rest_stored = True
        except StoreError as err:
            log.warning("alert_login_rest_not_stored", error=str(err))
        return rest.until - self._clock.wall()

    def _tell(self, mail: OutboxMail, delivery: Delivery, attempt: Attempt) -> None:
        if attempt.state == MailState.DEAD:
            log.error("alert_mail_dead", mail_id=mail.id, subject=mail.subject, error=attempt.error)
        elif attempt.unanswered and delivery.accepted:
            log.warning(
                "alert_mail_unconfirmed",
                mail_id=mail.id,
                subject=mail.subject,
                message_id=mail.message_id,
                error=attempt.error,
            )
        elif attempt.state == MailState.PENDING and attempt.error:
            log.warning("alert_mail_deferred", mail_id=mail.id, error=attempt.error, attempts=mail.attempts + 1)
        if delivery.accepted:
            key = mail.group_key or mail.kind
            self._bus.publish(
                AlertSent(
                    alert_type=key.split(":", 1)[0],
                    key=key,
                    resolved=mail.kind == "resolved",
                    recipients=len(delivery.accepted),
                )
            )

    async def retry(self, mail_id: int) -> OutboxMail:
        """A person's "try again now": also the relay, which may have been put right during its backoff (an hour
        after a refused password)."""
        async with self._lock:
            await self._resume_rest()
            mail = await self._store.retry(mail_id, self._clock.wall())
            self._server_retry_at, self._rest_stored = None, False  # the store's rest ended with the retry
            self._login_resting = False
            return mail

    async def discard(self, mail_id: int) -> OutboxMail:
        async with self._lock:
            return await self._store.discard(mail_id)

    async def status(self, waiting_signals: int) -> OutboxStatus:
        # Not under the lock: a relay being tried would hold the answer up to smtp.timeout_s.
        await self._resume_rest()
        pending, dead = await self._store.outbox()
        return OutboxStatus(
            pending=pending,
            dead=dead,
            unconfirmed=await self._store.unconfirmed(_UNANSWERED_MAX),
            unrecorded=self.unrecorded,
            waiting_signals=waiting_signals,
            server_error=self.server_error,
        )
