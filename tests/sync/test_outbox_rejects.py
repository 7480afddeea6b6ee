"""A batch the backend refuses for good (422) is split: good events still go, once and in order; the bad one is marked
rejected and never sent again. A refusal of one order's events that is not for good (410, 409, another 422) sets that
order aside, its events pending and tried again now and then, a person told; the other orders' events still go. Auth
and other "fix it and retry" answers keep the batch pending."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.clock import SteppedClock as AgentClock
from edge.config import CentralSettings, Secret, Settings
from edge.errors import CentralApiError
from edge.events import EventBus, JobPrinted, OrderEventsRefused, RecoveryCompleted
from edge.log import Summarised
from edge.sim.central import CentralSim
from edge.sim.orders import example_order, make_order
from edge.sim.smtp import SmtpSink
from edge.store.db import Database
from edge.store.outbox import REJECTED_KEY, add_outbox, outbox_row
from edge.sync.client import CentralClient, CentralRejectedError
from edge.sync.outbox import OutboxSender
from tests.helpers import Recorder, api_client, commits_seen, db_rows, eventually, key_mark, mail_to, post, wait_until
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
RETRY_S = 60.0  # refused_retry_s of the senders below: an order central refused is tried again after this (+ jitter)


class SteppedClock(Clock):
    """Monotonic time that moves only when the test says so: a sender's "later" without waiting for it."""

    def __init__(self) -> None:
        self.monotonic = 1000.0

    def mono(self) -> float:
        return self.monotonic


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

    async def make(
        batch_size: int = 50, token: str = CENTRAL_TOKEN, clock: Clock = SYSTEM_CLOCK, **central_keys: Any
    ) -> OutboxSender:
        keys = {**FAST, "url": central.url, "token": Secret(token), "max_attempts": 1, **central_keys}
        client = CentralClient(CentralSettings(**keys), STORE)
        await client.start()
        clients.append(client)
        return OutboxSender(
            db, client, EventBus(), batch_size=batch_size, link_up=lambda: True, refused_retry_s=RETRY_S, clock=clock
        )

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

    fixed = await make_sender()
    assert await fixed.flush() == len(EVENTS)
    assert set(central.events) == set(keys(EVENTS)) and central.duplicates == []


@pytest.mark.parametrize(("token", "status"), [("not-the-token", 401), (CENTRAL_TOKEN, 500)])
async def test_a_central_that_keeps_refusing_costs_the_card_no_write_and_the_log_one_line(
    db: Database, central: CentralSim, make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch, token: str, status: int
) -> None:
    """A wrong token (or store id) nobody fixes for days, or an events endpoint that fails while central's health
    answers: the sender tries every few seconds. Each try wrote its count to the database (a commit with an fsync on
    the SD card: 17,280 a day, ~115 MB written) and a log line (on the same card). Now a failed try writes nothing
    and the log says it once; again only after ten minutes (with how many since) or when the reason changes, and once
    when the events go again."""
    monkeypatch.setattr("edge.sync.outbox._IDLE_S", 0.01)  # its retry cadence, 5 s, shortened
    sender = await make_sender(token=token)
    await write(db, EVENTS)
    if status == 500:
        central.fail_next(10_000, status, path="events")
    async with commits_seen(db.path) as committed:
        with capture_logs() as logs:
            sender.start()
            await wait_until(lambda: central.statuses().count(status) >= 20, 10, "20 refused tries")
            assert await committed() == 0, "failed tries wrote to the database"
            central.clear_faults()
            if status == 401:
                await sender.stop()
                sender = await make_sender()
                sender.start()
            await wait_until(lambda: len(central.events) == len(EVENTS), 10, "the events delivered once fixed")
            if status == 500:  # a new spell after the events went again is said at once
                central.fail_next(10_000, status, path="events")
                await write(db, [("D", "received", "0")])
                await wait_until(lambda: central.statuses().count(status) >= 25, 10, "refused tries again")
            await sender.stop()
    said = [e for e in logs if e["event"].startswith("outbox_delivery")]
    assert [e["event"] for e in said] == [
        "outbox_delivery_refused" if status == 401 else "outbox_delivery_failed",
        *(["outbox_delivery_resumed", "outbox_delivery_failed"] if status == 500 else []),
    ], said
    assert str(status) in said[0]["error"] and said[0]["pending"] == len(EVENTS)
    assert said[0]["log_level"] == ("error" if status == 401 else "warning")


def test_a_line_said_again_says_how_many_were_left_out_and_a_pass_starts_afresh() -> None:
    """Summarised: the first line of a kind at once, the next no sooner than ``every_s`` later and with the count
    left out meanwhile; after a pass (the thing works again) the next failure is said at once, with no old count."""
    now = [0.0]
    said = Summarised("thing_failed", every_s=600, clock=lambda: now[0])
    with capture_logs() as logs:
        said.note("500", n=1)
        said.note("500", n=2)
        said.note("401", n=3)  # another reason: at once
        now[0] = 599
        said.note("500", n=4)
        now[0] = 601
        said.note("500", n=5)
        said.note("500", n=6)  # left out, and forgotten with the pass
        assert said.passed() and not said.passed()
        said.note("500", n=7)
    assert [(e["n"], e.get("more_since_last")) for e in logs] == [(1, None), (3, None), (5, 2), (7, None)]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "<html>Bad Request</html>"),  # a proxy, not the backend's {"error": ...}
        (403, None),
        (404, None),  # wrong store or URL
        (405, "<html>Method Not Allowed</html>"),  # a proxy or a misrouted URL
        (408, None),
    ],
)
async def test_only_the_contracts_permanent_answer_rejects_an_event(
    db: Database, central: CentralSim, make_sender: MakeSender, status: int, body: object
) -> None:
    """Any refusal other than the contract's 422 {"error": invalid_event | unknown_order | idempotency_key_reused}
    rejects nothing, even for a single event: the batch stays pending and goes through once the answer is fixed.
    (409, 410 and other 422s set the event's order aside, rejecting nothing: the tests below.)"""
    sender = await make_sender(batch_size=1)
    await write(db, EVENTS)
    central.fail_next(1, status, body=body, path="events")
    with pytest.raises(CentralApiError):
        await sender.send_once()
    assert await sender.pending() == len(EVENTS) and await sender.rejected() == 0
    assert await sender.flush() == len(EVENTS)
    assert set(central.events) == set(keys(EVENTS)) and central.duplicates == []


