"""Alert tables: throttle state per group, the mail outbox, silences and the log of what was mailed or held."""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import json
from typing import TYPE_CHECKING, Any

from edge.errors import NotFoundError, WrongStateError
from edge.store.meta import UPSERT_META

if TYPE_CHECKING:  # the mail's type is imported where no database is opened (edge health, mailing from outside)
    import aiosqlite

    from edge.store.db import Database

_MAX_ITEMS = 20  # a group mail lists at most this many siblings (the newest)
_DIGEST_META = "alerts_last_digest"
_MAIL_DATED_META = "alerts_last_mail_dated"  # the last mail's Date: a restart dates none before it
_DOWN_META = "{}_down_since"  # when a link (central, mqtt) went down (MonoTime), kept while it is down
_LOGIN_REST_META = "alerts_login_rest"  # the relay's rest after it refused the login (LoginRest), across restarts
_CLOCK_META = "alerts_clock"  # when the stored times last matched the wall clock (ClockMark), for a later run's start


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signal:
    """One occurrence: a condition started (firing) or ended, for a group ``type:subject``."""

    type: str
    subject: str
    firing: bool
    at: float  # wall time, for the record
    mono: float = 0.0  # monotonic time, from which ``at`` is worked out again should the wall clock step
    severity: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    item: dict[str, Any] | None = None  # a sibling in the group (a dead job), keyed by its "id"
    count: int = 1  # occurrences it stands for (several, once compacted; none: a rise in severity of a firing one)
    # The first state a run found of a condition that may have held since the run before (a printer off at the start),
    # or a refusal told again (a redelivered message): no new occurrence if its group still fires, with its item.
    again: bool = False

    @property
    def key(self) -> str:
        return f"{self.type}:{self.subject}"


