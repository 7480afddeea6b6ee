"""Every order a recovery run lists is settled (stored, present, history, a conflict or invalid): a run never spins on
one; an order recovery classed as history takes its later changes; a cancel's reason is not the order's content."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.config import Settings
from edge.events import OrderConflicted, RecoveryCompleted
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_execute, db_rows, eventually
from tests.sync.conftest import Agents

api = api_client


def _revised(order: dict[str, Any], revision: int, *, status: str = "open", **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(order) | {"revision": revision, "status": status} | fields
    return out


async def _post(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    async with api(port) as session:
        async with session.post(path, json=body) as response:
            return response.status, await response.json()


async def _get(port: int, path: str) -> Any:
    async with api(port) as session:
        async with session.get(path) as response:
            return await response.json()


async def _run_once_more(port: int, events: Any, runs: int) -> RecoveryCompleted:
    """A manual run, which must complete within 10 s (a run that spins never would)."""
    status, _ = await _post(port, "/api/v1/recovery/runs")
    assert status == 202
    return (await events.wait(RecoveryCompleted, runs, timeout=10.0))[-1]


async def test_a_higher_cancelled_revision_of_an_order_cancelled_here_is_settled_and_the_run_completes(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """K was cancelled here at revision 2 (the cancel route during an outage: STORNO printed); central lists it
    cancelled at revision 3 (a change the box missed, then the cancel), with a new order N and an order C cancelled
    here that central lists open at a higher revision (it would reopen it). The run completes: K present (still
    revision 2, nothing printed again), C a conflict, N stored; the cursor moves, and a later outage's order is
    stored by the next run. Before: the run stayed `processing` for good, selecting K again and again (3-4 s of CPU
    in 5), N's later sibling was never stored."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    port, db = agent.port, agent.settings.agent.db_path
    k, c = make_order(1, prefix="k"), make_order(2, prefix="k")
    for order in (k, c):
        assert (await _post(port, "/api/v1/orders", order))[0] == 201
        status, body = await _post(port, f"/api/v1/orders/{order['id']}/cancel", {"revision": 2, "reason": "Gast weg"})
        assert (status, body["status"]) == (200, "cancelled")
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE state NOT IN ('printed', 'discarded')"),
        lambda r: r == [(0,)],
    )
    printed = len(printers["kitchen"].printed)
    n = make_order(3, prefix="k")
    central.add_orders([_revised(k, 3, status="cancelled", cancel_reason="Gast weg"), _revised(c, 3), n])
    cursor = (await _get(port, "/api/v1/recovery/status"))["cursor"]
    completed = await _run_once_more(port, events, 2)
    assert (completed.counts["present"], completed.counts["conflict"], completed.counts["stored"]) == (1, 1, 1)
    assert await db_rows(db, "SELECT id, revision, status FROM orders ORDER BY id") == [
        ("k_000001", 2, "cancelled"),
        ("k_000002", 2, "cancelled"),
        ("k_000003", 1, "open"),
    ]
    run = await _get(port, f"/api/v1/recovery/runs/{completed.run_id}")
    assert run["state"] == "completed" and [x["order_id"] for x in run["conflicts"]] == ["k_000002"]
    assert (await _get(port, "/api/v1/recovery/status"))["cursor"] not in (cursor, "")
    await printers["kitchen"].wait_for_printed(printed + 1)  # N's ticket
    await asyncio.sleep(0.3)
    assert len(printers["kitchen"].printed) == printed + 1  # nothing for K or C
    m = make_order(4, prefix="k")
    central.add_orders([m])
    started = time.monotonic()
    completed = await _run_once_more(port, events, 3)
    assert completed.counts["stored"] == 1 and time.monotonic() - started < 5
    assert await db_rows(db, "SELECT revision FROM orders WHERE id = 'k_000004'") == [(1,)]


