"""A batch the backend refuses for good (422) is split: good events still go, once and in order; the bad one is marked
rejected and never sent again. Auth and other "fix it and retry" answers keep the batch pending."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.config import CentralSettings, Secret, Settings
from edge.errors import CentralApiError
from edge.events import EventBus, JobPrinted, RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import example_order
from edge.store import Database
from edge.store.outbox import REJECTED_KEY, add_outbox, outbox_row
from edge.sync.client import CentralClient, CentralRejectedError
from edge.sync.outbox import OutboxSender
from tests.helpers import api_client, db_rows, eventually
from tests.sync.conftest import CENTRAL_TOKEN, FAST, STORE, Agents

MakeSender = Callable[..., Awaitable[OutboxSender]]

# Three orders, events interleaved as a store writes them. B's first `printed` is the one the backend refuses.
EVENTS = [
    ("A", "received", "0"),
    ("B", "received", "0"),
    ("A", "printed", "1"),
    ("B", "printed", "2"),
    ("C", "received", "0"),
    ("B", "printed", "3"),
    ("A", "ready", "0"),
    ("B", "ready", "0"),
    ("C", "printed", "4"),
    ("B", "fulfilled", "0"),
]
POISON = "B:printed:2"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "outbox.db")
    yield database
    await database.close()


@pytest.fixture
async def make_sender(db: Database, central: CentralSim) -> AsyncIterator[MakeSender]:
    """Senders (not started: the test drives the send cycles) over the test database, against the simulator, which
    knows orders A, B and C of the store."""
    central.add_orders([example_order() | {"id": order_id} for order_id in "ABC"])
    clients: list[CentralClient] = []

    async def make(batch_size: int = 50, token: str = CENTRAL_TOKEN) -> OutboxSender:
        client = CentralClient(
            CentralSettings(**{**FAST, "url": central.url, "token": Secret(token), "max_attempts": 1}), STORE
        )
        await client.start()
        clients.append(client)
        return OutboxSender(db, client, EventBus(), batch_size=batch_size, link_up=lambda: True)

    yield make
    for client in clients:
        await client.close()


async def write(db: Database, events: list[tuple[str, str, str]]) -> None:
    """Outbox rows as the store writes them: printed events carry their job id."""
    async with db.transaction() as conn:
        await add_outbox(
            conn,
            [
                outbox_row(order, event, suffix, 1.0, **({"job_id": int(suffix)} if event == "printed" else {}))
                for order, event, suffix in events
            ],
        )


def keys(events: list[tuple[str, str, str]]) -> list[str]:
    return [f"{o}:{e}:{s}" for o, e, s in events]


async def rows(db: Database) -> dict[str, tuple[Any, ...]]:
    """idempotency_key -> (delivered_at, attempts, payload as dict), committed state."""
    return {
        k: (d, a, json.loads(p))
        for k, d, a, p in await db_rows(db.path, "SELECT idempotency_key, delivered_at, attempts, payload FROM outbox")
    }


def assert_in_order_per_order(central: CentralSim, written: list[str]) -> None:
    arrival = list(central.events)  # first copies, in the order the simulator accepted them
    for order in {k.split(":")[0] for k in written}:
        expected = [k for k in written if k.startswith(f"{order}:") and k in central.events]
        assert [k for k in arrival if k.startswith(f"{order}:")] == expected


@pytest.mark.parametrize("batch_size", [1, 3, 50])
async def test_refused_event_is_rejected_and_the_rest_delivered_once_in_order(
    db: Database, central: CentralSim, make_sender: MakeSender, batch_size: int
) -> None:
    central.reject_events(keys={POISON})
    sender = await make_sender(batch_size=batch_size)
    await write(db, EVENTS)

    with capture_logs() as logs:
        settled = await sender.flush()
    assert settled == len(EVENTS)
    good = [k for k in keys(EVENTS) if k != POISON]
    assert set(central.events) == set(good)  # before and after it, B's other events included
    assert central.duplicates == []  # each good event exactly once
    assert_in_order_per_order(central, keys(EVENTS))
    state = await rows(db)
    delivered_at, _, payload = state[POISON]
    assert delivered_at is not None and payload[REJECTED_KEY]["status"] == 422
    assert "invalid_event" in payload[REJECTED_KEY]["reason"]
    assert all(REJECTED_KEY not in state[k][2] and state[k][0] is not None for k in good)
    assert await sender.pending() == 0 and await sender.rejected() == 1
    [logged] = [e for e in logs if e["event"] == "outbox_event_rejected"]
    assert logged["key"] == POISON and logged["status"] == 422 and logged["log_level"] == "error"

    # More send cycles, with more events of the same order written meanwhile: the rejected one is never sent again.
    posted = central.posted[POISON]
    later = [("B", "printed", "5"), ("A", "fulfilled", "0")]
    await write(db, later)
    for _ in range(3):
        await sender.flush()
        await sender.send_once()
    assert central.posted[POISON] == posted
    assert set(central.events) == set(good + keys(later)) and central.duplicates == []
    assert_in_order_per_order(central, keys(EVENTS + later))


async def test_refused_event_type_rejects_each_such_event_on_its_own(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    central.reject_events(types={"ready"})
    sender = await make_sender(batch_size=50)
    await write(db, EVENTS)
    await sender.flush()
    ready = {k for k in keys(EVENTS) if ":ready:" in k}
    assert set(central.events) == set(keys(EVENTS)) - ready and central.duplicates == []
    assert {k for k, (_, _, p) in (await rows(db)).items() if REJECTED_KEY in p} == ready
    before = {k: central.posted[k] for k in ready}
    for _ in range(3):
        await sender.flush()
    assert {k: central.posted[k] for k in ready} == before


async def test_wrong_token_keeps_the_batch_pending(db: Database, central: CentralSim, make_sender: MakeSender) -> None:
    """401 is a configuration problem: nothing is rejected, the batch stays pending and goes once the token is fixed."""
    wrong = await make_sender(token="not-the-token")
    await write(db, EVENTS)
    for _ in range(3):
        with pytest.raises(CentralRejectedError) as refused:
            await wrong.flush()
        assert refused.value.status == 401
    assert await wrong.pending() == len(EVENTS) and await wrong.rejected() == 0
    assert central.events == {} and all(d is None and REJECTED_KEY not in p for d, _, p in (await rows(db)).values())
    assert (await rows(db))[keys(EVENTS)[0]][1] == 3  # attempts counted

    fixed = await make_sender()
    assert await fixed.flush() == len(EVENTS)
    assert set(central.events) == set(keys(EVENTS)) and central.duplicates == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "<html>Bad Request</html>"),  # a proxy, not the backend's {"error": ...}
        (403, None),
        (404, None),  # wrong store or URL
        (405, "<html>Method Not Allowed</html>"),  # a proxy or a misrouted URL
        (408, None),
        (409, None),
        (410, {"error": "gone"}),
        (413, {"error": "body_too_large"}),  # a single event too big for a proxy: not the backend refusing it
        (422, "Unprocessable"),  # not the contract's body
        (422, {"error": "validation_failed"}),  # not one of the contract's permanent errors
    ],
)
async def test_only_the_contracts_permanent_answer_rejects_an_event(
    db: Database, central: CentralSim, make_sender: MakeSender, status: int, body: object
) -> None:
    """Any refusal other than the contract's 422 {"error": invalid_event | unknown_order | idempotency_key_reused}
    rejects nothing, even for a single event: the batch stays pending and goes through once the answer is fixed."""
    sender = await make_sender(batch_size=1)
    await write(db, EVENTS)
    central.fail_next(1, status, body=body, path="events")
    with pytest.raises(CentralApiError):
        await sender.send_once()
    assert await sender.pending() == len(EVENTS) and await sender.rejected() == 0
    assert await sender.flush() == len(EVENTS)
    assert set(central.events) == set(keys(EVENTS)) and central.duplicates == []


async def test_a_batch_bigger_than_the_contract_allows_is_sent_in_contract_sized_posts(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """batch_size above the contract's 500 events per POST: the sender never sends more than 500 at once, so the
    backend never answers 413 and every event arrives once."""
    central.add_orders([example_order() | {"id": f"big{n}"} for n in range(600)])
    sender = await make_sender(batch_size=1000)
    await write(db, [(f"big{n}", "received", "0") for n in range(600)])
    assert await sender.flush() == 600
    assert 413 not in central.statuses() and len(central.events) == 600 and central.duplicates == []


async def test_running_agent_delivers_past_a_refused_event(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """End to end: the backend refuses one order's `received`; its `printed` events and the others' still arrive."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)  # the start-up run is over: the orders below arrive by push only
    orders = central.create_orders(3, prefix="rej")
    poison = f"{orders[1]['id']}:received:0"
    central.reject_events(keys={poison})
    async with api_client(agent) as session:
        for order in orders:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()
    db = agent.settings.agent.db_path
    jobs = await db_rows(db, "SELECT id, order_id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs))
    expected = {f"{o['id']}:received:0" for o in orders} - {poison} | {f"{o}:printed:{j}" for j, o in jobs}
    await central.wait_for(lambda: expected <= set(central.events), timeout=20)
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
        lambda rows: rows == [(0,)],
        timeout=20,
    )
    assert set(central.events) == expected and central.duplicates == []
    [(payload,)] = await db_rows(db, "SELECT payload FROM outbox WHERE idempotency_key = ?", poison)
    assert json.loads(payload)[REJECTED_KEY]["status"] == 422