@pytest.mark.parametrize("batch_size", [1, 3, 50])
@pytest.mark.parametrize("status", [410, 409, 422, 200])
async def test_an_order_central_will_not_take_is_set_aside_and_the_other_orders_events_still_go(
    db: Database, central: CentralSim, make_sender: MakeSender, status: int, batch_size: int
) -> None:
    """Central archived order B and answers 410 {"error": "order_gone"} (409 alike, or a framework's 422 {"detail":
    [...]}) for every batch holding one of its events. The batch is split until B's oldest event is refused on its
    own: B is set aside, every event of it pending (none rejected: not the contract's refusal for good), and A's and
    C's arrive once and in order. B is tried again alone once per refused_retry_s, not at every cycle; once central
    takes it again, its events arrive, in the order they happened. So with a 200 that takes the batch's other events
    and counts B's out (naming them as rejected): before stop 68 that batch was sent again whole every 5 s, and every
    event after it waited for good (the central probe, finding 5); its split sends the others again, as duplicates."""
    again_ok = status == 200  # the events a 200 took come again in the halves: central counts them as duplicates
    clock = SteppedClock()
    central.refuse_orders({"B"}, status=status)
    sender = await make_sender(batch_size=batch_size, clock=clock)
    await write(db, EVENTS)
    await sender.flush()
    of_b = [k for k in keys(EVENTS) if k.startswith("B:")]
    assert set(central.events) == set(keys(EVENTS)) - set(of_b) and (again_ok or central.duplicates == [])
    assert_in_order_per_order(central, keys(EVENTS))
    assert await sender.pending() == len(of_b) and await sender.rejected() == 0
    assert all(d is None and REJECTED_KEY not in p for k, (d, _, p) in (await rows(db)).items() if k in of_b)

    # Events written meanwhile: A's go at once; B's wait behind its refused one, which is not sent at every cycle.
    later = [("B", "printed", "5"), ("A", "fulfilled", "0")]
    await write(db, later)
    tried = central.posted.copy()
    for _ in range(3):
        await sender.flush()
    assert "A:fulfilled:0" in central.events
    assert all(central.posted[k] == tried[k] for k in [*of_b, "B:printed:5"])

    clock.monotonic += 2 * RETRY_S  # B's time to be tried again: its oldest event alone, once; still refused
    await sender.flush()
    assert central.posted["B:received:0"] == tried["B:received:0"] + 1
    assert all(central.posted[k] == tried[k] for k in [*of_b[1:], "B:printed:5"])
    assert not any(k.startswith("B:") for k in central.events) and await sender.pending() == len(of_b) + 1

    central.accept_orders({"B"})  # restored at central
    await sender.flush()  # not yet its time
    assert not any(k.startswith("B:") for k in central.events)
    clock.monotonic += 2 * RETRY_S
    await sender.flush()
    assert set(central.events) == set(keys(EVENTS + later)) and (again_ok or central.duplicates == [])
    assert_in_order_per_order(central, keys(EVENTS + later))
    assert await sender.pending() == 0 and await sender.rejected() == 0


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (409, None),
        (410, {"error": "gone"}),
        (422, "Unprocessable"),  # not the contract's body
        (422, {"error": "validation_failed"}),  # not one of the contract's permanent errors
    ],
)
async def test_a_refusal_of_one_event_not_for_good_sets_its_order_aside_and_rejects_nothing(
    db: Database, central: CentralSim, make_sender: MakeSender, status: int, body: object
) -> None:
    """One event alone answered with a 4xx that may be about the event but is not the contract's refusal for good:
    nothing is rejected; its order (A) waits, the others' events go, and A's go when it is tried again."""
    clock = SteppedClock()
    sender = await make_sender(batch_size=1, clock=clock)
    await write(db, EVENTS)
    central.fail_next(1, status, body=body, path="events")
    await sender.flush()
    of_a = [k for k in keys(EVENTS) if k.startswith("A:")]
    assert set(central.events) == set(keys(EVENTS)) - set(of_a)
    assert await sender.pending() == len(of_a) and await sender.rejected() == 0
    clock.monotonic += 2 * RETRY_S
    await sender.flush()
    assert set(central.events) == set(keys(EVENTS)) and central.duplicates == []
    assert_in_order_per_order(central, keys(EVENTS))


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