async def test_an_order_recovery_classed_as_history_takes_its_later_changes_and_its_cancel(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """A new box: central lists an order created and due 3 days ago, changed since the box was installed (revision
    2): history, nothing printed (a pre-order not yet due is not history: test_history.py). Its retry (revision 2
    again) is a duplicate. The next change comes by push (revision 3: 8 pizzas, an allergy note): 201 stored, as a
    push of an old order it never saw, its ticket printed or held by its age; the cancel at revision 4 cancels it.
    Another history order's cancel is kept for it (202). Before: revision 3 was answered 200 stale and nothing
    printed, the cancel 200 stale too: the kitchen never heard of either. A later run listing a history order at a
    higher revision stores it (before: present, dropped)."""
    now = datetime.now(UTC).replace(microsecond=0)
    old = make_order(1, prefix="h", created_at=now - timedelta(days=3))
    other = make_order(2, prefix="h", created_at=now - timedelta(days=3))
    third = make_order(3, prefix="h", created_at=now - timedelta(days=3))
    await central.set_up(False)
    agent, events = await agents.start(sync_settings())
    central.add_orders([_revised(old, 2), other, third])
    await central.set_up(True)
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["history"], completed.counts["stored"]) == (3, 0)
    port, db = agent.port, agent.settings.agent.db_path
    status, body = await _post(port, "/api/v1/orders", _revised(old, 2))
    assert (status, body["status"]) == (200, "duplicate")
    changed = _revised(old, 3)
    changed["items"][0]["qty"] = 8
    changed["items"][1]["note"] = "ALLERGIE: Nüsse"
    status, body = await _post(port, "/api/v1/orders", changed)
    assert (status, body["status"], body["revision"]) == (201, "stored", 3), body
    assert await db_rows(db, "SELECT revision, status, source FROM orders") == [(3, "open", "push")]
    jobs = await db_rows(db, "SELECT kind, state FROM print_jobs WHERE order_id = 'h_000001' ORDER BY id")
    assert jobs and all(state in ("queued", "printing", "printed", "held") for _, state in jobs), jobs
    status, body = await _post(port, "/api/v1/orders/h_000001/cancel", {"revision": 4, "reason": "Feier abgesagt"})
    assert (status, body["status"], body["revision"]) == (200, "cancelled", 4), body
    assert await db_rows(db, "SELECT revision, status FROM orders WHERE id = 'h_000001'") == [(4, "cancelled")]
    status, body = await _post(port, "/api/v1/orders/h_000002/cancel", {"revision": 2})
    assert (status, body["status"]) == (202, "cancel_pending"), body
    central.add_orders([_revised(third, 2)])  # changed at central since: the next run stores it, as a push would
    completed = await _run_once_more(port, events, 2)
    assert (completed.counts["stored"], completed.counts["history"]) == (1, 0), completed.counts
    assert await db_rows(db, "SELECT revision, source FROM orders WHERE id = 'h_000003'") == [(2, "recovery")]


