"""The scan transaction in the store: all or nothing, hand-out rules, and what an order's progress shows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge.config import Settings
from edge.errors import StoreError
from edge.orders.intake import Router
from edge.sim.orders import make_order
from edge.store.db import Database
from edge.store.orders import OrderStore
from edge.store.rows import OrderProgress, StationProgress
from edge.store.scans import ScanRequest, ScanStore
from tests.helpers import db_rows


@pytest.fixture
async def db(tmp_path: Path, make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    """A migrated database file holding order 1 (kitchen + bar tickets) and order 2 (kitchen only)."""
    database = await Database.open(tmp_path / "scans.db")
    router = Router.from_settings(make_settings())
    await OrderStore(database).insert_many(
        [router.prepare(make_order(1, bar=True), "push"), router.prepare(make_order(2), "push")]
    )
    yield database
    await database.close()


def ticket(order_seq: int, station: str, **extra: object) -> ScanRequest:
    return ScanRequest(
        scanner="s1",
        code=f"edge:v1:ord_{order_seq:06d}:{station}",
        order_ref=f"ord_{order_seq:06d}",
        station=station,
        plain=False,
        **extra,
    )  # type: ignore[arg-type]


async def committed(path: Path, sql: str) -> list[tuple[object, ...]]:
    return await db_rows(path, sql)


async def test_ready_and_its_outbox_row_commit_together_or_not_at_all(db: Database) -> None:
    """If the outbox row cannot be written, the scan, the station row and the ready mark are rolled back with it."""
    store = ScanStore(db)
    await store.record(ticket(1, "kitchen"))
    async with db.transaction() as conn:
        await conn.execute(
            "CREATE TRIGGER outbox_broken BEFORE INSERT ON outbox WHEN NEW.event = 'ready' BEGIN SELECT RAISE(ABORT, "
            "'outbox broken'); END"
        )
    with pytest.raises(StoreError, match="outbox broken"):
        await store.record(ticket(1, "bar"))
    assert await committed(db.path, "SELECT COUNT(*) FROM scans") == [(1,)]
    assert await committed(db.path, "SELECT station FROM station_done") == [("kitchen",)]
    assert await committed(db.path, "SELECT COUNT(*) FROM order_pickup") == [(0,)]

    async with db.transaction() as conn:
        await conn.execute("DROP TRIGGER outbox_broken")
    assert (await store.record(ticket(1, "bar"))).outcome == "order_ready"
    assert await committed(db.path, "SELECT event FROM outbox WHERE order_id = 'ord_000001' AND event = 'ready'") == [
        ("ready",)
    ]


async def test_hand_out_waits_out_a_double_read(db: Database) -> None:
    """With hand-out on, a rescan within hand_out_gap_s of 'ready' is a double read; the order is not handed out."""
    store = ScanStore(db)
    assert (await store.record(ticket(2, "kitchen", hand_out=True, hand_out_gap_s=60))).outcome == "order_ready"
    again = await store.record(ticket(2, "kitchen", hand_out=True, hand_out_gap_s=60))
    assert again.outcome == "already_done" and "double read" in again.detail
    assert await committed(db.path, "SELECT handed_out_at FROM order_pickup") == [(None,)]
    assert (await store.record(ticket(2, "kitchen", hand_out=True, hand_out_gap_s=0))).outcome == "handed_out"
    assert (await store.record(ticket(2, "kitchen", hand_out=True, hand_out_gap_s=0))).outcome == "already_done"
    assert await committed(db.path, "SELECT COUNT(*) FROM outbox WHERE event = 'fulfilled'") == [(1,)]


async def test_progress_shows_state_and_stations(db: Database) -> None:
    """An order's progress goes open → ready → handed_out, with each ticket station's done time."""
    store = ScanStore(db)
    progress = await store.progress("ord_000001")
    assert progress == OrderProgress(
        state="open",
        ready_at=None,
        handed_out_at=None,
        stations=(StationProgress(station="bar", done_at=None), StationProgress(station="kitchen", done_at=None)),
    )
    assert not any(s.done for s in progress.stations)
    await store.record(ticket(1, "bar"))
    await store.record(ticket(1, "kitchen"))
    progress = await store.progress("ord_000001")
    assert progress.state == "ready" and all(s.done for s in progress.stations)
    await store.record(ticket(1, "bar", hand_out=True))
    assert (await store.progress("ord_000001")).state == "handed_out"
    assert await store.counts() == {
        "ticket_done": 1,
        "order_ready": 1,
        "handed_out": 1,
        "already_done": 0,
        "unknown": 0,
    }
