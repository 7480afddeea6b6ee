"""Group commit: concurrent writers share one COMMIT (one fsync) and still succeed or fail one by one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.errors import StoreError, StoreUnavailableError, WrongStateError
from edge.store import db as db_mod
from edge.store.db import Database, Writer
from tests.helpers import db_rows, slow_fsync, wait_until, wal_commits


async def put(db: Database, key: str, *, fail: bool = False, one_hop: bool = False) -> None:
    """A write of two statements, in an open transaction block or as a body run whole on the writer's thread."""

    async def body(conn: Writer) -> None:
        await conn.execute("INSERT INTO meta(key, value) VALUES (?, 'v')", (key,))
        await conn.execute("UPDATE meta SET value = 'whole' WHERE key = ?", (key,))
        if fail:
            raise WrongStateError(f"{key} refused half-way")

    if one_hop:
        await db.write(body)
    else:
        async with db.transaction() as conn:
            await body(conn)


# Every group-commit rule holds for both ways of writing, and for a group mixing them.
WAYS = pytest.mark.parametrize("ways", ["block", "one_hop", "mixed"])


def way(ways: str, n: int) -> bool:
    return ways == "one_hop" or (ways == "mixed" and n % 2 == 1)


@WAYS
async def test_concurrent_writers_share_commits_and_each_returns_once_its_write_is_durable(
    tmp_path: Path, ways: str
) -> None:
    """Twenty writes started together are made durable by far fewer than twenty COMMITs (counted in the WAL file), and
    when each returns a second connection already sees its row."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        before = await asyncio.to_thread(wal_commits, path)

        async def put_and_look(n: int) -> list[tuple[object, ...]]:
            await put(db, f"k{n}", one_hop=way(ways, n))
            return await db_rows(path, "SELECT value FROM meta WHERE key = ?", f"k{n}")

        seen = await asyncio.gather(*(put_and_look(n) for n in range(20)))
        commits = await asyncio.to_thread(wal_commits, path) - before
        assert seen == [[("whole",)]] * 20
        assert 1 <= commits <= 5, f"{commits} commits for 20 concurrent writes"
    finally:
        await db.close()


@WAYS
async def test_a_failing_writer_in_a_group_loses_only_its_own_write(tmp_path: Path, ways: str) -> None:
    """Of ten writes sharing a commit, the fifth fails half-way: it gets its own error and none of its rows is stored;
    the nine others are stored whole, checked from a second connection."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        outcomes = await asyncio.gather(
            *(put(db, f"k{n}", fail=n == 4, one_hop=way(ways, n)) for n in range(10)), return_exceptions=True
        )
        assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 4 + ["WrongStateError"] + ["NoneType"] * 5
        stored = await db_rows(path, "SELECT key, value FROM meta WHERE key LIKE 'k%' ORDER BY key")
        assert stored == [(f"k{n}", "whole") for n in range(10) if n != 4]
    finally:
        await db.close()


