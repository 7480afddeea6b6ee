"""Alert tables: throttle state per group, the mail outbox, silences and the log of what was mailed or held."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiosqlite

from edge.store.db import Database

_MAX_ITEMS = 20  # a group mail lists at most this many siblings (the newest)
_DIGEST_META = "alerts_last_digest"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signal:
    """One occurrence: a condition started (firing) or ended, for a group ``type:subject``."""

    type: str
    subject: str
    firing: bool
    at: float
    severity: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    item: dict[str, Any] | None = None  # a sibling in the group (a dead job), keyed by its "id"

    @property
    def key(self) -> str:
        return f"{self.type}:{self.subject}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestMark:
    """The last digest: when it went (wall time, to know today's is done) and the last log line it covered."""

    at: float
    log_id: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mail:
    recipients: list[str]
    subject: str
    text: str
    html: str


def _merge(details: dict[str, Any], signal: Signal) -> tuple[dict[str, Any], bool]:
    merged = {**details, **signal.details}
    items = list(details.get("items", []))
    new_item = signal.item is not None and all(i.get("id") != signal.item.get("id") for i in items)
    if new_item:
        items = (items + [signal.item])[-_MAX_ITEMS:]
    if items:
        merged["items"] = items
    return merged, new_item


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
                rows = await conn.execute_fetchall("SELECT * FROM alert_groups WHERE key = ?", (s.key,))
                if not rows:
                    if not s.firing:
                        continue
                    details, new_item = _merge({}, s)
                    await conn.execute(
                        "INSERT INTO alert_groups(key, type, subject, severity, state, first_at, changed_at, fires_since_mail, fires_total,"
                        " new_items, details) VALUES (?, ?, ?, ?, 'firing', ?, ?, 1, 1, ?, ?)",
                        (s.key, s.type, s.subject, s.severity, s.at, s.at, int(new_item), json.dumps(details)),
                    )
                    outcomes.append((s, True))
                    continue
                g = group_dict(rows[0])
                if s.firing:
                    # A new episode only once the last one is fully told (or dropped); flapping stays one episode.
                    new_episode = (
                        g["state"] == "resolved" and g["notified"] == "resolved" and g["fires_since_mail"] == 0
                    )
                    details, new_item = _merge({} if new_episode else g["details"], s)
                    await conn.execute(
                        "UPDATE alert_groups SET state = 'firing', severity = ?, first_at = ?, changed_at = ?, fires_since_mail = fires_since_mail + 1,"
                        " fires_total = fires_total + 1, new_items = new_items + ?, details = ? WHERE key = ?",
                        (
                            s.severity,
                            s.at if new_episode else g["first_at"],
                            s.at if g["state"] != "firing" else g["changed_at"],
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

    async def open_groups(self) -> list[dict[str, Any]]:
        """Groups with something untold or a manager who believes they still fire."""
        rows = await self._db.fetchall(
            "SELECT * FROM alert_groups WHERE fires_since_mail > 0 OR notified = 'firing' OR state = 'firing'"
        )
        return [group_dict(r) for r in rows]

    async def firing(self, type_name: str) -> list[aiosqlite.Row]:
        return await self._db.fetchall(
            "SELECT subject, severity FROM alert_groups WHERE type = ? AND state = 'firing'", (type_name,)
        )

    async def mails_since(self, since: float) -> int:
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM alert_mails WHERE created_at >= ? AND kind != 'test'", (since,)
        )
        return int(row[0]) if row else 0

    async def told(self, group: dict[str, Any], *, kind: str, now: float, mail: Mail | None, count: int) -> int | None:
        """The group's news went out (as a mail, or into the digest): reset its counters and log it, all in one commit.

        Writing the mail to the outbox in the same transaction as the throttle state is what makes a crash
        or restart neither lose nor repeat it.
        """
        mail_id = None
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_groups SET notified = ?, last_sent_at = ?, fires_since_mail = 0, new_items = 0, held_reason = NULL WHERE key = ?",
                ("resolved" if kind == "resolved" else "firing", now, group["key"]),
            )
            if mail is not None:
                mail_id = await _insert_mail(conn, group["key"], kind, mail, now)
            await conn.execute(
                "INSERT INTO alert_log(at, group_key, action, detail, count) VALUES (?, ?, ?, ?, ?)",
                (now, group["key"], "mailed" if mail is not None else "digest", kind, count),
            )
        return mail_id

    async def drop(self, key: str, now: float, reason: str, count: int) -> None:
        """The episode is over before anyone needed to hear of it: close it without a mail."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_groups SET fires_since_mail = 0, new_items = 0, held_reason = NULL WHERE key = ?", (key,)
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

    async def due_mails(self, now: float, limit: int = 20) -> list[aiosqlite.Row]:
        return await self._db.fetchall(
            "SELECT * FROM alert_mails WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?", (now, limit)
        )

    async def next_mail_at(self) -> float | None:
        row = await self._db.fetchone("SELECT MIN(next_attempt_at) FROM alert_mails WHERE sent_at IS NULL")
        return None if row is None or row[0] is None else float(row[0])

    async def mark_sent(self, mail_id: int, now: float) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_mails SET sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (now, mail_id),
            )

    async def mark_failed(self, mail_id: int, error: str, next_attempt_at: float) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE alert_mails SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error[:500], next_attempt_at, mail_id),
            )

    async def digest_entries(self, after_log_id: int) -> list[aiosqlite.Row]:
        """What went into the digest since the last one, by log id: a clock step cannot move a line out of it."""
        return await self._db.fetchall(
            "SELECT l.*, g.type, g.subject FROM alert_log l JOIN alert_groups g ON g.key = l.group_key"
            " WHERE l.action = 'digest' AND l.id > ? ORDER BY l.id",
            (after_log_id,),
        )

    async def last_digest(self) -> DigestMark | None:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (_DIGEST_META,))
        if row is None:
            return None
        value = json.loads(row[0])
        return DigestMark(at=float(value["at"]), log_id=int(value["log_id"]))

    async def digested(self, mark: DigestMark, mail: Mail | None) -> None:
        """The digest is done: its mail (if there was news) and the mark in one commit, so neither goes alone."""
        async with self._db.transaction() as conn:
            if mail is not None:
                await _insert_mail(conn, None, "digest", mail, mark.at)
            await conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (_DIGEST_META, json.dumps({"at": mark.at, "log_id": mark.log_id})),
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

    async def active_silences(self, now: float) -> list[aiosqlite.Row]:
        return await self._db.fetchall(
            "SELECT * FROM alert_silences WHERE starts_at <= ?1 AND ends_at > ?1 ORDER BY ends_at", (now,)
        )

    async def recent(self, limit: int = 50) -> list[aiosqlite.Row]:
        """The log (mailed, put in the digest, or held back and why), newest first, with each group's state now."""
        return await self._db.fetchall(
            "SELECT l.at, l.group_key, l.action, l.detail, l.count, g.state FROM alert_log l LEFT JOIN alert_groups g ON g.key = l.group_key"
            " ORDER BY l.id DESC LIMIT ?",
            (limit,),
        )

    async def mails(self, limit: int = 50) -> list[aiosqlite.Row]:
        return await self._db.fetchall(
            "SELECT id, group_key, kind, subject, created_at, attempts, last_error, sent_at FROM alert_mails ORDER BY id DESC LIMIT ?",
            (limit,),
        )


async def _insert_mail(conn: aiosqlite.Connection, group_key: str | None, kind: str, mail: Mail, now: float) -> int:
    cursor = await conn.execute(
        "INSERT INTO alert_mails(group_key, kind, recipients, subject, text_body, html_body, created_at, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (group_key, kind, json.dumps(mail.recipients), mail.subject, mail.text, mail.html, now, now),
    )
    mail_id = cursor.lastrowid
    await cursor.close()
    assert mail_id is not None
    return mail_id