async def test_an_event_too_big_for_central_sets_its_order_aside_and_the_others_still_go(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """One order's event is bigger than central takes (a 2 MB error text against its 1 MB limit: 413): it is never
    rejected, its order is set aside and offered again later, and every other order's events are delivered. Before,
    that one event stopped the outbox: nothing behind it was ever sent (probe_central, unclear finding)."""
    sender = await make_sender(batch_size=50)
    async with db.transaction() as conn:
        await add_outbox(conn, [outbox_row("A", "failed", "1", 1.0, job_id=1, error="x" * 2_000_000)])
    await write(db, [("B", "ready", "0"), ("C", "ready", "0")])
    assert await sender.flush() == 2
    assert set(central.events) == {"B:ready:0", "C:ready:0"} and 413 in central.statuses()
    assert await sender.pending() == 1 and await sender.rejected() == 0


def body_of(rows: list[tuple[Any, ...]]) -> int:
    """The bytes of the events POST holding these outbox rows (key, payload), as the agent writes it (json=)."""
    return len(json.dumps({"events": [{**json.loads(p), "idempotency_key": k} for k, p in rows]}))


async def pile_up(agent: Agent, recorder: Recorder, central: CentralSim, prefix: str, count: int = 80) -> None:
    """``count`` orders pushed and printed while central is down: their `received` and `printed` events wait (about
    200 for 80)."""
    await central.set_up(False)
    orders = central.create_orders(count, prefix=prefix)
    async with api_client(agent) as api:
        for order in orders:
            assert (await post(api, order))[0] == 201
    [(jobs,)] = await db_rows(agent, "SELECT COUNT(*) FROM print_jobs")
    await recorder.wait(JobPrinted, count=jobs, timeout=60)


async def test_a_gateway_body_limit_below_the_batch_costs_a_few_413s_once_not_a_split_at_every_batch(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A reverse proxy in front of central takes bodies of 30 events (nginx's client_max_body_size) and the agent
    catches up on about 200 events twice (orders pushed while central was down, then again), in batches of 50: every
    event arrives once and in order per order, and the proxy answers 413 once or twice while the agent learns its limit,
    not at every batch, nor again at the next backlog. Before, every batch went at full size, was refused and split:
    twice the requests and a warning at each batch, for good."""
    agent, recorder = await agents.start(sync_settings())
    await recorder.wait(RecoveryCompleted)
    pending = "SELECT idempotency_key, payload FROM outbox WHERE delivered_at IS NULL ORDER BY id"
    learnt = 0
    for wave in ("gw", "gx"):
        await pile_up(agent, recorder, central, wave)
        backlog = await db_rows(agent, pending)
        assert len(backlog) >= 190
        if central.gateway_max_body is None:
            central.gateway_max_body = body_of(backlog[:30])
        await central.set_up(True)
        await eventually(lambda: db_rows(agent, pending), lambda rows: rows == [], timeout=60, what="all delivered")
        learnt = learnt or len(central.gateway_refused)
        assert len(central.gateway_refused) == learnt <= 2, f"{wave}: 413 for bodies of {central.gateway_refused}"
    written = [k for (k,) in await db_rows(agent, "SELECT idempotency_key FROM outbox ORDER BY id")]
    assert set(central.events) == set(written) and central.duplicates == []
    assert_in_order_per_order(central, written)


async def test_a_gateway_limit_learnt_from_a_413_is_kept_an_hour_then_a_raised_one_is_used(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """The sender keeps under a body limit a gateway answered 413 for: later batches go in parts it takes, with no
    other 413, for an hour on the sender's clock; after that the operator's raised limit is used, the whole batch in
    one POST."""
    clock = SteppedClock()
    sender = await make_sender(batch_size=100, clock=clock)
    central.add_orders([example_order() | {"id": f"gw{n}"} for n in range(100)])

    def posts() -> int:
        return sum(path.endswith("/events") for _, _, path, _ in central.requests)

    async def backlog(event: str, suffix: str) -> int:
        """100 events of one kind, one per order, delivered; the POSTs that took."""
        await write(db, [(f"gw{n}", event, suffix) for n in range(100)])
        before = posts()
        assert await sender.flush() == 100
        return posts() - before

    await write(db, [(f"gw{n}", "received", "0") for n in range(100)])
    first = await db_rows(db.path, "SELECT idempotency_key, payload FROM outbox ORDER BY id LIMIT 30")
    central.gateway_max_body = body_of(first)
    assert await sender.flush() == 100
    learnt = len(central.gateway_refused)
    assert 1 <= learnt <= 2  # 100 events refused, then 50; 25 taken
    assert await backlog("printed", "1") >= 4
    assert len(central.gateway_refused) == learnt, f"413 for bodies of {central.gateway_refused}"

    central.gateway_max_body = None  # the operator raised the limit; the sender still keeps to the one it learnt
    clock.monotonic += 3599
    assert await backlog("ready", "0") >= 4
    clock.monotonic += 2  # an hour since the last 413: the whole batch goes in one POST again
    assert await backlog("fulfilled", "0") == 1
    written = [k for (k,) in await db_rows(db.path, "SELECT idempotency_key FROM outbox ORDER BY id")]
    assert set(central.events) == set(written) and len(written) == 400 and central.duplicates == []
    assert_in_order_per_order(central, written)


async def test_a_batch_too_slow_for_central_to_answer_in_time_is_sent_in_smaller_ones(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """A backlog of 240 events (the line was down an evening) and a backend that writes each one (5 ms an event, so
    the whole batch outlasts the 0.5 s read timeout): the batch is halved until central answers in time, and every
    event is delivered once. Before, the same 240 went again and again, central applied each copy, and the agent never
    heard the answer: the backlog and every later event stayed pending for good."""
    central.add_orders([example_order() | {"id": f"slow{n}"} for n in range(240)])
    central.event_latency_s = 0.005
    sender = await make_sender(batch_size=240, read_timeout_s=0.5)
    await write(db, [(f"slow{n}", "received", "0") for n in range(240)])
    for _ in range(8):
        try:
            await sender.flush()
        except CentralApiError:
            pass  # a batch that timed out stays pending, the next flush sends less
    assert await sender.pending() == 0
    assert len(central.events) == 240


@pytest.mark.parametrize(
    ("orders", "given_up_by", "recovery_page"),
    [
        (1, "agent", "quick"),
        (8, "agent", "quick"),
        (1, "gateway", "quick"),
        (8, "gateway", "quick"),
        (8, "agent", "slow"),
    ],
)
async def test_events_central_is_still_processing_when_sent_again_are_waited_for_not_refused(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    sink: SmtpSink,
    orders: int,
    given_up_by: str,
    recovery_page: str,
) -> None:
    """A backend that follows the IETF idempotency-key draft (section 2.7; Stripe alike) answers 409 {"error":
    "request_in_progress"} to keys whose first request it is still processing. The events of orders printed while the
    line was down go in one POST that central takes 1.5 s to apply, past the agent's read timeout; the agent sends
    them again (in halves, the same keys) while central is still at it. That 409 is "in progress", not a refusal:
    every event arrives within seconds, nothing is split for it, no order is set aside, nobody is mailed, the log
    says it once. Before, the
    agent split the batch down to single events and set every order aside for refused_retry_s (5 min), with a mail
    per order saying central refuses its events, though central had applied them all (the central71 probe, 3).
    ``gateway``: the gateway in front gives up first (nginx's proxy_read_timeout, an API gateway's 29 s) and answers
    504 with its own page while central goes on, and central's 409 is the draft's own example (problem+json, a title,
    no code): a 502, a 504 or a 5xx the box does not know may have left the request running too. Before (the
    central72 probe, 2): split, set aside, a mail per order, as above.
    ``slow``: the reconnect's recovery run reads its page of orders while the events wait (as a loaded CI machine
    ordered it, and a slow backend does): its answer is not an answer to the events. Before, it made the next 409 say
    "still processing" a second time."""
    central.in_progress_conflicts = True
    settings = sync_settings(read_timeout_s=0.5, connect_timeout_s=0.5, sections=mail_to(sink))
    agent, recorder = await agents.start(settings)
    await recorder.wait(RecoveryCompleted)
    await pile_up(agent, recorder, central, "busy", count=orders)
    if given_up_by == "agent":
        central.slow_next_events(1, 1.5)  # three times the read timeout, well within the retries it is given
    else:
        central.in_progress_style = "problem"
        central.gateway_timeouts_next(1, apply_after_s=1.5)
    if recovery_page == "slow":
        central.drip_next(1, chunk=16, interval_s=0.1, path="orders")
    with capture_logs() as logs:
        await central.set_up(True)
        await eventually(
            lambda: db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
            lambda rows: rows == [(0,)],
            timeout=10,
            what="every event delivered",
        )
    written = [k for (k,) in await db_rows(agent, "SELECT idempotency_key FROM outbox ORDER BY id")]
    assert set(central.events) == set(written)
    assert_in_order_per_order(central, written)
    assert 409 in central.statuses(), "central never answered in progress: the test did not test it"
    assert [e for e in logs if e["event"] in ("outbox_batch_split", "outbox_order_set_aside")] == []
    said = [e["event"] for e in logs if e["event"] == "central_still_processing" or "HTTP 409" in e.get("error", "")]
    assert said == ["central_still_processing"]  # one line, not one at every try
    assert recorder.of(OrderEventsRefused) == [] and sink.messages == []
    rejected = "SELECT COUNT(*) FROM outbox WHERE json_extract(payload, '$._rejected') IS NOT NULL"
    assert await db_rows(agent, rejected) == [(0,)]


async def test_events_central_is_still_processing_when_a_restarted_agent_sends_them_again_are_not_refused(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """As above, but the agent is restarted (systemd, an upgrade, a SIGHUP) while central is still applying the POST it
    gave up waiting for: the new agent does not know it sent those keys, and central's 409 says why in its body
    ({"error": "request_in_progress"}). That is "in progress" too: no order set aside, nobody mailed, every event
    delivered. Before, the restarted agent set each order aside with a mail apiece (the verify71 probe, 4a)."""
    central.in_progress_conflicts = True
    settings = sync_settings(read_timeout_s=0.5, connect_timeout_s=0.5, sections=mail_to(sink))
    agent, recorder = await agents.start(settings)
    await recorder.wait(RecoveryCompleted)
    await pile_up(agent, recorder, central, "held", count=4)
    central.slow_next_events(1, 3.0)  # still at it when the restarted agent sends the same keys
    with capture_logs() as logs:
        await central.set_up(True)
        await eventually(  # a batch given up on, or (one event in it, under load) a single one retried
            lambda: asyncio.sleep(0.05, [e["event"] for e in logs]),
            lambda events: "outbox_batch_too_slow" in events or "central_retry" in events,
            what="the first POST given up on",
        )
    await agents.stop(agent)
    agent, recorder = await agents.start(settings)
    await eventually(
        lambda: db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
        lambda rows: rows == [(0,)],
        timeout=15,
        what="every event delivered",
    )
    assert 409 in central.statuses(), "central never answered in progress: the test did not test it"
    assert recorder.of(OrderEventsRefused) == [] and sink.messages == []


async def test_a_409_that_names_its_refusal_after_a_gateway_error_is_a_refusal_at_once(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """A gateway answers 502 to the events POST (it may have reached central: its keys may still be running), and the
    retry meets central's 409 {"error": "order_gone"} for order B: a refusal that says what it is, not work in
    progress. B is set aside and A's and C's events go in that pass. Before (the verify72 probe, 3a): any 409 to those
    keys was "still processing" for 120 s, whatever its code: the other orders' events waited with B's for 2 minutes."""
    central.refuse_orders({"B"}, status=409)
    central.fail_next(1, 502, path="events")
    sender = await make_sender(batch_size=50, max_attempts=3)
    await write(db, EVENTS)
    await sender.flush()
    of_b = [k for k in keys(EVENTS) if k.startswith("B:")]
    assert set(central.events) == set(keys(EVENTS)) - set(of_b)
    assert await sender.pending() == len(of_b)


async def test_running_agent_delivers_past_a_refused_event(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """End to end: the backend refuses one order's `received`; its `printed` events and the others' still arrive."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)  # the start-up run is over: the orders below arrive by push only
    orders = central.create_orders(3, prefix="rej")
    mark = await key_mark(agent)
    poison = f"{orders[1]['id']}:received:0{mark}"
    central.reject_events(keys={poison})
    async with api_client(agent) as session:
        for order in orders:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()
    db = agent.settings.agent.db_path
    jobs = await db_rows(db, "SELECT id, order_id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs))
    expected = {f"{o['id']}:received:0{mark}" for o in orders} - {poison} | {f"{o}:printed:{j}{mark}" for j, o in jobs}
    await central.wait_for(lambda: expected <= set(central.events), timeout=20)
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
        lambda rows: rows == [(0,)],
        timeout=20,
    )
    assert set(central.events) == expected and central.duplicates == []
    [(payload,)] = await db_rows(db, "SELECT payload FROM outbox WHERE idempotency_key = ?", poison)
    assert json.loads(payload)[REJECTED_KEY]["status"] == 422


async def test_an_order_central_archived_holds_back_only_its_own_events_and_a_person_is_told(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """End to end: central archived one order and answers 410 order_gone for any batch holding one of its events.
    The other orders' events still arrive; the archived order's stay pending (tried again every refused_retry_s, and
    again after a restart) and a mail names it with central's status and reason. Once central takes it again, its
    events arrive in order and a resolved mail follows."""
    sections = mail_to(sink)
    sections["alerts"] |= {"group_interval_s": 0.1}
    settings = sync_settings(refused_retry_s=0.5, sections=sections)
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    orders = central.create_orders(3, prefix="arch")
    gone = orders[1]["id"]
    central.refuse_orders({gone}, status=410)
    async with api_client(agent) as session:
        for order in orders:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()
    db = agent.settings.agent.db_path
    jobs = await db_rows(db, "SELECT id, order_id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs))
    mark = await key_mark(db)
    others = {f"{o['id']}:received:0{mark}" for o in orders if o["id"] != gone} | {
        f"{o}:printed:{j}{mark}" for j, o in jobs if o != gone
    }
    await central.wait_for(lambda: others <= set(central.events), timeout=20)
    of_order = "SELECT idempotency_key FROM outbox WHERE order_id = ? ORDER BY id"
    of_gone = [k for (k,) in await db_rows(db, of_order, gone)]
    assert len(of_gone) >= 2 and not set(of_gone) & set(central.events)
    pending = "SELECT idempotency_key FROM outbox WHERE delivered_at IS NULL ORDER BY id"
    # central has the others' events once it answered; the agent marks them delivered just after that answer
    await eventually(lambda: db_rows(db, pending), lambda rows: [k for (k,) in rows] == of_gone, timeout=10)

    [mail] = await sink.wait_for(1)
    text = mail.get_body(("plain",)).get_content()
    assert gone in text and orders[1]["number"] in str(mail["Subject"]) + text
    assert "410" in text and "order_gone" in text

    # A restart forgets the order was set aside: its events are sent again, still refused, still pending; an order
    # taken after the restart is reported all the same, and nobody gets the same mail twice.
    await agents.stop(agent)
    tried = central.posted[of_gone[0]]
    agent, events = await agents.start(settings)
    await central.wait_for(lambda: central.posted[of_gone[0]] > tried, timeout=20)
    [after] = central.create_orders(1, prefix="after")
    async with api_client(agent) as session:
        async with session.post("/api/v1/orders", json=after) as response:
            assert response.status == 201, await response.text()
    await central.wait_for(lambda: f"{after['id']}:received:0{mark}" in central.events, timeout=20)
    assert [k for (k,) in await db_rows(db, pending)][: len(of_gone)] == of_gone
    assert len(sink.messages) == 1

    central.accept_orders({gone})  # restored at central: the next try delivers it, in order, and the alert resolves
    await central.wait_for(lambda: set(of_gone) <= set(central.events), timeout=20)
    assert [k for k in central.events if k.startswith(f"{gone}:")] == of_gone and central.duplicates == []
    await eventually(lambda: db_rows(db, pending), lambda rows: rows == [], timeout=20)
    [_, resolved] = await sink.wait_for(2)
    assert gone in resolved.get_body(("plain",)).get_content()
    assert str(resolved["Subject"]) != str(mail["Subject"])
    assert await db_rows(db, "SELECT COUNT(*) FROM outbox WHERE json_extract(payload, '$._rejected') IS NOT NULL") == [
        (0,)
    ]


async def test_an_event_central_refuses_as_a_reused_key_is_mailed_as_another_box_sending_as_this_one(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central already took another body under one of this box's event keys (another box sends as this one: its SD
    card cloned, both boxes running) and refuses the event for good, idempotency_key_reused. The manager's mail says
    what that most likely is and what to do: a box replaced is switched off for good, a box in another store gets its
    own store_id and an empty data_dir. Before (the replace81 probe, F4): "Zentrale lehnt Statusmeldungen endgültig
    ab (HTTP 422: idempotency_key_reused …)" and to tell central's team, naming neither cause nor fix."""
    agent, events = await agents.start(sync_settings(sections=mail_to(sink)))
    await events.wait(RecoveryCompleted)
    [order] = central.create_orders(1, prefix="twin")
    key = f"{order['id']}:received:0{await key_mark(agent)}"
    central.events[key] = {"idempotency_key": key, "order_id": order["id"], "event": "received", "at": 1.0}
    async with api_client(agent) as session:
        async with session.post("/api/v1/orders", json=order) as response:
            assert response.status == 201, await response.text()
    [mail] = await sink.wait_for(1, timeout=20)
    text = mail.get_body(("plain",)).get_content()
    assert "idempotency_key_reused" in text, text
    assert "geklont" in text and "store_id" in text and "data_dir" in text, text


async def test_the_batch_size_a_slow_spell_halved_grows_back_once_central_answers_in_time(
    db: Database, central: CentralSim, make_sender: MakeSender
) -> None:
    """Central answered too slowly for a while (a body dripping past the timeout): the sender halved its batches down
    to one event. Central is quick again and a backlog of 16 events waits: it goes in a few POSTs, the batch doubling
    after each taken whole, not in 16 POSTs of one event. Before, one slow spell left every later POST at one event
    until the agent restarted (the central probe helper: 120 POSTs for 120 events, against 2 without the spell)."""
    sender = await make_sender(batch_size=8, connect_timeout_s=0.3, read_timeout_s=0.3)
    central.drip_next(3, chunk=4, interval_s=0.2, path="events")  # each answer some 2 s: over the 0.6 s allowed
    await write(db, EVENTS[:8])
    await sender.flush()
    assert set(central.events) == set(keys(EVENTS[:8]))
    backlog = [(order, "printed", str(n)) for n, order in zip(range(11, 27), "ABC" * 6, strict=False)]
    await write(db, backlog)
    posts_before = len(central.requests)
    assert await sender.flush() == len(backlog)
    posts = len(central.requests) - posts_before
    assert set(keys(backlog)) <= set(central.events) and posts <= 5, posts


CountStyle = Literal["int", "string", "float"]


@pytest.mark.parametrize("style", ["int", "string", "float"])
async def test_an_events_answer_that_leaves_a_zero_count_out_delivers_the_batch(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    style: Literal["int", "string", "float"],
) -> None:
    """Central answers a batch it took whole with {"accepted": 2}, leaving "duplicates": 0 out (protojson, as
    grpc-gateway serialises by default, omits zero fields). The counts still account for every event sent: the batch is
    delivered, and nothing is sent again. Before stop 62 (the central probe, s05): "does not acknowledge all events",
    the batch was posted again every 5 s and the backlog never drained. So with the counts as strings (protojson
    writes int64 fields so, {"accepted": "2"}) or as whole floats (2.0): before stop 68 neither was taken, and central
    heard nothing more once a batch's worth of events was pending (the central probe, finding 4)."""
    central.omit_zero_counts = True
    central.count_style = style
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    [order] = central.create_orders(1, prefix="zero")
    async with api_client(agent) as session, session.post("/api/v1/orders", json=order) as response:
        assert response.status == 201, await response.text()
    await events.wait(JobPrinted)
    db = agent.settings.agent.db_path
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*), COUNT(delivered_at) FROM outbox"),
        lambda rows: rows[0][0] >= 2 and rows[0][0] == rows[0][1],
        timeout=10,
        what="every event delivered",
    )
    assert max(central.posted.values()) == 1 and central.duplicates == []


def events_posts(central: CentralSim) -> int:
    """Events POSTs central (or the gateway in front of it) answered so far."""
    return sum(1 for _, method, path, _ in central.requests if method == "POST" and path.endswith("/events"))


@pytest.mark.parametrize("body", [{"status": "error"}, {}, {"ok": True}], ids=["status_error", "empty", "ok_true"])
async def test_a_spell_of_200s_without_either_count_keeps_the_events_pending_and_sets_no_order_aside(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink, body: dict[str, Any]
) -> None:
    """A gateway (or a backend half up) answers the events POSTs 200 with a body that holds neither count for a spell
    while orders come in: not the contract's answer, nothing acknowledged or refused. The events stay pending and go
    once central answers well again; no order is set aside, nobody is mailed, and the log names the body. Before, a
    missing count was read as 0 ("0 of n taken"): every order of the spell was set aside for refused_retry_s (5 min)
    with a STÖRUNG mail each (the outbox73 probe, D1)."""
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(sections=mail_to(sink)))  # refused_retry_s: the default
        await events.wait(RecoveryCompleted)
        orders = central.create_orders(3, prefix="odd")
        central.fail_next(10_000, 200, body=body, path="events")
        async with api_client(agent) as api:
            for order in orders:
                assert (await post(api, order))[0] == 201
            await events.wait(JobPrinted, count=3)
            await wait_until(lambda: events_posts(central) >= 3, what="three events POSTs answered in the spell")
            central.clear_faults()
            [late] = central.create_orders(1, prefix="late")  # stored after the spell: the sender goes again at once
            assert (await post(api, late))[0] == 201
        db = agent.settings.agent.db_path
        await eventually(  # the late order's tickets too: their printed events come after (under load, after the check)
            lambda: db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'"),
            lambda rows: rows == [(0,)],
            what="every ticket printed",
        )
        await eventually(
            lambda: db_rows(db, "SELECT idempotency_key FROM outbox WHERE delivered_at IS NULL"),
            lambda rows: rows == [],
            timeout=10,
            what="every event delivered once central answered well again",
        )
    written = [k for (k,) in await db_rows(db, "SELECT idempotency_key FROM outbox ORDER BY id")]
    assert set(written) == set(central.events) and central.duplicates == []
    assert not [entry for entry in logs if entry["event"] in ("outbox_order_set_aside", "outbox_batch_split")]
    failed = [entry["error"] for entry in logs if entry["event"] == "outbox_delivery_failed"]
    assert failed and all(json.dumps(body) in error for error in failed), failed
    assert await db_rows(db, "SELECT key FROM alert_groups WHERE type = 'central_refused_events'") == []
    assert sink.messages == []


async def test_events_of_an_order_central_learns_a_moment_after_the_push_are_delivered_once_it_knows_it(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central's events side learns of an order 1.5 s after central pushed it (a read replica behind, a queue between
    its order and events services) and answers its events 422 unknown_order meanwhile. The order was stored here from
    central moments ago: "not yet", not "never". Its events wait and are offered again soon, and every one arrives,
    once and in order, once central knows the order; nothing is rejected, nobody is mailed. Before, the `received`
    and both `printed` were rejected for good within milliseconds, never sent again, and only the log said so (the
    outbox73 probe, D3)."""
    central.events_lag_s = 1.5
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(sections=mail_to(sink)))
        await events.wait(RecoveryCompleted)
        order = make_order(1, prefix="lag")  # a ticket and a receipt: received, printed, printed
        central.add_orders([order])
        async with api_client(agent) as api:
            assert (await post(api, order))[0] == 201
        await events.wait(JobPrinted, count=2)
        db = agent.settings.agent.db_path
        of_order = [k for (k,) in await db_rows(db, "SELECT idempotency_key FROM outbox ORDER BY id")]
        assert len(of_order) == 3, of_order
        await wait_until(lambda: set(of_order) <= set(central.events), 15, "every event of the order at central")
    assert await db_rows(db, "SELECT COUNT(*) FROM outbox WHERE json_extract(payload, '$._rejected') IS NOT NULL") == [
        (0,)
    ]
    assert list(central.events) == of_order and central.duplicates == []
    assert central.posted[of_order[0]] >= 2  # refused while central did not know the order yet, then taken
    assert not [entry for entry in logs if entry["event"] == "outbox_event_rejected"]
    assert await db_rows(db, "SELECT key FROM alert_groups") == [] and sink.messages == []


REJECTED = "SELECT COUNT(*) FROM outbox WHERE json_extract(payload, '$._rejected') IS NOT NULL"


async def test_events_of_orders_central_learns_only_after_a_15_minute_outage_of_its_events_side_are_all_delivered(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central's events side is down (a replica stale) for 15 minutes while central still pushes orders: it answers
    every event of them 422 unknown_order, and takes no newer order's events either. That is no evidence that central
    does not have them: past the 10 minutes they are still offered again, nothing rejected, and once the events side
    knows the orders every event arrives, once and in order; nobody is mailed. Before, 10 minutes after the push all of
    them were rejected for good and never sent again: the orders' states lost at central (the verify73b probe, 2a)."""
    central.events_lag_s = 3600.0  # until the test says it caught up
    clock = AgentClock()
    # past the 10 minutes an order is offered every refused_retry_s: half a second here
    agent, events = await agents.start(sync_settings(refused_retry_s=0.5, sections=mail_to(sink)), clock=clock)
    await events.wait(RecoveryCompleted)
    orders = central.create_orders(3, prefix="behind")
    async with api_client(agent) as api:
        for order in orders:
            assert (await post(api, order))[0] == 201
    db = agent.settings.agent.db_path
    jobs = await db_rows(db, "SELECT id FROM print_jobs")
    await events.wait(JobPrinted, count=len(jobs))
    written = [k for (k,) in await db_rows(db, "SELECT idempotency_key FROM outbox ORDER BY id")]
    firsts = [next(k for k in written if k.startswith(f"{o['id']}:")) for o in orders]
    await wait_until(lambda: all(central.posted[k] >= 2 for k in firsts), 15, "each order offered again")

    for minutes in (11, 4):  # 15 minutes of outage: past the 10 of them, then more
        tried = {k: central.posted[k] for k in firsts}
        clock.advance(minutes * 60)
        # twice: the answer to the first try did not reject it (a rejected event is never offered again)
        await wait_until(
            lambda tried=tried: all(central.posted[k] >= n + 2 for k, n in tried.items()),
            15,
            f"each order's oldest event offered twice more after {minutes} more minutes",
        )
        assert await db_rows(db, REJECTED) == [(0,)]

    central.events_side_catches_up()
    await wait_until(lambda: set(written) <= set(central.events), 15, "every event at central once it knows the orders")
    for order in orders:
        of_order = [k for k in written if k.startswith(f"{order['id']}:")]
        assert [k for k in central.events if k.startswith(f"{order['id']}:")] == of_order
    assert central.duplicates == [] and await db_rows(db, REJECTED) == [(0,)]
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
        lambda rows: rows == [(0,)],
        timeout=10,
        what="every event marked delivered",
    )
    assert await db_rows(db, "SELECT key FROM alert_groups") == [] and sink.messages == []


