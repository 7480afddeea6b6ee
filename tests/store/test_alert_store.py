"""The alert store's answers the storage mail sent straight to the relay relies on (they are read on a full disk)."""

from __future__ import annotations

from pathlib import Path

from edge.store.alerts import AlertStore, Mail, Signal
from edge.store.db import Database

KEY = "storage_problem:database"


def storage(firing: bool, at: float) -> Signal:
    return Signal(type="storage_problem", subject="database", firing=firing, at=at, mono=at, severity="critical")


async def test_an_alarm_told_to_the_digest_is_not_taken_for_one_the_manager_was_mailed(tmp_path: Path) -> None:
    """told_firing_at says the manager was mailed the alarm; news the storm guard sent to the digest is not that. A
    card that stalled (its alarm mailed, then its all-clear), stalled again within the window (the digest's), and
    again when the window ended was taken for told, and the last stall went unmailed (a CI run under load)."""
    db = await Database.open(tmp_path / "edge.db")
    store = AlertStore(db)
    try:
        await store.apply([storage(True, 100.0)])
        await store.mailed_directly(KEY, at=100.0, delivered=[])
        assert await store.told_firing_at(KEY) == 100.0  # mailed: told
        await store.apply([storage(False, 101.0)])
        resolved = await store.group(KEY)
        assert resolved is not None
        all_clear = Mail(recipients=["chef@store.test"], subject="RESOLVED", text="", html="")
        await store.told(resolved, kind="resolved", now=101.0, mail=all_clear, count=0)
        await store.apply([storage(True, 200.0)])
        group = await store.group(KEY)
        assert group is not None and group["state"] == "firing"
        await store.told(group, kind="firing", now=200.0, mail=None, count=1)  # into the digest
        assert await store.told_firing_at(KEY) is None
    finally:
        await db.close()