def count_trips(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that gets one entry per trip to the writer's thread from now on."""
    trips: list[None] = []
    execute = db._writer._execute

    async def counted(*args: object, **kwargs: object) -> object:
        trips.append(None)
        return await execute(*args, **kwargs)

    monkeypatch.setattr(db._writer, "_execute", counted)
    return trips


async def test_when_sqlite_ends_the_groups_transaction_no_writer_of_it_is_told_stored(tmp_path: Path) -> None:
    """SQLite itself rolls back a whole transaction on a full disk or an I/O error (here forced with ON CONFLICT
    ROLLBACK in one writer's body): the writes of the others in the group are gone with it, so each of them gets an
    error (the sender retries) and none is told "stored"; nothing of theirs is in the file, and the next write works."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        await put(db, "first")

        async def break_then_put(key: str) -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO meta(key, value) VALUES (?, 'v')", (key,))
                if key == "g2":  # the last of the group, after the others added their writes
                    # SQLite aborts the whole transaction on a constraint with ON CONFLICT ROLLBACK: the group is lost.
                    await conn.execute("INSERT OR ROLLBACK INTO meta(key, value) VALUES ('first', 'again')")

        outcomes = await asyncio.gather(*(break_then_put(f"g{n}") for n in range(3)), return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        assert await db_rows(path, "SELECT key FROM meta WHERE key LIKE 'g%'") == []
        await put(db, "after")  # the writer is usable again
        assert await db_rows(path, "SELECT key FROM meta WHERE key = 'after'") == [("after",)]
    finally:
        await db.close()


@WAYS
@pytest.mark.parametrize("turns", range(0, 12))
async def test_cancelling_one_writer_of_a_group_leaves_the_others_stored(tmp_path: Path, turns: int, ways: str) -> None:
    """Three writers share a group; the middle one is cancelled after some loop turns (waiting for the lock, inside
    its body, waiting for the commit): the other two are stored whole, the cancelled one whole or not at all."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        tasks = [asyncio.create_task(put(db, f"c{n}", one_hop=way(ways, n))) for n in range(3)]
        for _ in range(turns):
            await asyncio.sleep(0)
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stored = dict(await db_rows(path, "SELECT key, value FROM meta WHERE key LIKE 'c%'"))
        assert stored.get("c0") == stored.get("c2") == "whole"
        assert stored.get("c1") in (None, "whole")
        await put(db, "after")
    finally:
        await db.close()


def hold_fsync(monkeypatch: pytest.MonkeyPatch, seen: Callable[[Path], object] | None = None) -> threading.Event:
    """Every fsync of the WAL waits until the returned event is set (10 s at most); ``seen`` hears of each then."""
    release = threading.Event()
    real = db_mod.sync_to_disk

    def held(wal: Path, *, data_only: bool = False) -> None:
        release.wait(10)
        if seen is not None:
            seen(wal)
        real(wal, data_only=data_only)

    monkeypatch.setattr(db_mod, "sync_to_disk", held)
    return release


async def test_a_write_returns_only_after_the_wal_is_fsynced_and_the_next_write_commits_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync that makes a commit durable is held (a power cut cannot be staged here, so the fsync is the one thing
    stood in for): the write is committed (a second connection sees it) but its caller is not told until the fsync
    ends; meanwhile a second write commits too and rides on the next fsync."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    syncs: list[int] = []
    release = hold_fsync(monkeypatch, lambda wal: syncs.append(wal.stat().st_size))
    try:
        first = asyncio.create_task(put(db, "first"))
        await wait_until(lambda: _committed(path, "first"), what="the first write committed")
        second = asyncio.create_task(put(db, "second"))
        await wait_until(lambda: _committed(path, "second"), what="the second write committed while the fsync waits")
        assert not first.done() and not second.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        assert len(syncs) == 2 and syncs[1] >= syncs[0]
    finally:
        release.set()
        await db.close()


@pytest.mark.parametrize("one_hop", [False, True])
async def test_a_write_that_changes_nothing_syncs_nothing_but_returns_only_once_the_commits_before_it_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_hop: bool
) -> None:
    """A write that changes nothing (a sender's retry of an order already stored) costs no fsync of its own, and a
    write that changes a row still costs its one; but while the fsync of an earlier commit is still to come, the
    write that changes nothing is not told done before that: a 200 for an order whose 201 still waits for its fsync
    would announce what a power cut can take back."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    syncs: list[Path] = []
    real = db_mod.sync_to_disk

    def counted(wal: Path, *, data_only: bool = False) -> None:
        syncs.append(wal)
        real(wal, data_only=data_only)

    try:
        await put(db, "first", one_hop=one_hop)
        monkeypatch.setattr(db_mod, "sync_to_disk", counted)
        await put_first_again(db, one_hop=one_hop)
        assert syncs == []
        await put(db, "second", one_hop=one_hop)
        assert len(syncs) == 1

        release = hold_fsync(monkeypatch)
        third = asyncio.create_task(put(db, "third"))
        await wait_until(lambda: _committed(path, "third"), what="the third write committed")
        retry = asyncio.create_task(put_first_again(db, one_hop=one_hop))
        await done_only_once_released(release, retry, third)
    finally:
        monkeypatch.undo()
        await db.close()


async def test_a_write_the_card_does_not_finish_is_a_stall_until_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync held past ``stall_after_s``: the store says the card stalls (``stall``, the write problem, heard by
    its listener) while the write waits, and that it writes again once the fsync ends; a write that ends in time
    leaves nothing behind (its timer is cancelled)."""
    db = await Database.open(tmp_path / "edge.db")
    db.stall_after_s = 0.1
    heard: list[str | None] = []
    db.on_write_health = heard.append
    try:
        await put(db, "quick", one_hop=True)
        await asyncio.sleep(0.2)
        assert db.stall is None and heard == []
        release = hold_fsync(monkeypatch)
        write = asyncio.create_task(put(db, "held", one_hop=True))
        await wait_until(lambda: db.stall is not None, 5, "the stall told")
        assert db.write_problem == db.stall and heard == [db.stall] and "has not finished a write" in db.stall
        assert not write.done()
        release.set()
        await asyncio.wait_for(write, 5)
        assert db.stall is None and db.write_problem is None and heard[1:] == [None]
    finally:
        await db.close()