@pytest.mark.parametrize(
    ("newer_taken", "later_s"), [(True, 11 * 60), (False, 24 * 3600 + 60)], ids=["newer_order_taken", "a_day_later"]
)
async def test_an_order_central_still_does_not_know_minutes_after_the_push_is_rejected_for_good_and_a_person_told(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    sink: SmtpSink,
    newer_taken: bool,
    later_s: float,
) -> None:
    """Central still answers unknown_order for an order stored here from it more than 10 minutes ago while it has
    taken the events of an order stored here after it: its events side is current, so that is its refusal for good.
    The order's events are rejected (kept with the reason, never sent again) and the manager gets a mail naming the
    order and central's answer. Until then they were offered again, nothing rejected. Without such evidence (central
    took nothing newer) the order waits longer, but not for ever: a day after it was stored it is rejected so too.
    Before, the rejection was at once and only the log said so (the outbox73 probe, D3)."""
    central.events_lag_s = 3600.0  # the events side never learns of it within the test
    clock = AgentClock()
    agent, events = await agents.start(sync_settings(sections=mail_to(sink)), clock=clock)
    await events.wait(RecoveryCompleted)
    [order] = central.create_orders(1, prefix="never")
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        db = agent.settings.agent.db_path
        mark = await key_mark(db)
        received = f"{order['id']}:received:0{mark}"
        # not yet: offered again
        await wait_until(lambda: central.posted[received] >= 2, 15, f"{received} offered again")
        assert await db_rows(db, REJECTED) == [(0,)] and sink.messages == []
        if newer_taken:
            central.events_lag_s = 0.0
            [newer] = central.create_orders(1, prefix="newer")
            assert (await post(api, newer))[0] == 201
            await wait_until(lambda: f"{newer['id']}:received:0{mark}" in central.events, 15, "the newer order's event")
    # Every ticket out before the minutes pass: one still waiting when the clock moves is a backlog, rightly alarmed
    # (a CI run on a loaded machine saw that second mail)
    await eventually(
        lambda: db_rows(db, "SELECT state FROM print_jobs"), lambda rows: all(r[0] == "printed" for r in rows)
    )
    clock.advance(later_s)
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*), COUNT(delivered_at) FROM outbox"),
        lambda rows: rows[0][0] >= 2 and rows[0][0] == rows[0][1],
        timeout=15,
        what="the order's events settled",
    )
    of_order = "SELECT COUNT(*) FROM outbox WHERE order_id = ?"
    assert await db_rows(db, REJECTED) == await db_rows(db, of_order, order["id"])
    assert not any(k.startswith(order["id"]) for k in central.events)
    [mail] = await sink.wait_for(1)
    text = mail.get_body(("plain",)).get_content()
    assert order["number"] in str(mail["Subject"]) + text and "unknown_order" in text