async def test_a_cancel_listed_with_other_words_for_its_reason_is_present_not_a_conflict(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """The cancel route cancelled C at revision 2 with "Gast gegangen" and D with no reason; central lists both
    cancelled at revision 2 in its own words. Both are present: no conflict, no alert; C's STORNO keeps the reason the
    box got. Another content at that revision is still a conflict. Before: C and D were conflicts too, an
    OrderConflicted (an alert mail) for each."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    port = agent.port
    c, d, e = make_order(1, prefix="w"), make_order(2, prefix="w"), make_order(3, prefix="w")
    for n, (order, reason) in enumerate(((c, {"reason": "Gast gegangen"}), (d, {}), (e, {}))):
        assert (await _post(port, "/api/v1/orders", order))[0] == 201
        await printers["kitchen"].wait_for_printed(2 * n + 1)  # its ticket on paper: the cancel prints a STORNO
        status, _ = await _post(port, f"/api/v1/orders/{order['id']}/cancel", {"revision": 2, **reason})
        assert status == 200
    central.add_orders(
        [
            _revised(c, 2, status="cancelled", cancel_reason="Customer cancelled"),
            _revised(d, 2, status="cancelled", cancel_reason="cancelled at POS"),
            _revised(e, 2, status="cancelled", number="A-9999"),  # another order at that revision: a conflict
        ]
    )
    completed = await _run_once_more(port, events, 2)
    assert (completed.counts["present"], completed.counts["conflict"]) == (2, 1), completed.counts
    assert [x.order_id for x in events.of(OrderConflicted)] == ["w_000003"]
    storno = [
        decode(b).text
        for b in await printers["kitchen"].wait_for_printed(6)
        if "STORNO" in decode(b).text and "A-1001" in decode(b).text
    ]
    assert storno and "Gast gegangen" in storno[0] and "Customer" not in storno[0]


async def test_a_run_left_selecting_an_order_it_cannot_store_completes_when_resumed(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A box an earlier version left with a run in `processing` whose missing order is a higher cancelled revision
    of an order cancelled here (validation then counted it missing): resumed at the next start, the run settles the
    order as present and completes. Before: it selected the order again and again, for good, after every restart."""
    settings = sync_settings()
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    port = agent.port
    k = make_order(1, prefix="k")
    assert (await _post(port, "/api/v1/orders", k))[0] == 201
    assert (await _post(port, "/api/v1/orders/k_000001/cancel", {"revision": 2}))[0] == 200
    await agents.stop(agent)
    db = settings.agent.db_path
    await db_execute(
        db,
        "INSERT INTO recovery_runs(id, trigger, state, created_at, started_at, phases) VALUES (7, 'manual',"
        ' \'processing\', 1.0, 1.0, \'[{"phase": "processing", "started_at": 1.0, "finished_at": null}]\')',
    )
    central.add_orders([_revised(k, 3, status="cancelled")])  # what the stuck run had listed; a resumed run lists again
    listed = json.dumps(_revised(k, 3, status="cancelled"))
    await db_execute(
        db,
        "INSERT INTO recovery_items(run_id, order_id, class, payload, created_ts) VALUES (7, 'k_000001', 'missing', ?,"
        " 1.0)",
        listed,
    )
    agent, events = await agents.start(settings)
    [completed] = await events.wait(RecoveryCompleted, timeout=10.0, where=lambda e: e.run_id == 7)
    assert completed.counts["present"] == 1 and completed.counts["missing"] == 0
    assert await db_rows(db, "SELECT revision, status FROM orders") == [(2, "cancelled")]


async def test_a_run_that_brings_changes_and_cancels_says_so_not_no_missed_orders(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """Three orders pushed and printed; while the line is down central changes two and cancels one, and takes a new
    one. The run that follows prints the two changes, the STORNO and the new order, and its record says so: "1 order
    recovered, 2 changed, 1 cancelled". Before it said "1 order recovered" (for the changes and cancels alone: "No
    missed orders", the changes probe), the run's counts had no word for a revision of an order the box had."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    port = agent.port
    pushed = [make_order(n, prefix="p", print_receipt=False) for n in (1, 2, 3)]
    for order in pushed:
        assert (await _post(port, "/api/v1/orders", order))[0] == 201
    await printers["kitchen"].wait_for_printed(3)
    more = [_revised(pushed[0], 2), _revised(pushed[1], 2), _revised(pushed[2], 2, status="cancelled")]
    for order in more[:2]:
        order["items"][0]["qty"] += 1
    central.add_orders([*more, make_order(4, prefix="p", print_receipt=False)])
    completed = await _run_once_more(port, events, 2)
    assert (completed.counts["stored"], completed.counts["changed"], completed.counts["cancelled"]) == (1, 2, 1), (
        completed.counts
    )
    tickets = [decode(t).text for t in await printers["kitchen"].wait_for_printed(7)]
    assert sum("ÄNDERUNG" in t for t in tickets) == 2 and sum("STORNO" in t for t in tickets) == 1, tickets
    status = await _get(port, "/api/v1/status")
    assert status["recovery_text"] == "1 order recovered, 2 changed, 1 cancelled", status["recovery_text"]


async def test_a_change_to_an_order_an_earlier_run_recovered_is_counted_changed_not_recovered(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """An order the box missed is stored by one run; central changes it (revision 2) and cancels another such order,
    and the next run brings both: its record says "1 changed, 1 cancelled", the kitchen gets the ÄNDERUNG and the
    STORNO, and /metrics counts two orders received by recovery (not four). Before, the run's counts took the orders'
    first source for what the run did: "2 orders recovered", as if new orders had come."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    port = agent.port
    missed = [make_order(n, prefix="m", print_receipt=False) for n in (1, 2)]
    central.add_orders(missed)
    first = await _run_once_more(port, events, 2)
    assert (first.counts["stored"], first.counts["changed"], first.counts["cancelled"]) == (2, 0, 0), first.counts
    await printers["kitchen"].wait_for_printed(2)
    changed, cancelled = _revised(missed[0], 2), _revised(missed[1], 2, status="cancelled")
    changed["items"][0]["qty"] += 1
    central.add_orders([changed, cancelled])
    completed = await _run_once_more(port, events, 3)
    tickets = [decode(t).text for t in await printers["kitchen"].wait_for_printed(4)]
    assert sum("ÄNDERUNG" in t for t in tickets) == 1 and sum("STORNO" in t for t in tickets) == 1, tickets
    assert await db_rows(agent, "SELECT id, revision, status, source FROM orders ORDER BY id") == [
        ("m_000001", 2, "open", "recovery"),
        ("m_000002", 2, "cancelled", "recovery"),
    ]
    async with api(port) as session, session.get("/metrics") as response:
        metrics = await response.text()
    assert 'edge_orders_received_total{source="recovery"} 2.0' in metrics
    status = await _get(port, "/api/v1/status")
    assert status["recovery_text"] == "1 changed, 1 cancelled", status["recovery_text"]
    assert (completed.counts["stored"], completed.counts["changed"], completed.counts["cancelled"]) == (0, 1, 1), (
        completed.counts
    )