async def test_a_stall_that_ends_in_a_failed_write_is_not_told_over_in_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dying card stalls, then fails the write: the problem told stays told (no all-clear between the stall's
    alarm and the failure), and the writer is not told stored."""
    db = await Database.open(tmp_path / "edge.db")
    db.stall_after_s = 0.1
    heard: list[str | None] = []
    db.on_write_health = heard.append
    release = threading.Event()

    def failing(wal: Path, *, data_only: bool = False) -> None:
        release.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(db_mod, "sync_to_disk", failing)
    try:
        write = asyncio.create_task(put(db, "held", one_hop=True))
        await wait_until(lambda: db.stall is not None, 5, "the stall told")
        release.set()
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(write, 5)
        assert heard == [db.stall] and db.write_problem is not None
    finally:
        release.set()
        await db.close()


async def done_only_once_released(release: threading.Event, *writes: asyncio.Task[None]) -> None:
    """The writes are not done while the held fsync waits (a moment to be sure), and are once it is released."""
    await asyncio.sleep(0.05)
    assert not any(write.done() for write in writes)
    release.set()
    await asyncio.wait_for(asyncio.gather(*writes), timeout=5)


async def put_first_again(db: Database, *, one_hop: bool) -> None:
    """put(db, "first") sent again, as a sender's retry: it changes nothing."""

    async def again(conn: Writer) -> None:
        await conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('first', 'v')")

    if one_hop:
        await db.write(again)
    else:
        async with db.transaction() as conn:
            await again(conn)


async def _committed(path: Path, key: str) -> bool:
    return bool(await db_rows(path, "SELECT 1 FROM meta WHERE key = ?", key))


async def test_a_one_hop_write_that_awaits_anything_but_its_connection_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A body run whole on the writer's thread cannot wait for the event loop (it would wait for ever there): it gets
    an error naming the rule, nothing it wrote is stored, and the next write works."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:

        async def waits(conn: Writer) -> None:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('waited', 'v')")
            await asyncio.sleep(0)

        with pytest.raises(RuntimeError, match="awaited something other than its connection"):
            await db.write(waits)
        await put(db, "after", one_hop=True)
        assert await db_rows(path, "SELECT key FROM meta WHERE key IN ('waited', 'after')") == [("after",)]
    finally:
        await db.close()


async def test_a_one_hop_write_cancelled_while_it_runs_still_leaves_the_writer_usable(tmp_path: Path) -> None:
    """The first write of a group is cancelled while its body runs on the writer's thread (the body waits for a
    signal there): the body runs to its end, so its write is stored whole (committed with its group) or not at all,
    and later writes of both kinds are stored."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    running, go_on = threading.Event(), threading.Event()
    try:

        async def slow(conn: Writer) -> None:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('slow', 'v')")
            running.set()
            go_on.wait(10)  # holds the writer's thread, not the loop
            await conn.execute("UPDATE meta SET value = 'whole' WHERE key = 'slow'")

        task = asyncio.create_task(db.write(slow))
        await asyncio.to_thread(running.wait, 10)
        task.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await put(db, "after-hop", one_hop=True)
        await put(db, "after-block")
        stored = dict(
            await db_rows(path, "SELECT key, value FROM meta WHERE key IN ('slow', 'after-hop', 'after-block')")
        )
        assert stored.get("slow") in (None, "whole")
        assert stored["after-hop"] == stored["after-block"] == "whole"
    finally:
        go_on.set()
        await db.close()


async def slow_disk(
    db: Database, monkeypatch: pytest.MonkeyPatch, fsync_s: float, times: list[tuple[float, float]] | None = None
) -> None:
    """Every fsync takes ``fsync_s`` longer, as on an SD card; a few writes so the database has measured it.
    ``times``: as slow_fsync's."""
    slow_fsync(monkeypatch, fsync_s, times)
    for n in range(3):
        await put(db, f"warm-{n}")