@pytest.mark.parametrize("behind_s", [3600.0, 2 * 24 * 3600.0], ids=["an_hour", "two_days"])
async def test_events_of_an_order_taken_while_the_clock_was_behind_are_delivered_after_ntp_steps_it_right(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink, behind_s: float
) -> None:
    """A box boots after a power cut with its clock behind (fake-hwclock's last save; a dead RTC), takes orders from
    central, and NTP then steps the clock right. Central's events side knows each new order a few seconds after the
    push, as usual, and answers its events unknown_order meanwhile: that is "not yet". Every event arrives once central
    knows the order; nothing is rejected, nobody mailed. Before (the clock76 probe, D1): the order's age was read off
    the stepped wall clock against a time written on the wrong one, an hour (with orders of the hour before the cut
    taken for newer ones) or two days, so its `received` and `printed` were rejected for good at the first
    unknown_order and the manager got a STÖRUNG mail."""
    clock = AgentClock()
    agent, events = await agents.start(sync_settings(sections=mail_to(sink)), clock=clock)
    await events.wait(RecoveryCompleted)
    db = agent.settings.agent.db_path
    async with api_client(agent) as api:
        [before] = central.create_orders(1, prefix="before")  # taken, its events at central, before the cut
        assert (await post(api, before))[0] == 201
        await wait_until(lambda: any(k.startswith(before["id"]) for k in central.events), 15, "the earlier order")
        clock.step(-behind_s)  # the clock as the box boots with it
        central.events_lag_s = 3.0
        [order] = central.create_orders(1, prefix="after")
        assert (await post(api, order))[0] == 201
        clock.step(behind_s)  # NTP
        written = [
            k for (k,) in await db_rows(db, "SELECT idempotency_key FROM outbox WHERE order_id = ?", order["id"])
        ]
        await wait_until(lambda: set(written) <= set(central.events), 20, "the order's events at central")
    assert await db_rows(db, REJECTED) == [(0,)]
    assert await db_rows(db, "SELECT key FROM alert_groups") == [] and sink.messages == []
