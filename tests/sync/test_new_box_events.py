"""A box's card dies and a new box (a fresh database) takes its place: its status events must not reuse the keys the
old box's events have at central, which the contract refuses for good when the body differs (docs/central-api.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from tests.helpers import db_rows, eventually
from tests.sync.conftest import Agents

_REJECTED = "SELECT idempotency_key FROM outbox WHERE json_extract(payload, '$._rejected') IS NOT NULL"


def printed_at_central(central: CentralSim) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(central.events_of("printed"))

    return count


async def test_a_replacement_boxs_status_events_are_taken_by_central_not_refused_as_keys_the_old_box_used(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, tmp_path: Path
) -> None:
    """The old box recovers and prints three orders and reports them; its card dies. The new box (same store, a fresh
    database) recovers the same orders, prints them COPY and reports that. Before: its events had the old box's keys
    (`<order>:received:0`, and `<order>:printed:<job id>` with job ids counted again from 1, in the same order), and
    a strict central refused every one of them for good as a key reused with another body (the central probe helper,
    3 of 3): central never heard that the new box printed, and the new box logged an error for each."""
    orders = [make_order(n, print_receipt=n % 2 == 0) for n in range(3)]
    central.add_orders(orders)
    jobs = 3 + 2  # a ticket each, receipts for orders 0 and 2

    old, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    await eventually(printed_at_central(central), lambda n: n == jobs, what="the old box's prints reported")
    await agents.stop(old)

    new_box = sync_settings(sections={"agent": {"data_dir": str(tmp_path / "new-box")}})
    new, events = await agents.start(new_box)
    await events.wait(RecoveryCompleted)
    await eventually(
        lambda: db_rows(new, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL AND event = 'printed'"),
        lambda rows: rows == [(jobs,)],
        what="the new box's prints answered by central",
    )
    assert await db_rows(new, _REJECTED) == []
    assert len(central.events_of("printed")) == 2 * jobs  # the new box's prints are news to central
    assert len(central.events_of("received")) == 2 * len(orders)


async def test_a_restart_of_the_same_box_keeps_its_event_keys(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The same database after a restart is the same box: an event it reports again (a crash after central took it,
    before the box marked it delivered) must carry its first key, so central takes it as the duplicate it is."""
    central.add_orders([make_order(1)])
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    await eventually(printed_at_central(central), lambda n: n == 2, what="the ticket and the receipt reported")
    await agents.stop(agent)
    again, _ = await agents.start(sync_settings())
    keys = {key for (key,) in await db_rows(again, "SELECT idempotency_key FROM outbox")}
    assert keys == set(central.events), keys