async def linger_put(db: Database, key: str) -> None:
    async def body(conn: Writer) -> None:
        await conn.execute("INSERT INTO meta(key, value) VALUES (?, 'v')", (key,))

    await db.write(body, linger=True)


@pytest.mark.parametrize("ways", ["block", "one_hop"])
async def test_an_order_arriving_while_a_claim_lingers_shares_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ways: str
) -> None:
    """One client sending orders one after another on an SD card: the spool's claim for the last order commits just
    before the next order arrives, and each paid an fsync of its own (two per order). A lingering write (the claim)
    holds its COMMIT for a write that cannot wait (the order): both land in one commit. Without lingering, 2 commits."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    monkeypatch.setattr(db_mod, "LINGER_MAX_S", 1.0)  # lingers up to two fsyncs: 0.2 s, long enough to see
    try:
        await slow_disk(db, monkeypatch, 0.1)
        before = await asyncio.to_thread(wal_commits, path)
        claim = asyncio.create_task(linger_put(db, "claim"))
        await wait_until(lambda: db._group is not None, what="the claim's group open")
        await asyncio.sleep(0.003)  # the order comes a moment later (an HTTP round trip)
        await put(db, "order", one_hop=ways == "one_hop")
        await asyncio.wait_for(claim, timeout=5)
        assert await asyncio.to_thread(wal_commits, path) - before == 1
        assert await _committed(path, "claim") and await _committed(path, "order")
    finally:
        await db.close()


async def test_an_order_joining_a_lingering_claim_commits_and_syncs_the_group_in_its_one_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody else waits to join: the order's body, the group's COMMIT and the WAL's fsync run in the order's one trip
    to the writer's thread (not a trip for its body, then the COMMIT's, then an fsync on another thread), in one
    commit with the claim, and both callers return only once it is durable."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    monkeypatch.setattr(db_mod, "LINGER_MAX_S", 1.0)
    try:
        await slow_disk(db, monkeypatch, 0.1)
        before = await asyncio.to_thread(wal_commits, path)
        claim = asyncio.create_task(linger_put(db, "claim"))
        await wait_until(lambda: db._group is not None, what="the claim's group open")
        trips = count_trips(db, monkeypatch)
        await put(db, "order", one_hop=True)
        assert (len(trips), db._group) == (1, None)
        await asyncio.wait_for(claim, timeout=0.05)  # told with the order, not after another trip or fsync
        assert await asyncio.to_thread(wal_commits, path) - before == 1
        assert await _committed(path, "claim") and await _committed(path, "order")
    finally:
        await db.close()


async def test_a_claim_that_claimed_nothing_closed_by_a_retry_that_changed_nothing_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool's claim that found its jobs taken meanwhile (it changes no row) lingers, and a sender's retry of an
    order already stored (no row either) closes its group in the retry's trip: nothing was written, nothing is synced,
    and both callers return. A claim that claims something, closed the same way, still syncs once."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    monkeypatch.setattr(db_mod, "LINGER_MAX_S", 1.0)
    synced: list[tuple[float, float]] = []
    try:
        await put(db, "first", one_hop=True)
        await slow_disk(db, monkeypatch, 0.1, synced)  # measured: the claims linger long enough to be joined
        for claimed, fsyncs in ((False, 0), (True, 1)):
            before = len(synced)

            async def claim(conn: Writer, claimed: bool = claimed) -> None:
                await conn.execute("UPDATE meta SET value = 'claimed' WHERE key = 'first' AND ?", (claimed,))

            lingering = asyncio.create_task(db.write(claim, linger=True))
            await wait_until(lambda: db._group is not None, what="the claim's group open")
            trips = count_trips(db, monkeypatch)
            await put_first_again(db, one_hop=True)
            await asyncio.wait_for(lingering, timeout=5)
            assert (len(trips), db._group, len(synced) - before) == (1, None, fsyncs)
    finally:
        await db.close()


async def test_a_failed_fsync_in_an_orders_closing_trip_tells_the_lingering_claim_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order commits the claim's group in its trip and the WAL cannot be synced: neither caller is told its write
    is stored (the claim is not sent; the order's sender retries), and the next writes work."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    monkeypatch.setattr(db_mod, "LINGER_MAX_S", 1.0)
    try:
        await slow_disk(db, monkeypatch, 0.1)
        claim = asyncio.create_task(linger_put(db, "claim"))
        await wait_until(lambda: db._group is not None, what="the claim's group open")

        def failing(wal: Path, *, data_only: bool = False) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(db_mod, "sync_to_disk", failing)
        with pytest.raises(StoreUnavailableError, match="cannot sync the write-ahead log"):
            await put(db, "order", one_hop=True)
        with pytest.raises(StoreUnavailableError, match="cannot sync the write-ahead log"):
            await asyncio.wait_for(claim, timeout=5)
        monkeypatch.undo()
        await put(db, "after", one_hop=True)
        await linger_put(db, "claim-after")
        assert await _committed(path, "after") and await _committed(path, "claim-after")
    finally:
        await db.close()


async def test_a_lingering_write_alone_still_commits_and_is_durable_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No order comes: the claim commits after lingering (at most twice as long as an fsync has taken, and 20 ms), and
    its caller hears of it only after the fsync, as every writer does."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    synced: list[bool] = []
    try:
        await slow_disk(db, monkeypatch, 0.01)
        real = db_mod.sync_to_disk

        def counted(wal: Path, *, data_only: bool = False) -> None:
            real(wal, data_only=data_only)
            synced.append(True)

        monkeypatch.setattr(db_mod, "sync_to_disk", counted)
        before = await asyncio.to_thread(wal_commits, path)
        await asyncio.wait_for(linger_put(db, "claim"), timeout=5)
        assert synced and await asyncio.to_thread(wal_commits, path) - before == 1
        assert await _committed(path, "claim")
    finally:
        await db.close()


async def test_a_claim_does_not_linger_when_no_order_came_lately(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A printer working through a backlog with no orders coming: its claims commit at once, each burst is not held
    up waiting for company that will not come. (An order that then comes gets a commit of its own.)"""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    monkeypatch.setattr(db_mod, "LINGER_MAX_S", 1.0)
    monkeypatch.setattr(db_mod, "LINGER_ONLY_WITHIN_S", 0.05)
    try:
        await slow_disk(db, monkeypatch, 0.1)
        await asyncio.sleep(0.1)  # no order for longer than LINGER_ONLY_WITHIN_S
        before = await asyncio.to_thread(wal_commits, path)
        claim = asyncio.create_task(linger_put(db, "claim"))
        await asyncio.sleep(0.03)  # a lingering claim would still be open now (for 0.2 s)
        await put(db, "order")
        await asyncio.wait_for(claim, timeout=5)
        assert await asyncio.to_thread(wal_commits, path) - before == 2
    finally:
        await db.close()


