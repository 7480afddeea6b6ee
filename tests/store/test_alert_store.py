"""The alert store: what the storage mail sent straight to the relay relies on, and how a repeat folds."""

from __future__ import annotations

from pathlib import Path

from edge.store.alerts import AlertStore, Mail, Signal, compact
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


def refused(order: str, at: float, *, again: bool = False) -> Signal:
    item = {"id": order, "order": order, "error": "1 ≤ 2"}
    return Signal(
        type="cancel_refused", subject="orders", firing=True, at=at, mono=at, severity="warning", item=item, again=again
    )


async def test_a_repeated_refusal_is_one_more_only_where_its_order_is_not_listed_yet(tmp_path: Path) -> None:
    """A refusal told again (a redelivered message answered from its kept reject, again=True) adds nothing to a firing
    group listing its order, is folded into the occurrence it repeats while both wait, and is added and counted where
    its order is missing (another order's refusal stored, its own lost in a crash). Before stop 83 a repeat was never
    raised, and ``again`` skipped any firing group, whichever items it listed."""
    db = await Database.open(tmp_path / "edge.db")
    store = AlertStore(db)
    try:
        await store.apply(compact([refused("o1", 100.0), refused("o1", 101.0, again=True)]))
        await store.apply([refused("o1", 102.0, again=True)])
        group = await store.group("cancel_refused:orders")
        assert group is not None and (group["fires_total"], len(group["details"]["items"])) == (1, 1)
        await store.apply([refused("o2", 103.0, again=True)])
        group = await store.group("cancel_refused:orders")
        assert group is not None
        assert group["fires_total"] == 2 and [i["id"] for i in group["details"]["items"]] == ["o1", "o2"]
    finally:
        await db.close()


async def test_repeated_refusals_of_orders_a_full_list_dropped_are_no_more_occurrences(tmp_path: Path) -> None:
    """30 refusals fire one group, which lists the newest 20; the broker redelivers all 30 after a crash (again=True):
    the 10 whose orders the list dropped are no new occurrences either, the group still counts 30. Before (the verify83
    probe, F1) they counted as 10 more, and the manager got a second mail, "10 weitere Male", for no new message."""
    db = await Database.open(tmp_path / "edge.db")
    store = AlertStore(db)
    try:
        await store.apply([refused(f"o{n}", 100.0 + n) for n in range(30)])
        await store.apply([refused(f"o{n}", 200.0 + n, again=True) for n in range(30)])
        group = await store.group("cancel_refused:orders")
        assert group is not None and group["fires_total"] == 30, group["fires_total"]
    finally:
        await db.close()
