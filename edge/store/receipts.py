"""Receipts a box that prints none by design (receipts.enabled = false) still holds from before it was told so."""

from __future__ import annotations

from edge.states import HoldReason, JobKind, JobState
from edge.store.db import Database


async def discard_held_for_no_printer(db: Database) -> int:
    """Receipts held for want of a receipt printer become discarded (final: retention may purge their orders); how
    many. Kept as rows, as a person's discard keeps them, for the record."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE print_jobs SET state = ?, held_reason = NULL WHERE kind = ? AND state = ? AND held_reason = ?",
            (JobState.DISCARDED, JobKind.RECEIPT, JobState.HELD, HoldReason.NO_PRINTER),
        )
        discarded = cursor.rowcount
        await cursor.close()
    return discarded