async def test_a_write_nobody_waits_to_join_commits_and_syncs_in_its_one_trip_to_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store's usual write: one order, nobody else writing. Its body, COMMIT and the WAL's fsync run in one trip to
    the writer's thread (each trip is a wake-up of that thread and of the loop, and under load a wait for the GIL each
    way), and its caller still hears of it only after the fsync."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    threads: dict[str, int] = {}
    real = db_mod.sync_to_disk

    def recorded(wal: Path, *, data_only: bool = False) -> None:
        threads["fsync"] = threading.get_ident()
        real(wal, data_only=data_only)

    async def body(conn: Writer) -> None:
        threads["body"] = threading.get_ident()
        await conn.execute("INSERT INTO meta(key, value) VALUES ('alone', 'v')")

    monkeypatch.setattr(db_mod, "sync_to_disk", recorded)
    try:
        trips = count_trips(db, monkeypatch)
        await db.write(body)
        assert (len(trips), threads["fsync"]) == (1, threads["body"])
        assert await _committed(path, "alone")
    finally:
        await db.close()


async def test_a_write_alone_returns_only_after_its_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fsync is held: the write is committed (a second connection sees it) but its caller is not told until the
    fsync ends."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    release = hold_fsync(monkeypatch)
    try:
        write = asyncio.create_task(put(db, "alone", one_hop=True))
        await wait_until(lambda: _committed(path, "alone"), what="the write committed")
        await done_only_once_released(release, write)
    finally:
        release.set()
        await db.close()