class MailState(enum.StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    SENT = "sent"  # every recipient configured now has it
    DEAD = "dead"  # refused for good (5xx) for a recipient or as a whole: a person retries or discards it
    DISCARDED = "discarded"  # a person decided it need not go
    SUPERSEDED = "superseded"  # its problem was over before it could go: the all-clear that followed tells it whole


class Audience(enum.StrEnum):
    """Which configured list a mail goes to, read at each attempt: a corrected address reaches unsent mails."""

    TO = "to"  # alerts.to
    CRITICAL = "critical"  # alerts.to and alerts.critical_to

    @classmethod
    def of(cls, severity: str) -> Audience:
        """Who a group's mails go to, by its severity."""
        return cls.CRITICAL if severity == "critical" else cls.TO


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxMail:
    """One mail in the outbox."""

    id: int
    kind: str  # firing | resolved | reminder | digest | test
    group_key: str | None
    subject: str
    text: str
    html: str
    state: MailState
    audience: Audience
    message_id: str  # the same on every attempt, so a mail sent twice is recognisable as one
    created_at: float
    attempts: int
    relay_tries: int  # the attempts that met the relay (it answered for this mail)
    unanswered: int  # the attempts whose whole message went without the relay's final answer: each may have arrived
    last_error: str | None
    delivered: tuple[str, ...]  # recipients that accepted it
    refused: dict[str, str]  # recipient -> the relay's refusal for good
    sent_at: float | None

    def public(self) -> dict[str, Any]:
        """For the API and the CLI: everything but the bodies."""
        return {
            "id": self.id,
            "kind": self.kind,
            "group_key": self.group_key,
            "subject": self.subject,
            "state": self.state.value,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered": list(self.delivered),
            "refused": self.refused,
            "sent_at": self.sent_at,
            "message_id": self.message_id,  # what the relay's log names it by
        }


def _outbox_mail(row: aiosqlite.Row) -> OutboxMail:
    return OutboxMail(
        id=row["id"],
        kind=row["kind"],
        group_key=row["group_key"],
        subject=row["subject"],
        text=row["text_body"],
        html=row["html_body"],
        state=MailState(row["state"]),
        audience=Audience(row["audience"]),
        message_id=row["message_id"],
        created_at=row["created_at"],
        attempts=row["attempts"],
        relay_tries=row["relay_tries"],
        unanswered=row["unanswered"],
        last_error=row["last_error"],
        delivered=tuple(json.loads(row["delivered"])),
        refused=json.loads(row["refused"]),
        sent_at=row["sent_at"],
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoginRest:
    """The relay refused the login for good (5xx): with the same mail settings it is not tried before ``until``."""

    settings: str  # a salted, slow hash of the mail settings it refused (never the password itself)
    salt: str
    until: float  # wall time
    error: str  # what the relay answered, as told


# The rest's stored value, read by the alert store and, without the agent, by edge.store.files.
LOGIN_REST_SQL, LOGIN_REST_ARGS = "SELECT value FROM meta WHERE key = ?", (_LOGIN_REST_META,)


def login_rest_of(value: str | None) -> LoginRest | None:
    """The rest the value ``LOGIN_REST_SQL`` reads holds; None for none, or for one not written so."""
    try:
        return LoginRest(**json.loads(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attempt:
    """What one attempt left behind, as the outbox records it."""

    state: MailState
    delivered: tuple[str, ...]  # all recipients that have it so far
    refused: dict[str, str]
    error: str | None
    next_attempt_at: float
    dated: float | None = None  # the Date of the mail it sent (None: none sent)
    met_relay: bool = True  # False: the relay could not be used at all (not counted in relay_tries)
    unanswered: bool = False  # the whole message went, the relay's final answer never came (counted in unanswered)
    rest: LoginRest | None = None  # the relay's rest this attempt's refused login began
    rest_over: bool = False  # this attempt got past the login (or new settings did): no rest any more


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonoTime:
    """A moment on the monotonic clock of one boot: runs of the agent within that boot can measure from it, whatever
    the wall clock did between them."""

    boot: str
    mono: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClockMark:
    """A moment the stored alert times matched the wall clock, on both clocks of one boot: a later run of that boot
    measures a step of the wall clock since (wall time moving unlike monotonic time) from it, whether the runs between
    stopped cleanly or were killed."""

    boot: str
    wall: float
    mono: float


def _mono_json(at: MonoTime | None) -> dict[str, str | float]:
    return {} if at is None else {"boot": at.boot, "mono": at.mono}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestMark:
    """The last digest: when it went (wall time, to know today's is done; and on the monotonic clock, where known)
    and the last log line it covered."""

    at: float
    log_id: int
    sent: MonoTime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FiringGroup:
    """A group of one type whose condition holds now."""

    subject: str
    severity: str  # critical | warning


@dataclasses.dataclass(frozen=True, kw_only=True)
class Silence:
    """A person's "no mail for this until then" (table alert_silences)."""

    id: int
    matcher: str  # type or type:subject, shell wildcards allowed
    starts_at: float
    ends_at: float
    comment: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One line of what became of a group's news (table alert_log)."""

    id: int
    at: float
    group_key: str
    action: str  # mailed | suppressed | digest
    detail: str  # the mail's kind, or why it was held back
    count: int  # occurrences it stands for


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecentEntry(LogEntry):
    state: str | None  # the group's condition now (firing | resolved); None once the group is gone
    # What became of the mail a "mailed" line queued (MailState: pending, sent, superseded, dead, discarded); None
    # for other lines, and for a mail that went straight to the relay (the full disk's alarm)
    mail: str | None = None
    mail_delivered: int = 0  # the recipients that have that mail: a dead one may have reached the managers


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestEntry(LogEntry):
    type: str
    subject: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupSummary:
    """An alert group as the status page lists it."""

    type: str
    subject: str
    severity: str  # critical | warning
    state: str  # firing | resolved: the condition now
    changed_at: float  # its last firing/resolved transition


def compact(signals: list[Signal]) -> list[Signal]:
    """At most two per group, with the same outcome when applied: its firings as one (counted, from the first one's
    time, the newest details and sibling), then its resolve if the group ended resolved."""
    by_key: dict[str, list[Signal]] = {}
    for signal in signals:
        by_key.setdefault(signal.key, []).append(signal)
    compacted = []
    for group in by_key.values():
        if firings := [s for s in group if s.firing]:
            details: dict[str, Any] = {}
            for s in firings:
                details.update(s.details)
            # A repeat beside the occurrence it repeats (a redelivery while that waits here) is not one more
            count = sum(s.count for s in [s for s in firings if not s.again] or firings)
            first = firings[0]
            compacted.append(
                dataclasses.replace(
                    firings[-1],
                    at=first.at,
                    mono=first.mono,
                    details=details,
                    count=count,
                    again=all(s.again for s in firings),
                )
            )
        if not group[-1].firing:
            compacted.append(group[-1])
    return compacted


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mail:
    recipients: list[str]
    subject: str
    text: str
    html: str


def _merge(details: dict[str, Any], signal: Signal) -> tuple[dict[str, Any], bool]:
    merged = {**details, **signal.details}
    items = list(details.get("items", []))
    new_item = not _listed(details, signal.item)
    if new_item:
        items = [*items, signal.item][-_MAX_ITEMS:]
    if items:
        merged["items"] = items
    return merged, new_item


def _listed(details: dict[str, Any], item: dict[str, Any] | None) -> bool:
    """Whether a group's details hold ``item`` (by id); a signal without one is the group itself. A repeated order's
    item missing from its firing group (another order's refusal stored, this one's lost in a crash) is added."""
    return item is None or any(i.get("id") == item.get("id") for i in details.get("items", []))


def _repeats(details: dict[str, Any], item: dict[str, Any] | None) -> bool:
    """Whether a repeat (again) may be one the group already holds: its item listed, or a full list, which has dropped
    the oldest and may have dropped it (30 refusals redelivered after a crash counted 30 more, "weitere Male", the
    verify83 probe, F1). Only a list with room tells an item that is not there as one never stored (a crash lost it)."""
    return _listed(details, item) or len(details.get("items", [])) >= _MAX_ITEMS


def group_dict(row: aiosqlite.Row) -> dict[str, Any]:
    group = dict(row)
    group["details"] = json.loads(group["details"])
    return group


class AlertStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def apply(self, signals: list[Signal]) -> list[tuple[Signal, bool]]:
        """Fold occurrences into their groups in one transaction; says for each whether it started an episode."""
        outcomes = []
        async with self._db.transaction() as conn:
            for s in signals:
                rows = list(await conn.execute_fetchall("SELECT * FROM alert_groups WHERE key = ?", (s.key,)))
                if s.firing and not s.count and (not rows or rows[0]["state"] != "firing"):
                    continue  # a rise in severity (no occurrence of its own) of an outage over by now
                if not rows:
                    if not s.firing:
                        continue
                    details, new_item = _merge({}, s)
                    await conn.execute(
                        "INSERT INTO alert_groups(key, type, subject, severity, state, first_at, changed_at,"
                        " fires_since_mail, fires_total, new_items, details)"
                        " VALUES (?, ?, ?, ?, 'firing', ?, ?, ?, ?, ?, ?)",
                        (
                            s.key,
                            s.type,
                            s.subject,
                            s.severity,
                            s.at,
                            s.at,
                            s.count,
                            s.count,
                            int(new_item),
                            json.dumps(details),
                        ),
                    )
                    outcomes.append((s, True))
                    continue
                g = group_dict(rows[0])
                if s.firing and s.again and g["state"] == "firing" and _repeats(g["details"], s.item):
                    continue  # found as the run before left it: the same outage, not one more
                if s.firing:
                    # A new episode only once the last one is fully told (or dropped); flapping stays one episode.
                    new_episode = (
                        g["state"] == "resolved" and g["notified"] == "resolved" and g["fires_since_mail"] == 0
                    )
                    details, new_item = _merge({} if new_episode else g["details"], s)
                    await conn.execute(
                        "UPDATE alert_groups SET state = 'firing', severity = ?, first_at = ?, changed_at = ?,"
                        " fires_since_mail = fires_since_mail + ?, fires_total = fires_total + ?,"
                        " new_items = new_items + ?, details = ? WHERE key = ?",
                        (
                            s.severity,
                            s.at if new_episode else g["first_at"],
                            s.at if g["state"] != "firing" else g["changed_at"],
                            s.count,
                            s.count,
                            int(new_item),
                            json.dumps(details),
                            s.key,
                        ),
                    )
                    outcomes.append((s, new_episode))
                elif g["state"] == "firing":
                    details, _ = _merge(g["details"], s)
                    await conn.execute(
                        "UPDATE alert_groups SET state = 'resolved', changed_at = ?, details = ? WHERE key = ?",
                        (s.at, json.dumps(details), s.key),
                    )
        return outcomes

    async def unreached_alarms(self) -> set[str]:
        """The groups whose alarm (or reminder) waits in the outbox delivered to nobody yet."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT group_key FROM alert_mails WHERE state = 'pending' AND kind IN ('firing', 'reminder')"
            " AND delivered = '[]' AND group_key IS NOT NULL"
        )
        return {r[0] for r in rows}

    async def open_groups(self) -> list[dict[str, Any]]:
        """Groups with something untold or a manager who believes they still fire."""
        rows = await self._db.fetchall(
            "SELECT * FROM alert_groups WHERE fires_since_mail > 0 OR notified = 'firing' OR state = 'firing'"
        )
        return [group_dict(r) for r in rows]

    async def unsettled_items(self, key: str) -> list[str] | None:
        """Of the orders a firing group lists (its items' ids), those neither stored here since nor cancelled (a cancel
        kept for an order not here): an order central has that failed validation is settled once it came corrected.
        None while the group is not firing."""
        row = await self._db.fetchone("SELECT details FROM alert_groups WHERE key = ? AND state = 'firing'", (key,))
        if row is None:
            return None
        ids = [str(item["id"]) for item in json.loads(row[0]).get("items", [])]
        if not ids:
            return []
        rows = await self._db.fetchall(
            "SELECT id FROM orders WHERE id IN (SELECT value FROM json_each(?1))"
            " UNION SELECT order_id FROM pending_cancels WHERE order_id IN (SELECT value FROM json_each(?1))",
            (json.dumps(ids),),
        )
        settled = {r[0] for r in rows}
        return [i for i in ids if i not in settled]

    async def firing(self, type_name: str) -> list[FiringGroup]:
        rows = await self._db.fetchall(
            "SELECT subject, severity FROM alert_groups WHERE type = ? AND state = 'firing'", (type_name,)
        )
        return [FiringGroup(**dict(r)) for r in rows]

    async def told_firing_at(self, key: str) -> float | None:
        """When the manager was last sent the group's alarm (or it was queued for them), while that is the last news
        they have; None otherwise, also when that news went to the digest (the storm guard's: the manager has not had
        it). Over since, and back before its all-clear was due, it is still the news (a card that stalls again a
        second after its stall: no second alarm). Read only: it answers on a full disk."""
        row = await self._db.fetchone(
            "SELECT last_sent_at FROM alert_groups WHERE key = ? AND notified = 'firing' AND mailed = 'firing'",
            (key,),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def warning_mails_since(self, since: float) -> int:
        """Warning mails queued since ``since`` that went or will go (what the hour's cap counts): one replaced before
        it went (superseded), given up or discarded is no mail in the manager's box, nor the test mail; critical ones
        pass the cap and count for nothing in it."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM alert_mails WHERE created_at >= ? AND kind != 'test' AND audience != 'critical'"
            " AND state NOT IN ('superseded', 'dead', 'discarded')",
            (since,),
        )
        return int(row[0]) if row else 0

    async def told(self, group: dict[str, Any], *, kind: str, now: float, mail: Mail | None, count: int) -> int | None:
        """The group's news went out (as a mail, or into the digest): reset its counters and log it, all in one commit.

        Writing the mail to the outbox in the same transaction as the throttle state is what makes a crash
        or restart neither lose nor repeat it.
        """
        mail_id = None
        async with self._db.transaction() as conn:
            await _record_told(conn, group["key"], kind=kind, at=now, mailed=mail is not None, count=count)
            if mail is not None:
                # An alarm nobody has received yet (the relay turned it away) would only arrive after its group's
                # newer news: after its problem is over (the all-clear says from when to when), or next to the mail
                # this one replaces (a warning turned critical, a reminder: the new mail says all the old one did), a
                # stale warning right after the critical mail. Alertmanager likewise drops a notification its group's
                # next state superseded. One delivered to anybody stays, for the others.
                cursor = await conn.execute(
                    "UPDATE alert_mails SET state = 'superseded' WHERE group_key = ? AND state = 'pending'"
                    " AND kind IN ('firing', 'reminder') AND delivered = '[]'",
                    (group["key"],),
                )
                superseded = cursor.rowcount
                await cursor.close()
                if kind == "resolved" and superseded:
                    # An alarm that reached nobody armed no storm guard (one mailed straight to the relay, or
                    # delivered to anybody, did): the device's next outage is the manager's first word of it, not ten
                    # minutes held after a lone all-clear.
                    await conn.execute(
                        "UPDATE alert_groups SET critical_mail_at = NULL WHERE key = ?1 AND NOT EXISTS (SELECT 1"
                        " FROM alert_mails m WHERE m.group_key = ?1 AND m.kind = 'firing' AND m.delivered != '[]'"
                        " AND m.created_at >= alert_groups.critical_mail_at)",
                        (group["key"],),
                    )
                if kind == "firing":
                    # The problem is back (or worse): an all-clear still owed, to anybody, is news this alarm makes
                    # stale. Not one behind an older alarm still owed to somebody (the relay greylisted them): they get
                    # that alarm, so its all-clear too, before this one; else their mailbox said down twice, never up.
                    await conn.execute(
                        "UPDATE alert_mails SET state = 'superseded' WHERE group_key = ?1 AND state = 'pending'"
                        " AND kind = 'resolved' AND NOT EXISTS (SELECT 1 FROM alert_mails AS alarm WHERE"
                        " alarm.group_key = ?1 AND alarm.state = 'pending' AND alarm.kind IN ('firing', 'reminder')"
                        " AND alarm.id < alert_mails.id)",
                        (group["key"],),
                    )
                mail_id = await _insert_mail(conn, group["key"], kind, mail, now, Audience.of(group["severity"]))
        return mail_id

    async def group(self, key: str) -> dict[str, Any] | None:
        row = await self._db.fetchone("SELECT * FROM alert_groups WHERE key = ?", (key,))
        return None if row is None else group_dict(row)

    async def mailed_directly(self, key: str, *, at: float, owed: Mail | None = None, delivered: list[str]) -> None:
        """The group's alarm went straight to the relay at ``at`` while the database refused writes (the storage
        alert): now that its occurrences are stored, it is told, as if the outbox had sent it then. What comes next
        is its all-clear (or, within the storm window, the digest), not the same alarm again. ``owed``: the alarm
        for the recipients the relay deferred, into the outbox as a mail ``delivered`` to the others already, so it
        goes out before the all-clear and is not superseded by it."""
        async with self._db.transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT fires_since_mail, severity FROM alert_groups WHERE key = ? AND fires_since_mail > 0", (key,)
                )
            )
            if not rows:
                return
            await _record_told(conn, key, kind="firing", at=at, mailed=True, count=rows[0][0])
            if owed is not None:
                await _insert_mail(conn, key, "firing", owed, at, Audience.of(rows[0][1]), delivered=delivered)

    async def digested_since_mail(self, key: str) -> int:
        """Occurrences of the group whose news went to the digest instead of a mail since its last mail (by log order,
        not time: a stepped clock does not reorder it)."""
        row = await self._db.fetchone(
            "SELECT COALESCE(SUM(count), 0) FROM alert_log WHERE group_key = ?1 AND action = 'digest'"
            " AND detail = 'firing' AND id > COALESCE((SELECT MAX(id) FROM alert_log WHERE group_key = ?1"
            " AND action = 'mailed'), 0)",
            (key,),
        )
        return int(row[0]) if row else 0

    async def drop(self, key: str, now: float, reason: str, count: int) -> None:
        """The episode is over and nobody needs to hear of it (or of its end): close it without a mail, and out of the
        digest."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_groups SET notified = 'resolved', fires_since_mail = 0, new_items = 0, held_reason = NULL"
                " WHERE key = ?",
                (key,),
            )
            await conn.execute(
                "INSERT INTO alert_log(at, group_key, action, detail, count) VALUES (?, ?, 'suppressed', ?, ?)",
                (now, key, reason, count),
            )

    async def hold(self, key: str, reason: str, now: float, count: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("UPDATE alert_groups SET held_reason = ? WHERE key = ?", (reason, key))
            await conn.execute(
                "INSERT INTO alert_log(at, group_key, action, detail, count) VALUES (?, ?, 'suppressed', ?, ?)",
                (now, key, reason, count),
            )

    async def due_mails(self, now: float, limit: int = 20) -> list[OutboxMail]:
        """Critical mails first (their first mail is promised within 10 s), then the oldest."""
        rows = await self._db.fetchall(
            "SELECT * FROM alert_mails WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY audience = 'critical' DESC, id LIMIT ?",
            (now, limit),
        )
        return [_outbox_mail(r) for r in rows]

    async def next_mail_at(self) -> float | None:
        row = await self._db.fetchone("SELECT MIN(next_attempt_at) FROM alert_mails WHERE state = 'pending'")
        return None if row is None or row[0] is None else float(row[0])

    async def pending_before(self, mail: OutboxMail) -> list[OutboxMail]:
        """The older mails of ``mail``'s group still waiting for somebody."""
        if mail.group_key is None:
            return []
        rows = await self._db.fetchall(
            "SELECT * FROM alert_mails WHERE group_key = ? AND state = 'pending' AND id < ?", (mail.group_key, mail.id)
        )
        return [_outbox_mail(r) for r in rows]

    async def mail(self, mail_id: int) -> OutboxMail:
        row = await self._db.fetchone("SELECT * FROM alert_mails WHERE id = ?", (mail_id,))
        if row is None:
            raise NotFoundError(f"alert mail {mail_id} does not exist")
        return _outbox_mail(row)

    async def record(self, mail_id: int, attempt: Attempt, now: float) -> None:
        async with self._db.transaction() as conn:
            if attempt.delivered:
                # An alarm or reminder the relay took late (it was down) reached the manager now: its group's
                # intervals count from now, or the next reminder could follow it within a minute.
                await conn.execute(
                    "UPDATE alert_groups SET last_sent_at = MAX(last_sent_at, ?1) WHERE notified = 'firing' AND key ="
                    " (SELECT group_key FROM alert_mails WHERE id = ?2 AND kind IN ('firing', 'reminder')"
                    " AND delivered = '[]' AND state = 'pending')",
                    (now, mail_id),
                )
            # An attempt that was under way when its mail was superseded keeps it superseded unless it delivered it.
            await conn.execute(
                "UPDATE alert_mails SET attempts = attempts + 1, relay_tries = relay_tries + ?8,"
                " unanswered = unanswered + ?9,"
                " state = CASE WHEN state = 'superseded' AND ?1 != 'sent' THEN state ELSE ?1 END, delivered = ?2,"
                " refused = ?3, last_error = ?4, next_attempt_at = ?5, sent_at = CASE WHEN ?1 = 'sent' THEN ?6 ELSE"
                " sent_at END WHERE id = ?7",
                (
                    attempt.state,
                    json.dumps(attempt.delivered),
                    json.dumps(attempt.refused),
                    attempt.error[:500] if attempt.error else None,
                    attempt.next_attempt_at,
                    now,
                    mail_id,
                    int(attempt.met_relay),
                    int(attempt.unanswered),
                ),
            )
            if attempt.dated is not None:
                await conn.execute(UPSERT_META, (_MAIL_DATED_META, json.dumps(attempt.dated)))
            if attempt.rest is not None:
                await conn.execute(UPSERT_META, (_LOGIN_REST_META, json.dumps(dataclasses.asdict(attempt.rest))))
            elif attempt.rest_over:
                await conn.execute("DELETE FROM meta WHERE key = ?", (_LOGIN_REST_META,))

    async def last_mail_dated(self) -> float | None:
        """The Date of the last mail the outbox sent, in this run or an earlier one."""
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (_MAIL_DATED_META,))
        try:
            return float(json.loads(row[0])) if row is not None else None
        except (TypeError, ValueError):
            return None

    async def login_rest(self) -> LoginRest | None:
        """The relay's rest after a refused login, as this run or an earlier one began it (None: none)."""
        row = await self._db.fetchone(LOGIN_REST_SQL, LOGIN_REST_ARGS)
        return login_rest_of(row[0] if row is not None else None)

    async def begin_login_rest(self, rest: LoginRest) -> None:
        """The relay's rest, begun by a mail that went around the outbox (the full disk's storage alarm)."""
        async with self._db.transaction() as conn:
            await conn.execute(UPSERT_META, (_LOGIN_REST_META, json.dumps(dataclasses.asdict(rest))))

    async def shorten_login_rest(self, until: float) -> None:
        """A rest that seemed to end later than ``until`` (the clock was set back since) ends then."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE meta SET value = json_set(value, '$.until', ?1)"
                " WHERE key = ?2 AND json_extract(value, '$.until') > ?1",
                (until, _LOGIN_REST_META),
            )

    async def retry(self, mail_id: int, now: float) -> OutboxMail:
        """A person's "try again now": a dead or waiting mail is due at once, refused addresses are asked again, and
        the relay too, should it rest after a refused login."""
        return await self._act(
            mail_id,
            (MailState.DEAD, MailState.PENDING),
            "retried",
            (
                "UPDATE alert_mails SET state = 'pending', refused = '{}', next_attempt_at = ? WHERE id = ?",
                (now, mail_id),
            ),
            ("DELETE FROM meta WHERE key = ?", (_LOGIN_REST_META,)),
        )

    async def discard(self, mail_id: int) -> OutboxMail:
        """A person's "never mind": the mail is kept for the record but never sent."""
        return await self._act(
            mail_id,
            (MailState.DEAD, MailState.PENDING),
            "discarded",
            ("UPDATE alert_mails SET state = 'discarded' WHERE id = ?", (mail_id,)),
        )

    async def _act(
        self, mail_id: int, allowed: tuple[MailState, ...], verb: str, *statements: tuple[str, tuple[Any, ...]]
    ) -> OutboxMail:
        async with self._db.transaction() as conn:
            rows = list(await conn.execute_fetchall("SELECT state FROM alert_mails WHERE id = ?", (mail_id,)))
            if not rows:
                raise NotFoundError(f"alert mail {mail_id} does not exist")
            if rows[0][0] not in allowed:
                raise WrongStateError(
                    f"alert mail {mail_id} is {rows[0][0]}; only a dead or waiting mail can be {verb}"
                )
            for sql, params in statements:
                await conn.execute(sql, params)
        return await self.mail(mail_id)

    async def add_mail(self, kind: str, mail: Mail, now: float, audience: Audience) -> int:
        async with self._db.transaction() as conn:
            return await _insert_mail(conn, None, kind, mail, now, audience)

    async def outbox(self, limit: int = 50) -> tuple[int, list[OutboxMail]]:
        """How many mails wait, and the dead-lettered ones (newest first)."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM alert_mails WHERE state = 'pending'")
        dead = await self._db.fetchall(
            "SELECT * FROM alert_mails WHERE state = 'dead' ORDER BY id DESC LIMIT ?", (limit,)
        )
        return (int(row[0]) if row else 0), [_outbox_mail(r) for r in dead]

    async def unconfirmed(self, unanswered: int, limit: int = 50) -> list[OutboxMail]:
        """The mails taken as delivered after ``unanswered`` tries went without the relay's final answer (newest
        first): they may never have arrived."""
        rows = await self._db.fetchall(
            "SELECT * FROM alert_mails WHERE state = 'sent' AND unanswered >= ? ORDER BY id DESC LIMIT ?",
            (unanswered, limit),
        )
        return [_outbox_mail(r) for r in rows]

    async def digest_entries(self, after_log_id: int) -> list[DigestEntry]:
        """What went into the digest since the last one, by log id: a clock step cannot move a line out of it."""
        rows = await self._db.fetchall(
            "SELECT l.id, l.at, l.group_key, l.action, l.detail, l.count, g.type, g.subject"
            " FROM alert_log l JOIN alert_groups g ON g.key = l.group_key"
            " WHERE l.action = 'digest' AND l.id > ? ORDER BY l.id",
            (after_log_id,),
        )
        return [DigestEntry(**dict(r)) for r in rows]

    async def last_digest(self) -> DigestMark | None:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (_DIGEST_META,))
        if row is None:
            return None
        value = json.loads(row[0])
        sent = MonoTime(boot=str(value["boot"]), mono=float(value["mono"])) if "boot" in value else None
        return DigestMark(at=float(value["at"]), log_id=int(value["log_id"]), sent=sent)

    async def digested(self, mark: DigestMark, mail: Mail | None) -> None:
        """The digest is done: its mail (if there was news) and the mark in one commit, so neither goes alone."""
        async with self._db.transaction() as conn:
            if mail is not None:
                await _insert_mail(conn, None, "digest", mail, mark.at, Audience.TO)
            await conn.execute(
                UPSERT_META,
                (_DIGEST_META, json.dumps({"at": mark.at, "log_id": mark.log_id} | _mono_json(mark.sent))),
            )

    async def down_since(self, link: str) -> MonoTime | None:
        """When ``link`` (central, mqtt) went down, as an earlier run recorded it (None: up, or not known)."""
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (_DOWN_META.format(link),))
        try:
            value = json.loads(row[0]) if row is not None else None
            return MonoTime(boot=str(value["boot"]), mono=float(value["mono"])) if value is not None else None
        except (TypeError, KeyError, ValueError):  # an older version's wall time: of no use across a clock step
            return None

    async def record_down_since(self, link: str, since: MonoTime | None) -> None:
        """Keep when ``link`` went down across restarts (None: it is up again)."""
        async with self._db.transaction() as conn:
            if since is None:
                await conn.execute("DELETE FROM meta WHERE key = ?", (_DOWN_META.format(link),))
            else:
                await conn.execute(UPSERT_META, (_DOWN_META.format(link), json.dumps(_mono_json(since))))

    async def clock_mark(self, boot: str | None) -> tuple[float, float] | None:
        """(wall, monotonic) time of the last ClockMark kept, if it was in ``boot`` (this one: its runs share the
        monotonic clock); None otherwise (a reboot, no boot id, a store from before stop 83)."""
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (_CLOCK_META,))
        kept = json.loads(row[0]) if row is not None else {}
        if boot is None or kept.get("boot") != boot:
            return None
        return float(kept["wall"]), float(kept["mono"])

    async def shift_times(self, seconds: float, mark: ClockMark | None) -> None:
        """The wall clock stepped by ``seconds``: every time these tables measure a duration from moves with it, so
        the durations stay as they were (and times written before the step become the true ones). ``mark``: the
        moment they match the clock again, kept in the same commit, so no later start takes the step once more."""
        async with self._db.transaction() as conn:
            await _keep_clock_mark(conn, mark)
            await conn.execute(
                "UPDATE alert_groups SET first_at = first_at + ?1, changed_at = changed_at + ?1,"
                " last_sent_at = last_sent_at + ?1, critical_mail_at = critical_mail_at + ?1",
                (seconds,),
            )
            await conn.execute(
                "UPDATE alert_mails SET created_at = created_at + ?1, next_attempt_at = next_attempt_at + ?1,"
                " sent_at = sent_at + ?1",
                (seconds,),
            )
            await conn.execute(
                "UPDATE alert_silences SET starts_at = starts_at + ?1, ends_at = ends_at + ?1", (seconds,)
            )
            await conn.execute("UPDATE alert_log SET at = at + ?1", (seconds,))
            await conn.execute(
                "UPDATE meta SET value = json_set(value, '$.at', json_extract(value, '$.at') + ?1) WHERE key = ?2",
                (seconds, _DIGEST_META),
            )
            await conn.execute(
                "UPDATE meta SET value = json_set(value, '$.until', json_extract(value, '$.until') + ?1)"
                " WHERE key = ?2",
                (seconds, _LOGIN_REST_META),
            )

    async def keep_clock_mark(self, mark: ClockMark) -> None:
        """The stored times match the wall clock at ``mark``: a later run of its boot measures a step from it."""
        async with self._db.transaction() as conn:
            await _keep_clock_mark(conn, mark)

    async def clamp_future(self, now: float) -> None:
        """Times after ``now`` were written by a clock that was ahead (or before a restart with a clock behind):
        they become now, so no duration waits for a time that is hours away. A silence keeps its length."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_groups SET first_at = MIN(first_at, ?1), changed_at = MIN(changed_at, ?1),"
                " last_sent_at = MIN(last_sent_at, ?1), critical_mail_at = MIN(critical_mail_at, ?1)"
                " WHERE MAX(first_at, changed_at, COALESCE(last_sent_at, 0), COALESCE(critical_mail_at, 0)) > ?1",
                (now,),
            )
            await conn.execute(
                "UPDATE alert_mails SET created_at = MIN(created_at, ?1), next_attempt_at = MIN(next_attempt_at, ?1),"
                " sent_at = MIN(sent_at, ?1) WHERE MAX(created_at, next_attempt_at) > ?1",
                (now,),
            )
            await conn.execute(
                "UPDATE alert_silences SET ends_at = ends_at - (starts_at - ?1), starts_at = ?1 WHERE starts_at > ?1",
                (now,),
            )
            await conn.execute("UPDATE alert_log SET at = ?1 WHERE at > ?1", (now,))
            await conn.execute(  # a digest mark on a day still to come held back every digest until then
                "UPDATE meta SET value = json_set(value, '$.at', ?1)"
                " WHERE key = ?2 AND json_extract(value, '$.at') > ?1",
                (now, _DIGEST_META),
            )

    async def add_silence(self, matcher: str, *, starts_at: float, ends_at: float, comment: str = "") -> int:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO alert_silences(matcher, starts_at, ends_at, comment) VALUES (?, ?, ?, ?)",
                (matcher, starts_at, ends_at, comment),
            )
            silence_id = cursor.lastrowid
            await cursor.close()
        assert silence_id is not None
        return silence_id

    async def active_silences(self, now: float) -> list[Silence]:
        rows = await self._db.fetchall(
            "SELECT id, matcher, starts_at, ends_at, comment FROM alert_silences WHERE starts_at <= ?1 AND ends_at > ?1"
            " ORDER BY ends_at",
            (now,),
        )
        return [Silence(**dict(r)) for r in rows]

    async def recent(self, limit: int = 50) -> list[RecentEntry]:
        """The log (mailed, put in the digest, or held back and why), newest first, with each group's state now."""
        rows = await self._db.fetchall(
            # A mail is queued in the commit that logs it, at the same time (told, mailed_directly).
            "SELECT l.id, l.at, l.group_key, l.action, l.detail, l.count, g.state, m.state AS mail,"
            " COALESCE(json_array_length(m.delivered), 0) AS mail_delivered"
            " FROM alert_log l LEFT JOIN alert_groups g ON g.key = l.group_key"
            " LEFT JOIN alert_mails m ON m.id = (SELECT q.id FROM alert_mails q WHERE l.action = 'mailed'"
            " AND q.group_key = l.group_key AND q.created_at = l.at ORDER BY q.id DESC LIMIT 1)"
            " ORDER BY l.id DESC LIMIT ?",
            (limit,),
        )
        return [RecentEntry(**dict(r)) for r in rows]

    async def latest_groups(self, limit: int) -> list[GroupSummary]:
        """The groups that changed last, newest first."""
        rows = await self._db.fetchall(
            "SELECT type, subject, severity, state, changed_at FROM alert_groups ORDER BY changed_at DESC LIMIT ?",
            (limit,),
        )
        return [GroupSummary(**dict(row)) for row in rows]

    async def mails(self, limit: int = 50) -> list[OutboxMail]:
        rows = await self._db.fetchall("SELECT * FROM alert_mails ORDER BY id DESC LIMIT ?", (limit,))
        return [_outbox_mail(r) for r in rows]


