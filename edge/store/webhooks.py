"""Webhook answers table: what a signed request that changed something was answered, for the sender's retries."""

from __future__ import annotations

import dataclasses

from edge.store.db import Database


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebhookAnswer:
    """One remembered answer, kept across restarts until ``expires_at``."""

    webhook_id: str
    fingerprint: str  # sha256 over method, path and body: a retry must match it
    status: int
    content_type: str  # the whole Content-Type header, charset included
    body: bytes
    expires_at: float  # unix seconds (wall clock: it must outlive a restart, where monotonic time starts over)


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def unexpired(self, now: float) -> list[WebhookAnswer]:
        rows = await self._db.fetchall(
            "SELECT webhook_id, fingerprint, status, content_type, body, expires_at FROM webhook_answers"
            " WHERE expires_at > ? ORDER BY expires_at",
            (now,),
        )
        return [WebhookAnswer(**dict(row)) for row in rows]

    async def put(self, answer: WebhookAnswer, now: float) -> None:
        """Store one answer (committed before the sender sees it) and drop the expired ones."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM webhook_answers WHERE expires_at <= ?", (now,))
            await conn.execute(
                "INSERT OR REPLACE INTO webhook_answers"
                "(webhook_id, fingerprint, status, content_type, body, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    answer.webhook_id,
                    answer.fingerprint,
                    answer.status,
                    answer.content_type,
                    answer.body,
                    answer.expires_at,
                ),
            )