async def test_a_write_alone_whose_fsync_fails_is_not_told_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL cannot be synced (an I/O error on the card): the write is committed but maybe not durable, so its
    caller gets the error that makes a sender retry, and the next write works."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    real = db_mod.sync_to_disk
    broken = True

    def failing(wal: Path, *, data_only: bool = False) -> None:
        if broken:
            raise OSError(5, "Input/output error")
        real(wal, data_only=data_only)

    monkeypatch.setattr(db_mod, "sync_to_disk", failing)
    try:
        with pytest.raises(StoreUnavailableError, match=r"cannot sync the write-ahead log: .*Input/output error"):
            await put(db, "unsynced", one_hop=True)
        broken = False
        await put(db, "after", one_hop=True)
        assert await _committed(path, "after")
    finally:
        await db.close()


async def test_a_write_alone_whose_commit_fails_leaves_nothing(tmp_path: Path) -> None:
    """The COMMIT itself refuses (a deferred constraint, checked only there): nothing of the write is stored, the
    caller gets the error, and the next writes of both kinds work."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        async with db.transaction() as conn:
            await conn.execute(
                "CREATE TABLE child(id INTEGER PRIMARY KEY,"
                " parent TEXT REFERENCES meta(key) DEFERRABLE INITIALLY DEFERRED)"
            )

        async def orphan(conn: Writer) -> None:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('orphaned', 'v')")
            await conn.execute("INSERT INTO child(parent) VALUES ('no such key')")

        with pytest.raises(StoreError, match="FOREIGN KEY"):
            await db.write(orphan)
        assert await db_rows(path, "SELECT key FROM meta WHERE key = 'orphaned'") == []
        await put(db, "after-hop", one_hop=True)
        await put(db, "after-block")
        assert await _committed(path, "after-hop") and await _committed(path, "after-block")
    finally:
        await db.close()


async def test_a_write_alone_measures_its_fsync_for_the_waits_weighed_against_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's linger and the order batch's wait for company are bounded by how long an fsync has lately taken:
    writes that sync in their own trip measure it too (0.05 s here), or a store with one sender would never know."""
    db = await Database.open(tmp_path / "edge.db")
    try:
        slow_fsync(monkeypatch, 0.05)
        for n in range(3):
            await put(db, f"alone-{n}", one_hop=True)
        assert 0.05 <= db.fsync_s < 0.5
    finally:
        await db.close()


@pytest.mark.parametrize("joiner", ["block", "one_hop"])
async def test_a_write_that_need_not_be_durable_costs_no_fsync_and_one_that_joins_it_is_durable_as_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, joiner: str
) -> None:
    """``transaction(durable=False)`` (the outbox's delivered marks) returns once committed, with no fsync; a writer
    that must be durable joining its group (queued while it runs) still returns only after the WAL's fsync, and that
    fsync carries both."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    synced: list[str] = []
    real = db_mod.sync_to_disk

    def recorded(wal: Path, *, data_only: bool = False) -> None:
        real(wal, data_only=data_only)
        synced.append("synced")

    monkeypatch.setattr(db_mod, "sync_to_disk", recorded)
    try:
        async with db.transaction(durable=False) as conn:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('mark', 'v')")
        assert synced == [] and await _committed(path, "mark")
        before = await asyncio.to_thread(wal_commits, path)

        # A writer holds the writer; a mark queues behind it, then the order, then another mark: the first mark opens
        # the next group and the others join it.
        holding, queued = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with db.transaction() as conn:
                holding.set()
                await conn.execute("INSERT INTO meta(key, value) VALUES ('first', 'v')")
                await asyncio.sleep(0.05)

        async def lazy() -> None:
            await holding.wait()
            queued.set()
            async with db.transaction(durable=False) as conn:
                await conn.execute("INSERT INTO meta(key, value) VALUES ('mark2', 'v')")

        async def durable() -> None:
            await queued.wait()
            await asyncio.sleep(0)  # the mark is in the queue first
            await put(db, "order", one_hop=joiner == "one_hop")
            synced.append("order returned")

        async def last() -> None:  # queued behind the order: a one-hop order then joins the group, not closes it
            await queued.wait()
            for _ in range(2):
                await asyncio.sleep(0)
            async with db.transaction(durable=False) as conn:
                await conn.execute("INSERT INTO meta(key, value) VALUES ('mark3', 'v')")

        await asyncio.wait_for(asyncio.gather(first(), lazy(), durable(), last()), timeout=5)
        assert synced == ["synced", "synced", "order returned"], "the order was told stored before its fsync"
        assert await asyncio.to_thread(wal_commits, path) - before == 2, "the marks and the order share one commit"
        assert all([await _committed(path, key) for key in ("mark2", "order", "mark3")])
    finally:
        await db.close()