async def _record_told(conn: aiosqlite.Connection, key: str, *, kind: str, at: float, mailed: bool, count: int) -> None:
    """The group's news of ``kind`` went out at ``at``, mailed or into the digest: its counters reset, and logged."""
    news = "resolved" if kind == "resolved" else "firing"
    # mailed: what the last mail said (the digest aside); critical_mail_at: the storm guard's window start.
    await conn.execute(
        "UPDATE alert_groups SET notified = ?1, notified_severity = severity, last_sent_at = ?2,"
        " fires_since_mail = 0, new_items = 0, held_reason = NULL,"
        " mailed = CASE WHEN ?3 THEN ?1 ELSE mailed END,"
        " critical_mail_at = CASE WHEN ?3 AND ?1 = 'firing' AND severity = 'critical' THEN ?2"
        " ELSE critical_mail_at END WHERE key = ?4",
        (news, at, mailed, key),
    )
    await conn.execute(
        "INSERT INTO alert_log(at, group_key, action, detail, count) VALUES (?, ?, ?, ?, ?)",
        (at, key, "mailed" if mailed else "digest", kind, count),
    )


async def _keep_clock_mark(conn: aiosqlite.Connection, mark: ClockMark | None) -> None:
    if mark is not None:
        value = json.dumps({"boot": mark.boot, "wall": mark.wall, "mono": mark.mono})
        await conn.execute(UPSERT_META, (_CLOCK_META, value))


async def _insert_mail(
    conn: aiosqlite.Connection,
    group_key: str | None,
    kind: str,
    mail: Mail,
    now: float,
    audience: Audience,
    *,
    delivered: list[str] | None = None,
) -> int:
    # recipients: who it was written for; each attempt reads the configured list again (audience). ``delivered``:
    # those who have it already (a mail that went straight to the relay).
    cursor = await conn.execute(
        "INSERT INTO alert_mails(group_key, kind, recipients, audience, subject, text_body, html_body, created_at,"
        " next_attempt_at, message_id, delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            group_key,
            kind,
            json.dumps(mail.recipients),
            audience,
            mail.subject,
            mail.text,
            mail.html,
            now,
            now,
            email.utils.make_msgid(idstring="alert", domain="edge-agent"),
            json.dumps(delivered or []),
        ),
    )
    mail_id = cursor.lastrowid
    await cursor.close()
    assert mail_id is not None
    return mail_id
