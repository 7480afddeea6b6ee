"""The alerter's stop: prompt when no round is folding, and a round folding as it comes finishes its write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

from edge.alerts.alerter import Alerter
from edge.config import Settings
from edge.store.db import Database
from tests.alerts.helpers import offline, run
from tests.helpers import db_rows, wait_until


@pytest.mark.parametrize("rounds", [0, 1], ids=["before-any-round", "after-a-round"])
async def test_an_alerter_with_no_round_folding_stops_at_once(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], rounds: int
) -> None:
    """The stop waits for a round folding occurrences into their groups (see the next test); with none folding, as
    before its first round or after one that folded the kitchen printer going offline, it returns at once. Before
    stop 83 no test timed it (mut83: the wait's event left unset at the start, or after a fold, survived: every stop of
    the agent would then wait the alerter's whole 5 s grace)."""
    alerter = make_alerter(alert_settings())
    if rounds:
        alerter.on_event(offline())
        await run(alerter)
    began = time.monotonic()
    await alerter.stop()
    assert time.monotonic() - began < 2.0


async def test_a_round_folding_as_the_alerter_stops_finishes_its_write(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], db: Database
) -> None:
    """Another connection holds the database's write lock (a backup, a migration check) as the kitchen printer goes
    offline: the alerter's round takes the occurrence and waits for the lock to fold it into its group, and the agent
    stops then. The lock is let go a second later: the stop waits for the round's write, and the printer's alarm is
    stored for the next start to mail. Before stop 83 no test stopped the alerter during a fold (mut83: the stop's wait
    for it removed, or the round not marking itself as folding, survived: the round was cancelled, its write rolled
    back, and the occurrence it had taken from memory was lost)."""
    alerter = make_alerter(alert_settings())
    # The first rounds' own writes (the clock's mark, the card's note) done: the lock is to hold up the fold alone.
    await run(alerter)
    await alerter.check()
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        other = sqlite3.connect(db.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(timeout=10)
        finally:
            other.close()  # rolls back: the lock is let go

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        await asyncio.to_thread(held.wait, 10)
        await alerter.start()
        alerter.on_event(offline())
        # Taken from memory by the round, which now waits for the lock (read from outside, it is a race).
        await wait_until(lambda: not alerter._pending, what="the round taking the occurrence")
        threading.Timer(1.0, release.set).start()
        await alerter.stop()
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
    rows = await db_rows(db.path, "SELECT key, state FROM alert_groups")
    assert rows == [("printer_offline:kitchen", "firing")]
