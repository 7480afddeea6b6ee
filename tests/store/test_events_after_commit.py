"""Events a write implies are published once it has committed, and never for a write that rolled back."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster

from edge.errors import StoreError
from edge.events import Event, EventBus, JobDead, JobFailed, JobPrinted, StorageRecovered
from edge.states import JobState
from edge.store.db import Database
from edge.store.jobs import JobStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "edge.db")
    yield database
    await database.close()


@pytest.fixture(autouse=True)
def reads_from_a_subscriber(no_blocking_calls_on_the_loop: BlockBuster) -> None:
    """Subscribers are plain callables: the one here reads the file synchronously, as another process would, at the
    moment the event arrives. That read is the test's instrument, not agent code, so the guard lets it block."""
    for name in ("sqlite3.Connection.execute", "sqlite3.Cursor.fetchall"):
        if name in no_blocking_calls_on_the_loop.functions:
            no_blocking_calls_on_the_loop.functions[name].can_block_in(__file__, "_committed")


def _committed(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What another process would read now."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def _order_with_job(db: Database) -> int:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at)"
            " VALUES ('o1', 'A-1', 'h', '{}', 'web', '2026-01-01T00:00:00+00:00', ?)",
            (time.time(),),
        )
        cursor = await conn.execute(
            "INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, idempotency_key)"
            " VALUES ('o1', 'ticket', 'kitchen', 'kitchen', 'printing', ?, 'o1:ticket:kitchen:0') RETURNING id",
            (time.time(),),
        )
        (job_id,) = await cursor.fetchone() or (0,)
        await cursor.close()
    return job_id


async def test_a_subscriber_sees_the_write_committed_when_the_event_arrives(db: Database) -> None:
    """The event goes out after COMMIT: a subscriber that reads from another connection finds the row there."""
    bus = EventBus()
    seen: list[list[tuple[object, ...]]] = []
    bus.subscribe(lambda _: seen.append(_committed(db.path, "SELECT value FROM meta WHERE key = 'k'")))
    async with db.publishing(bus) as (conn, events):
        await conn.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
        events.append(StorageRecovered())
        assert seen == []  # held while the transaction is open
    assert seen == [[("v",)]]


@pytest.mark.parametrize("where", ["inside", "at_commit"])
async def test_a_write_that_fails_after_collecting_an_event_publishes_nothing(db: Database, where: str) -> None:
    """A write that collected its event and then failed (an error inside, or a COMMIT that refuses it) is rolled back
    and nobody hears of it."""
    bus = EventBus()
    heard: list[Event] = []
    bus.subscribe(heard.append)
    with pytest.raises((RuntimeError, StoreError)):
        async with db.publishing(bus) as (conn, events):
            await conn.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
            events.append(StorageRecovered())
            if where == "inside":
                raise RuntimeError("the write's own code fails after collecting its event")
            # Checked at COMMIT only: a job of an order that does not exist.
            await conn.execute("PRAGMA defer_foreign_keys = ON")
            await conn.execute(
                "INSERT INTO print_jobs(order_id, kind, printer, created_at, idempotency_key)"
                " VALUES ('no-such-order', 'ticket', 'kitchen', 0, 'x:ticket:-:0')"
            )
    assert heard == []
    assert _committed(db.path, "SELECT COUNT(*) FROM meta WHERE key = 'k'") == [(0,)]


async def test_a_job_recorded_dead_is_announced_only_with_its_outbox_row(db: Database) -> None:
    """The spool records a job's last failed attempt; its outbox row cannot be written (here a trigger refuses it),
    so the whole record rolls back: no JobDead for the alerter, the job still 'printing' (reprinted as COPY at the
    next start). Once the outbox takes rows again, the same record commits and JobDead goes out once."""
    bus = EventBus()
    heard: list[Event] = []
    bus.subscribe(heard.append)
    jobs = JobStore(db, bus=bus)
    job_id = await _order_with_job(db)
    async with db.transaction() as conn:
        await conn.execute(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
        )
    with pytest.raises(StoreError, match="disk trouble"):
        await jobs.mark_failed(job_id, "o1", error="cover open", next_attempt_at=0, max_attempts=1, partial=False)
    assert heard == []
    assert _committed(db.path, "SELECT state, attempts FROM print_jobs") == [("printing", 0)]
    async with db.transaction() as conn:
        await conn.execute("DROP TRIGGER refuse_outbox")
    recorded = await jobs.mark_failed(
        job_id, "o1", error="cover open", next_attempt_at=0, max_attempts=1, partial=False
    )
    assert recorded is not None and recorded.state == JobState.DEAD
    assert [type(e) for e in heard] == [JobDead]
    dead = heard[0]
    assert isinstance(dead, JobDead) and (dead.job_id, dead.order_number, dead.printer) == (job_id, "A-1", "kitchen")
    assert _committed(db.path, "SELECT event FROM outbox") == [("failed",)]
    assert not [e for e in heard if isinstance(e, (JobFailed, JobPrinted))]
